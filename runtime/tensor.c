/* Tensors over refcounted storages: creation, views, copies between devices and dtypes, fills
 * and random draws. Element loops live in tensor_cpu.c and tensor_cuda.cu. */
#include "filo/tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "element.h"
#include "error.h"
#include "tensor_kernels.h"

struct filo_storage {
    void *data;
    size_t nbytes;
    filo_device device;
    int refcount;
};

/* Largest tensor accepted: 2^48 bytes is far beyond any device and keeps size arithmetic safe. */
#define MAX_TENSOR_BYTES ((int64_t)1 << 48)

static void storage_release(filo_storage *s)
{
    if (!s || __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (s->data)
        filo_device_free(s->device, s->data);
    free(s);
}

/* Tests set FILO_TENSOR_POISON (1 for 0xFF, or a byte value) so that every new tensor starts
 * as garbage (NaN in every float dtype for 0xFF): an element an op forgets to write shows. */
static filo_status poison(filo_device device, void *data, size_t nbytes)
{
    const char *env = getenv("FILO_TENSOR_POISON");
    if (!env || !*env || strcmp(env, "0") == 0 || nbytes == 0)
        return FILO_OK;
    long byte = strcmp(env, "1") == 0 ? 0xFF : strtol(env, NULL, 0);
    if (device.type == FILO_DEVICE_CPU) {
        memset(data, (int)(byte & 0xFF), nbytes);
        return FILO_OK;
    }
    filo_stream *stream;
    FILO_TRY(filo_stream_current(device, &stream));
    return filo_cuda_memset_async(device.index, data, (int)(byte & 0xFF), nbytes, stream->native);
}

static filo_status storage_create(filo_device device, size_t nbytes, filo_storage **out)
{
    filo_storage *s = calloc(1, sizeof *s);
    if (!s)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for a storage header");
    s->device = device;
    s->nbytes = nbytes;
    s->refcount = 1;
    filo_status st = filo_device_malloc(device, nbytes, NULL, &s->data);
    if (st == FILO_OK)
        st = poison(device, s->data, nbytes);
    if (st != FILO_OK) {
        if (s->data)
            filo_device_free(device, s->data);
        free(s);
        return filo_error_wrap(st, "filo_tensor_empty");
    }
    *out = s;
    return FILO_OK;
}

const char *filo_dims_format(int ndim, const int64_t *dims, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, i ? ", %lld" : "%lld", (long long)dims[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
    return buf;
}

const char *filo_tensor_describe(const filo_tensor *t, char *buf, size_t size)
{
    if (!t) {
        snprintf(buf, size, "(null tensor)");
        return buf;
    }
    char shape[160], dev[32];
    snprintf(buf, size, "%s%s %s", filo_dtype_name(t->dtype), filo_dims_format(t->ndim, t->shape, shape, sizeof shape),
             filo_device_format(t->device, dev, sizeof dev));
    return buf;
}

static filo_status check_tensor(const filo_tensor *t, const char *where)
{
    if (!t)
        return filo_error_set(FILO_ERR_INVALID_ARG, where, "tensor is NULL");
    return FILO_OK;
}

static filo_status check_dim(const filo_tensor *t, int *dim, int extra, const char *where)
{
    int n = t->ndim + extra;
    int d = *dim < 0 ? *dim + n : *dim;
    if (d < 0 || d >= n || n == 0) {
        char desc[200];
        return filo_error_set(FILO_ERR_SHAPE, where, "dim %d out of range for %s", *dim,
                              filo_tensor_describe(t, desc, sizeof desc));
    }
    *dim = d;
    return FILO_OK;
}

/* Validates a shape and returns its element count (products checked for overflow). */
static filo_status shape_numel(int ndim, const int64_t *shape, filo_dtype dtype, int64_t *numel, const char *where)
{
    if (ndim < 0 || ndim > FILO_MAX_DIMS)
        return filo_error_set(FILO_ERR_SHAPE, where, "ndim %d outside 0..%d", ndim, FILO_MAX_DIMS);
    if (ndim > 0 && !shape)
        return filo_error_set(FILO_ERR_INVALID_ARG, where, "shape is NULL for ndim %d", ndim);
    if (!filo_dtype_valid(dtype))
        return filo_error_set(FILO_ERR_DTYPE, where, "invalid dtype %d", (int)dtype);
    int64_t n = 1, limit = MAX_TENSOR_BYTES / (int64_t)filo_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        char buf[160];
        if (shape[i] < 0)
            return filo_error_set(FILO_ERR_SHAPE, where, "negative size in shape %s", filo_dims_format(ndim, shape, buf, sizeof buf));
        if (shape[i] > 0 && n > limit / shape[i])
            return filo_error_set(FILO_ERR_OOM, where, "shape %s of %s is absurdly large (over 2^48 bytes)",
                                  filo_dims_format(ndim, shape, buf, sizeof buf), filo_dtype_name(dtype));
        n *= shape[i];
    }
    *numel = n;
    return FILO_OK;
}

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

static filo_status tensor_header(const filo_tensor *like, filo_tensor **out)
{
    filo_tensor *t = malloc(sizeof *t);
    if (!t)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for a tensor header");
    *t = *like;
    if (t->storage)
        __atomic_add_fetch(&t->storage->refcount, 1, __ATOMIC_RELAXED);
    *out = t;
    return FILO_OK;
}

filo_status filo_tensor_empty(filo_device device, filo_dtype dtype, int ndim, const int64_t *shape, filo_tensor **out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    int64_t numel = 0;
    FILO_TRY(shape_numel(ndim, shape, dtype, &numel, __func__));
    FILO_TRY(filo_device_check(device));
    filo_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for a tensor header");
    t->dtype = dtype;
    t->device = device;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    contiguous_strides(ndim, t->shape, t->strides);
    filo_status s = storage_create(device, (size_t)numel * filo_dtype_size(dtype), &t->storage);
    if (s != FILO_OK) {
        free(t);
        return s;
    }
    *out = t;
    return FILO_OK;
}

filo_status filo_tensor_empty_like(const filo_tensor *t, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    return filo_tensor_empty(t->device, t->dtype, t->ndim, t->shape, out);
}

void filo_tensor_free(filo_tensor *t)
{
    if (!t)
        return;
    storage_release(t->storage);
    free(t);
}

int64_t filo_tensor_numel(const filo_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t filo_tensor_nbytes(const filo_tensor *t) { return (size_t)filo_tensor_numel(t) * filo_dtype_size(t->dtype); }

int filo_tensor_is_contiguous(const filo_tensor *t)
{
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->strides[i] != expect)
            return 0;
        expect *= t->shape[i];
    }
    return 1;
}

void *filo_tensor_data(const filo_tensor *t)
{
    return (char *)t->storage->data + t->offset * (int64_t)filo_dtype_size(t->dtype);
}

filo_status filo_tensor_check_shape(const filo_tensor *t, const char *what, int ndim, const int64_t *shape)
{
    FILO_TRY(check_tensor(t, __func__));
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (same)
        return FILO_OK;
    char got[200], want[160];
    return FILO_FAIL(FILO_ERR_SHAPE, "%s must have shape %s, got %s", what ? what : "tensor",
                     filo_dims_format(ndim, shape, want, sizeof want), filo_tensor_describe(t, got, sizeof got));
}

/* ---- element loops dispatched by device ---- */

static filo_copy_desc layout_desc(const filo_tensor *dst, const filo_tensor *src)
{
    filo_copy_desc d;
    memset(&d, 0, sizeof d);
    d.ndim = dst->ndim;
    d.numel = filo_tensor_numel(dst);
    for (int i = 0; i < dst->ndim; i++) {
        d.shape[i] = dst->shape[i];
        d.dst_strides[i] = dst->strides[i];
        d.src_strides[i] = src ? src->strides[i] : 0;
    }
    d.dst = filo_tensor_data(dst);
    d.dst_dtype = dst->dtype;
    if (src) {
        d.src = filo_tensor_data(src);
        d.src_dtype = src->dtype;
    }
    filo_copy_desc_collapse(&d);
    return d;
}

static filo_status current_native(filo_device device, void **native)
{
    filo_stream *s;
    FILO_TRY(filo_stream_current(device, &s));
    *native = s->native;
    return FILO_OK;
}

/* Same-device copy with any strides and dtypes. */
static filo_status copy_same_device(filo_tensor *dst, const filo_tensor *src)
{
    filo_copy_desc d = layout_desc(dst, src);
    if (d.numel == 0)
        return FILO_OK;
    if (dst->device.type == FILO_DEVICE_CPU) {
        filo_cpu_strided_copy(&d);
        return FILO_OK;
    }
    void *stream;
    FILO_TRY(current_native(dst->device, &stream));
    if (d.dst_dtype == d.src_dtype && d.ndim <= 1 && (d.ndim == 0 || (d.dst_strides[0] == 1 && d.src_strides[0] == 1)))
        return filo_cuda_memcpy_async(dst->device.index, d.dst, d.src, (size_t)d.numel * filo_dtype_size(d.dst_dtype),
                                      FILO_COPY_D2D, stream);
    return FILO_CUDA_CALL(filo_cuda_strided_copy(&d, stream));
}

/* ---- host transfers ---- */

filo_status filo_tensor_from_host(filo_device device, filo_dtype dtype, int ndim, const int64_t *shape,
                                  const void *data, filo_tensor **out)
{
    filo_tensor *t;
    FILO_TRY(filo_tensor_empty(device, dtype, ndim, shape, &t));
    size_t bytes = filo_tensor_nbytes(t);
    if (bytes > 0 && !data) {
        filo_tensor_free(t);
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "data is NULL");
    }
    if (device.type == FILO_DEVICE_CPU) {
        if (bytes > 0)
            memcpy(filo_tensor_data(t), data, bytes);
        *out = t;
        return FILO_OK;
    }
    /* Stage through pinned memory so the copy is truly asynchronous; the staging block is
     * reused only after the copy has completed (filo_pinned_free records the stream). */
    filo_stream *stream;
    void *staging = NULL;
    filo_status s = filo_stream_current(device, &stream);
    if (s == FILO_OK && bytes > 0)
        s = filo_pinned_malloc(bytes, &staging);
    if (s == FILO_OK && bytes > 0) {
        memcpy(staging, data, bytes);
        s = filo_cuda_memcpy_async(device.index, filo_tensor_data(t), staging, bytes, FILO_COPY_H2D, stream->native);
        filo_status f = filo_pinned_free(staging, stream);
        if (s == FILO_OK)
            s = f;
    }
    if (s != FILO_OK) {
        filo_tensor_free(t);
        return s;
    }
    *out = t;
    return FILO_OK;
}

filo_status filo_tensor_to_host(const filo_tensor *t, void *dst, size_t size)
{
    FILO_TRY(check_tensor(t, __func__));
    size_t bytes = filo_tensor_nbytes(t);
    if (size < bytes) {
        char desc[200];
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "destination of %zu bytes is too small for %s (%zu bytes)", size,
                         filo_tensor_describe(t, desc, sizeof desc), bytes);
    }
    if (bytes == 0)
        return FILO_OK;
    if (bytes > 0 && !dst)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dst is NULL");
    if (t->device.type == FILO_DEVICE_CPU) {
        filo_tensor host = *t;
        contiguous_strides(t->ndim, host.shape, host.strides);
        filo_copy_desc d = layout_desc(&host, t);
        d.dst = dst;
        filo_cpu_strided_copy(&d);
        return FILO_OK;
    }
    filo_tensor *c;
    FILO_TRY(filo_tensor_contiguous(t, &c));
    filo_stream *stream;
    filo_status s = filo_stream_current(t->device, &stream);
    if (s == FILO_OK)
        s = filo_cuda_memcpy_async(t->device.index, dst, filo_tensor_data(c), bytes, FILO_COPY_D2H, stream->native);
    if (s == FILO_OK)
        s = filo_stream_synchronize(stream);
    filo_tensor_free(c);
    return s;
}

filo_status filo_tensor_to_host_as(const filo_tensor *t, filo_dtype dst_dtype, void *dst, size_t size)
{
    FILO_TRY(check_tensor(t, __func__));
    if (dst_dtype == t->dtype)
        return filo_tensor_to_host(t, dst, size);
    if (!filo_dtype_valid(dst_dtype))
        return FILO_FAIL(FILO_ERR_DTYPE, "invalid dtype %d", (int)dst_dtype);
    size_t need = (size_t)filo_tensor_numel(t) * filo_dtype_size(dst_dtype);
    if (size < need)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "destination of %zu bytes is too small (%zu needed)", size, need);
    filo_tensor *c;
    FILO_TRY(filo_tensor_empty(t->device, dst_dtype, t->ndim, t->shape, &c));
    filo_status s = copy_same_device(c, t);
    if (s == FILO_OK)
        s = filo_tensor_to_host(c, dst, size);
    filo_tensor_free(c);
    return s;
}

filo_status filo_tensor_to(const filo_tensor *t, filo_device device, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    filo_tensor *r;
    FILO_TRY(filo_tensor_empty(device, t->dtype, t->ndim, t->shape, &r));
    filo_status s = filo_tensor_copy(r, t);
    if (s != FILO_OK) {
        filo_tensor_free(r);
        return s;
    }
    *out = r;
    return FILO_OK;
}

filo_status filo_tensor_copy(filo_tensor *dst, const filo_tensor *src)
{
    FILO_TRY(check_tensor(dst, __func__));
    FILO_TRY(check_tensor(src, __func__));
    FILO_TRY(filo_tensor_check_shape(src, "copy source", dst->ndim, dst->shape));
    if (filo_device_equal(dst->device, src->device))
        return copy_same_device(dst, src);
    /* Across devices: move src's values contiguously through the host, then convert and
     * scatter on dst's device. */
    size_t bytes = filo_tensor_nbytes(src);
    void *host = malloc(bytes ? bytes : 1);
    if (!host)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory staging %zu bytes", bytes);
    filo_tensor *staged = NULL;
    filo_status s = filo_tensor_to_host(src, host, bytes);
    if (s == FILO_OK)
        s = filo_tensor_from_host(dst->device, src->dtype, src->ndim, src->shape, host, &staged);
    if (s == FILO_OK)
        s = copy_same_device(dst, staged);
    filo_tensor_free(staged);
    /* from_host has already copied into pinned staging, so the host buffer can go now. */
    free(host);
    return s;
}

/* ---- fills and draws ---- */

filo_status filo_tensor_fill(filo_tensor *t, double value)
{
    FILO_TRY(check_tensor(t, __func__));
    unsigned char pattern[8];
    if (filo_el_is_int(t->dtype) && (isnan(value) || value != floor(value))) {
        char desc[200];
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "cannot fill %s with %g", filo_tensor_describe(t, desc, sizeof desc), value);
    }
    filo_el_store_f(pattern, t->dtype, value);
    filo_copy_desc d = layout_desc(t, NULL);
    if (d.numel == 0)
        return FILO_OK;
    if (t->device.type == FILO_DEVICE_CPU) {
        filo_cpu_fill(&d, pattern);
        return FILO_OK;
    }
    void *stream;
    FILO_TRY(current_native(t->device, &stream));
    return FILO_CUDA_CALL(filo_cuda_fill(&d, pattern, stream));
}

static filo_status draw(filo_tensor *t, filo_generator *gen, filo_draw_kind kind, double a, double b, const char *where)
{
    FILO_TRY(check_tensor(t, where));
    if (!gen)
        return filo_error_set(FILO_ERR_INVALID_ARG, where, "generator is NULL");
    if (!filo_dtype_is_float(t->dtype)) {
        char desc[200];
        return filo_error_set(FILO_ERR_DTYPE, where, "random draws need a float tensor, got %s",
                              filo_tensor_describe(t, desc, sizeof desc));
    }
    filo_copy_desc d = layout_desc(t, NULL);
    /* Element order is the row-major order of the view; collapsing keeps it. */
    filo_draw_desc r = {kind, a, b, gen->seed, filo_generator_advance(gen, (uint64_t)d.numel)};
    if (d.numel == 0)
        return FILO_OK;
    if (t->device.type == FILO_DEVICE_CPU) {
        filo_cpu_draw(&d, &r);
        return FILO_OK;
    }
    void *stream;
    FILO_TRY(current_native(t->device, &stream));
    return FILO_CUDA_CALL(filo_cuda_draw(&d, &r, stream));
}

filo_status filo_tensor_uniform(filo_tensor *t, filo_generator *gen, double low, double high)
{
    if (!(low <= high) || !isfinite(low) || !isfinite(high))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "uniform range [%g, %g) is invalid", low, high);
    return draw(t, gen, FILO_DRAW_UNIFORM, low, high, __func__);
}

filo_status filo_tensor_normal(filo_tensor *t, filo_generator *gen, double mean, double std)
{
    if (!(std >= 0) || !isfinite(mean) || !isfinite(std))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "normal(mean %g, std %g) is invalid", mean, std);
    return draw(t, gen, FILO_DRAW_NORMAL, mean, std, __func__);
}

filo_status filo_tensor_zeros(filo_device device, filo_dtype dtype, int ndim, const int64_t *shape, filo_tensor **out)
{
    return filo_tensor_full(device, dtype, ndim, shape, 0.0, out);
}

filo_status filo_tensor_full(filo_device device, filo_dtype dtype, int ndim, const int64_t *shape, double value,
                             filo_tensor **out)
{
    filo_tensor *t;
    FILO_TRY(filo_tensor_empty(device, dtype, ndim, shape, &t));
    filo_status s = filo_tensor_fill(t, value);
    if (s != FILO_OK) {
        filo_tensor_free(t);
        return s;
    }
    *out = t;
    return FILO_OK;
}

/* ---- views ---- */

filo_status filo_tensor_record_stream(const filo_tensor *t, filo_stream *stream)
{
    FILO_TRY(check_tensor(t, __func__));
    if (t->device.type == FILO_DEVICE_CPU || !t->storage->data)
        return FILO_OK;
    if (!stream || !filo_device_equal(filo_stream_device(stream), t->device))
        return FILO_FAIL(FILO_ERR_DEVICE, "the stream is not on the tensor's device");
    return filo_device_record_stream(t->device, t->storage->data, stream);
}

filo_status filo_tensor_alias(const filo_tensor *t, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    return tensor_header(t, out);
}

filo_status filo_tensor_contiguous(const filo_tensor *t, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    if (filo_tensor_is_contiguous(t))
        return tensor_header(t, out);
    filo_tensor *c;
    FILO_TRY(filo_tensor_empty_like(t, &c));
    filo_status s = copy_same_device(c, t);
    if (s != FILO_OK) {
        filo_tensor_free(c);
        return s;
    }
    *out = c;
    return FILO_OK;
}

/* Resolves one -1 in `shape` against numel; checks the element counts agree. */
static filo_status infer_shape(const filo_tensor *t, int ndim, const int64_t *shape, int64_t *resolved, const char *where)
{
    if (ndim < 0 || ndim > FILO_MAX_DIMS || (ndim > 0 && !shape))
        return filo_error_set(FILO_ERR_SHAPE, where, "ndim %d outside 0..%d (or shape NULL)", ndim, FILO_MAX_DIMS);
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == -1 && infer < 0) {
            infer = i;
            resolved[i] = 1;
            continue;
        }
        if (shape[i] < 0) {
            char buf[160];
            return filo_error_set(FILO_ERR_SHAPE, where, "invalid size %lld in shape %s", (long long)shape[i],
                                  filo_dims_format(ndim, shape, buf, sizeof buf));
        }
        resolved[i] = shape[i];
        known *= shape[i];
    }
    int64_t numel = filo_tensor_numel(t);
    if (infer >= 0)
        resolved[infer] = known ? numel / known : 0;
    int64_t total = 1;
    for (int i = 0; i < ndim; i++)
        total *= resolved[i];
    if (total != numel || (infer >= 0 && known == 0)) {
        char buf[160], desc[200];
        return filo_error_set(FILO_ERR_SHAPE, where, "shape %s does not fit %s (%lld elements)",
                              filo_dims_format(ndim, shape, buf, sizeof buf), filo_tensor_describe(t, desc, sizeof desc),
                              (long long)numel);
    }
    return FILO_OK;
}

/* Strides for viewing t with new_shape without a copy, if they exist. The old dims split into
 * chunks that are each contiguous in memory; every chunk must map onto a run of new dims with
 * the same element count, which then get strides within that chunk. Returns 0 when impossible. */
static int view_strides(const filo_tensor *t, int ndim, const int64_t *new_shape, int64_t *new_strides)
{
    if (filo_tensor_numel(t) == 0 || filo_tensor_is_contiguous(t)) {
        contiguous_strides(ndim, new_shape, new_strides);
        return 1;
    }
    int view_d = ndim - 1;
    int64_t chunk_stride = t->strides[t->ndim - 1];
    int64_t old_count = 1, new_count = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        old_count *= t->shape[d];
        int chunk_ends = d == 0 || (t->shape[d - 1] != 1 && t->strides[d - 1] != old_count * chunk_stride);
        if (!chunk_ends)
            continue;
        while (view_d >= 0 && (new_count < old_count || new_shape[view_d] == 1)) {
            new_strides[view_d] = new_count * chunk_stride;
            new_count *= new_shape[view_d];
            view_d--;
        }
        if (new_count != old_count)
            return 0;
        if (d > 0) {
            chunk_stride = t->strides[d - 1];
            old_count = 1;
            new_count = 1;
        }
    }
    return view_d == -1;
}

filo_status filo_tensor_view(const filo_tensor *t, int ndim, const int64_t *shape, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    int64_t resolved[FILO_MAX_DIMS], strides[FILO_MAX_DIMS];
    FILO_TRY(infer_shape(t, ndim, shape, resolved, __func__));
    if (!view_strides(t, ndim, resolved, strides)) {
        char buf[160], desc[200];
        return FILO_FAIL(FILO_ERR_SHAPE, "cannot view %s as %s without a copy (its strides do not allow it): use reshape",
                         filo_tensor_describe(t, desc, sizeof desc), filo_dims_format(ndim, resolved, buf, sizeof buf));
    }
    filo_tensor v = *t;
    v.ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        v.shape[i] = resolved[i];
        v.strides[i] = strides[i];
    }
    return tensor_header(&v, out);
}

filo_status filo_tensor_reshape(const filo_tensor *t, int ndim, const int64_t *shape, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    int64_t resolved[FILO_MAX_DIMS], strides[FILO_MAX_DIMS];
    FILO_TRY(infer_shape(t, ndim, shape, resolved, __func__));
    if (view_strides(t, ndim, resolved, strides))
        return filo_tensor_view(t, ndim, resolved, out);
    filo_tensor *c;
    FILO_TRY(filo_tensor_contiguous(t, &c));
    filo_status s = filo_tensor_view(c, ndim, resolved, out);
    filo_tensor_free(c);
    return s;
}

filo_status filo_tensor_transpose(const filo_tensor *t, int dim0, int dim1, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    FILO_TRY(check_dim(t, &dim0, 0, __func__));
    FILO_TRY(check_dim(t, &dim1, 0, __func__));
    filo_tensor v = *t;
    v.shape[dim0] = t->shape[dim1];
    v.shape[dim1] = t->shape[dim0];
    v.strides[dim0] = t->strides[dim1];
    v.strides[dim1] = t->strides[dim0];
    return tensor_header(&v, out);
}

filo_status filo_tensor_permute(const filo_tensor *t, const int *dims, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    if (!dims && t->ndim > 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dims is NULL");
    int seen[FILO_MAX_DIMS] = {0};
    filo_tensor v = *t;
    for (int i = 0; i < t->ndim; i++) {
        int d = dims[i];
        FILO_TRY(check_dim(t, &d, 0, __func__));
        if (seen[d]) {
            char desc[200];
            return FILO_FAIL(FILO_ERR_SHAPE, "dims repeat %d: not a permutation of the %d dims of %s", dims[i], t->ndim,
                             filo_tensor_describe(t, desc, sizeof desc));
        }
        seen[d] = 1;
        v.shape[i] = t->shape[d];
        v.strides[i] = t->strides[d];
    }
    return tensor_header(&v, out);
}

filo_status filo_tensor_slice(const filo_tensor *t, int dim, int64_t start, int64_t end, int64_t step, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    FILO_TRY(check_dim(t, &dim, 0, __func__));
    if (step < 1)
        return FILO_FAIL(FILO_ERR_SHAPE, "slice step must be >= 1, got %lld", (long long)step);
    int64_t n = t->shape[dim];
    if (start < 0)
        start += n;
    if (end < 0)
        end += n;
    if (start < 0 || start > n || end < start || end > n) {
        char desc[200];
        return FILO_FAIL(FILO_ERR_SHAPE, "slice [%lld:%lld] out of range for dim %d of %s", (long long)start,
                         (long long)end, dim, filo_tensor_describe(t, desc, sizeof desc));
    }
    filo_tensor v = *t;
    v.offset += start * t->strides[dim];
    v.shape[dim] = (end - start + step - 1) / step;
    v.strides[dim] = t->strides[dim] * step;
    return tensor_header(&v, out);
}

filo_status filo_tensor_expand(const filo_tensor *t, int ndim, const int64_t *shape, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    if (ndim < t->ndim || ndim > FILO_MAX_DIMS || (ndim > 0 && !shape))
        return FILO_FAIL(FILO_ERR_SHAPE, "cannot expand %d dims to %d", t->ndim, ndim);
    filo_tensor v = *t;
    v.ndim = ndim;
    int lead = ndim - t->ndim;
    for (int i = ndim - 1; i >= 0; i--) {
        int j = i - lead;
        int64_t want = shape[i];
        if (j >= 0 && want == -1)
            want = t->shape[j];
        if (j >= 0 && t->shape[j] == want) {
            v.shape[i] = want;
            v.strides[i] = t->strides[j];
        } else if ((j < 0 || t->shape[j] == 1) && want >= 0) {
            v.shape[i] = want;
            v.strides[i] = 0;
        } else {
            char buf[160], desc[200];
            return FILO_FAIL(FILO_ERR_SHAPE, "cannot broadcast %s to %s", filo_tensor_describe(t, desc, sizeof desc),
                             filo_dims_format(ndim, shape, buf, sizeof buf));
        }
    }
    return tensor_header(&v, out);
}

filo_status filo_tensor_squeeze(const filo_tensor *t, int dim, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    FILO_TRY(check_dim(t, &dim, 0, __func__));
    if (t->shape[dim] != 1) {
        char desc[200];
        return FILO_FAIL(FILO_ERR_SHAPE, "cannot squeeze dim %d of size %lld in %s", dim, (long long)t->shape[dim],
                         filo_tensor_describe(t, desc, sizeof desc));
    }
    filo_tensor v = *t;
    v.ndim--;
    for (int i = dim; i < v.ndim; i++) {
        v.shape[i] = t->shape[i + 1];
        v.strides[i] = t->strides[i + 1];
    }
    return tensor_header(&v, out);
}

filo_status filo_tensor_unsqueeze(const filo_tensor *t, int dim, filo_tensor **out)
{
    FILO_TRY(check_tensor(t, __func__));
    if (t->ndim >= FILO_MAX_DIMS)
        return FILO_FAIL(FILO_ERR_SHAPE, "cannot unsqueeze a tensor that already has %d dims", FILO_MAX_DIMS);
    FILO_TRY(check_dim(t, &dim, 1, __func__));
    filo_tensor v = *t;
    v.ndim++;
    for (int i = v.ndim - 1; i > dim; i--) {
        v.shape[i] = t->shape[i - 1];
        v.strides[i] = t->strides[i - 1];
    }
    v.shape[dim] = 1;
    v.strides[dim] = dim < t->ndim ? t->strides[dim] * t->shape[dim] : 1;
    return tensor_header(&v, out);
}
