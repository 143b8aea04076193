/* Indexing ops (include/filo/indexing.h): argument checks, index range checks on the CPU,
 * contiguous inputs, output and scratch allocation, and the dispatch to kernels/cpu/indexing.c
 * or kernels/cuda/indexing.cu by the inputs' device. */
#include "filo/indexing.h"

#include <string.h>

#include "backend.h"
#include "element.h"
#include "error.h"
#include "indexing_backend.h"

#define DESC_LEN 200

static int is_float(filo_dtype t) { return t == FILO_F32 || t == FILO_F64 || t == FILO_BF16 || t == FILO_F16; }

static filo_status check_index(const char *op, const char *what, const filo_tensor *idx, const filo_tensor *x)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (!idx)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", what);
    if (idx->dtype != FILO_I64 && idx->dtype != FILO_I32)
        return filo_error_set(FILO_ERR_DTYPE, op, "%s must be i64 or i32, got %s", what,
                              filo_tensor_describe(idx, a, sizeof a));
    if (!filo_device_equal(idx->device, x->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "%s %s is not on the device of %s", what,
                              filo_tensor_describe(idx, a, sizeof a), filo_tensor_describe(x, b, sizeof b));
    return FILO_OK;
}

static filo_status check_float(const char *op, const char *what, const filo_tensor *t)
{
    char a[DESC_LEN];
    if (!t)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", what);
    if (!is_float(t->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "%s must be f32, f64, bf16 or f16, got %s", what,
                              filo_tensor_describe(t, a, sizeof a));
    return FILO_OK;
}

static filo_status norm_dim(const char *op, const filo_tensor *x, int dim, int *out)
{
    char desc[DESC_LEN];
    if (x->ndim < 1 || dim < -x->ndim || dim >= x->ndim)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dim %d is out of range for %s", dim,
                              filo_tensor_describe(x, desc, sizeof desc));
    *out = dim < 0 ? dim + x->ndim : dim;
    return FILO_OK;
}

/* CPU only: every value of the contiguous index c (the values of `orig`) in [0, bound). */
static filo_status check_values(const char *op, const filo_tensor *c, const filo_tensor *orig, int64_t bound)
{
    if (c->device.type != FILO_DEVICE_CPU)
        return FILO_OK;
    const void *data = filo_tensor_data(c);
    int64_t n = filo_tensor_numel(c);
    for (int64_t p = 0; p < n; p++) {
        int64_t v = c->dtype == FILO_I64 ? ((const int64_t *)data)[p] : ((const int32_t *)data)[p];
        if (v >= 0 && v < bound)
            continue;
        int64_t coord[FILO_MAX_DIMS], rest = p;
        for (int k = orig->ndim - 1; k >= 0; k--) {
            coord[k] = orig->shape[k] ? rest % orig->shape[k] : 0;
            rest = orig->shape[k] ? rest / orig->shape[k] : 0;
        }
        char pos[DESC_LEN], desc[DESC_LEN];
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "index %lld at position %s of %s is outside [0, %lld)",
                              (long long)v, filo_dims_format(orig->ndim, coord, pos, sizeof pos),
                              filo_tensor_describe(orig, desc, sizeof desc), (long long)bound);
    }
    return FILO_OK;
}

/* Up to 3 contiguous inputs and the outputs/scratch, released together. */
typedef struct tensors {
    filo_tensor *c[3];
    filo_tensor *out;
    filo_tensor *scratch;
} tensors;

static void tensors_free(tensors *t, int keep_out)
{
    for (int i = 0; i < 3; i++)
        filo_tensor_free(t->c[i]);
    filo_tensor_free(t->scratch);
    if (!keep_out)
        filo_tensor_free(t->out);
}

static filo_status finish(const char *op, tensors *t, filo_status st, filo_tensor **out)
{
    tensors_free(t, st == FILO_OK);
    if (st != FILO_OK)
        return filo_error_wrap(st, op);
    *out = t->out;
    return FILO_OK;
}

/* ---- index_select, embedding ---- */

static filo_status run_index_select(filo_device dev, const filo_index_select_desc *d)
{
    if (d->outer * d->K * d->inner == 0)
        return FILO_OK;
    if (dev.type == FILO_DEVICE_CPU)
        return filo_cpu_index_select(d);
    void *stream = NULL;
    FILO_TRY(filo_stream_current_native(dev, &stream));
    return FILO_CUDA_CALL(filo_cuda_index_select(d, stream));
}

filo_status filo_index_select(const filo_tensor *x, int dim, const filo_tensor *index, filo_tensor **out)
{
    const char *op = "filo_index_select";
    char a[DESC_LEN];
    if (!x || !out)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", !x ? "x" : "out");
    int d = 0; /* set by norm_dim; initialized for -O3's maybe-uninitialized */
    FILO_TRY(norm_dim(op, x, dim, &d));
    FILO_TRY(check_index(op, "index", index, x));
    if (index->ndim != 1)
        return filo_error_set(FILO_ERR_SHAPE, op, "index must be 1-D, got %s", filo_tensor_describe(index, a, sizeof a));
    tensors t = {{NULL}, NULL, NULL};
    int64_t shape[FILO_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[d] = index->shape[0];
    filo_status st = filo_tensor_contiguous(index, &t.c[0]);
    if (st == FILO_OK)
        st = check_values(op, t.c[0], index, x->shape[d]);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(x, &t.c[1]);
    if (st == FILO_OK)
        st = filo_tensor_empty(x->device, x->dtype, x->ndim, shape, &t.out);
    if (st == FILO_OK) {
        filo_index_select_desc sd = {.outer = 1, .N = x->shape[d], .K = shape[d], .inner = 1,
                                     .elsize = filo_dtype_size(x->dtype), .index = filo_tensor_data(t.c[0]),
                                     .index_is64 = index->dtype == FILO_I64, .src = filo_tensor_data(t.c[1]),
                                     .out = filo_tensor_data(t.out)};
        for (int k = 0; k < d; k++)
            sd.outer *= x->shape[k];
        for (int k = d + 1; k < x->ndim; k++)
            sd.inner *= x->shape[k];
        st = run_index_select(x->device, &sd);
    }
    return finish(op, &t, st, out);
}

filo_status filo_embedding(const filo_tensor *weight, const filo_tensor *ids, filo_tensor **out)
{
    const char *op = "filo_embedding";
    char a[DESC_LEN];
    if (!weight || !out)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", !weight ? "weight" : "out");
    if (weight->ndim != 2)
        return filo_error_set(FILO_ERR_SHAPE, op, "weight must be [V, D], got %s",
                              filo_tensor_describe(weight, a, sizeof a));
    FILO_TRY(check_index(op, "ids", ids, weight));
    if (ids->ndim >= FILO_MAX_DIMS)
        return filo_error_set(FILO_ERR_SHAPE, op, "ids %s has too many dims (at most %d)",
                              filo_tensor_describe(ids, a, sizeof a), FILO_MAX_DIMS - 1);
    tensors t = {{NULL}, NULL, NULL};
    int64_t shape[FILO_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
    shape[ids->ndim] = weight->shape[1];
    filo_status st = filo_tensor_contiguous(ids, &t.c[0]);
    if (st == FILO_OK)
        st = check_values(op, t.c[0], ids, weight->shape[0]);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(weight, &t.c[1]);
    if (st == FILO_OK)
        st = filo_tensor_empty(weight->device, weight->dtype, ids->ndim + 1, shape, &t.out);
    if (st == FILO_OK) {
        filo_index_select_desc sd = {.outer = 1, .N = weight->shape[0], .K = filo_tensor_numel(ids),
                                     .inner = weight->shape[1], .elsize = filo_dtype_size(weight->dtype),
                                     .index = filo_tensor_data(t.c[0]), .index_is64 = ids->dtype == FILO_I64,
                                     .src = filo_tensor_data(t.c[1]), .out = filo_tensor_data(t.out)};
        st = run_index_select(weight->device, &sd);
    }
    return finish(op, &t, st, out);
}

/* ---- index_add, embedding_backward ---- */

static filo_status run_index_add(filo_index_add_desc *d, filo_device dev, tensors *t)
{
    int64_t n_out = d->outer * d->N * d->inner;
    if (n_out == 0)
        return FILO_OK;
    if (dev.type == FILO_DEVICE_CPU)
        return filo_cpu_index_add(d);
    if (d->K > 0) {
        if (d->K > INT32_MAX || d->N > INT32_MAX)
            return filo_error_set(FILO_ERR_UNSUPPORTED, __func__, "CUDA index_add supports at most 2^31-1 indices and rows, got %lld and %lld",
                                  (long long)d->K, (long long)d->N);
        int64_t p = 1;
        while (p < d->K)
            p <<= 1;
        d->key_count = p;
        /* One scratch block: the keys, then the partial sums ([outer, K, inner] of f32/f64). */
        int64_t partial_bytes = d->K > FILO_INDEX_ADD_CHUNK ? d->outer * d->K * d->inner * (d->dtype == FILO_F64 ? 8 : 4) : 0;
        int64_t words = p + (partial_bytes + 7) / 8;
        FILO_TRY(filo_tensor_empty(dev, FILO_I64, 1, &words, &t->scratch));
        d->keys = filo_tensor_data(t->scratch);
        d->partial = (int64_t *)d->keys + p;
    }
    void *stream = NULL;
    FILO_TRY(filo_stream_current_native(dev, &stream));
    return FILO_CUDA_CALL(filo_cuda_index_add(d, stream));
}

filo_status filo_index_add(const filo_tensor *dy, int dim, const filo_tensor *index, int64_t size, filo_tensor **dx)
{
    const char *op = "filo_index_add";
    char a[DESC_LEN], b[DESC_LEN];
    FILO_TRY(check_float(op, "dy", dy));
    if (!dx)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dx is NULL");
    int d = 0; /* set by norm_dim; initialized for -O3's maybe-uninitialized */
    FILO_TRY(norm_dim(op, dy, dim, &d));
    FILO_TRY(check_index(op, "index", index, dy));
    if (index->ndim != 1 || index->shape[0] != dy->shape[d])
        return filo_error_set(FILO_ERR_SHAPE, op, "index %s must be 1-D with the size of dim %d of dy %s",
                              filo_tensor_describe(index, a, sizeof a), d, filo_tensor_describe(dy, b, sizeof b));
    if (size < 0)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "size must be >= 0, got %lld", (long long)size);
    tensors t = {{NULL}, NULL, NULL};
    int64_t shape[FILO_MAX_DIMS];
    memcpy(shape, dy->shape, sizeof shape);
    shape[d] = size;
    filo_status st = filo_tensor_contiguous(index, &t.c[0]);
    if (st == FILO_OK)
        st = check_values(op, t.c[0], index, size);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(dy, &t.c[1]);
    if (st == FILO_OK)
        st = filo_tensor_empty(dy->device, dy->dtype, dy->ndim, shape, &t.out);
    if (st == FILO_OK) {
        filo_index_add_desc ad = {.outer = 1, .N = size, .K = dy->shape[d], .inner = 1, .dtype = dy->dtype,
                                  .index = filo_tensor_data(t.c[0]), .index_is64 = index->dtype == FILO_I64,
                                  .skip = -1, .dy = filo_tensor_data(t.c[1]), .dx = filo_tensor_data(t.out)};
        for (int k = 0; k < d; k++)
            ad.outer *= dy->shape[k];
        for (int k = d + 1; k < dy->ndim; k++)
            ad.inner *= dy->shape[k];
        st = run_index_add(&ad, dy->device, &t);
    }
    return finish(op, &t, st, dx);
}

filo_status filo_embedding_backward(const filo_tensor *dy, const filo_tensor *ids, int64_t num_weights,
                                    int64_t padding_idx, filo_tensor **dweight)
{
    const char *op = "filo_embedding_backward";
    char a[DESC_LEN], b[DESC_LEN];
    FILO_TRY(check_float(op, "dy", dy));
    if (!dweight)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dweight is NULL");
    FILO_TRY(check_index(op, "ids", ids, dy));
    int same = dy->ndim == ids->ndim + 1;
    for (int k = 0; same && k < ids->ndim; k++)
        same = dy->shape[k] == ids->shape[k];
    if (!same)
        return filo_error_set(FILO_ERR_SHAPE, op, "dy %s must have the shape of ids %s plus a last dim D",
                              filo_tensor_describe(dy, a, sizeof a), filo_tensor_describe(ids, b, sizeof b));
    if (num_weights < 0)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "num_weights must be >= 0, got %lld", (long long)num_weights);
    if (padding_idx < -1 || padding_idx >= num_weights)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "padding_idx %lld must be -1 or in [0, %lld)",
                              (long long)padding_idx, (long long)num_weights);
    tensors t = {{NULL}, NULL, NULL};
    int64_t D = dy->shape[dy->ndim - 1];
    int64_t shape[2] = {num_weights, D};
    filo_status st = filo_tensor_contiguous(ids, &t.c[0]);
    if (st == FILO_OK)
        st = check_values(op, t.c[0], ids, num_weights);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(dy, &t.c[1]);
    if (st == FILO_OK)
        st = filo_tensor_empty(dy->device, dy->dtype, 2, shape, &t.out);
    if (st == FILO_OK) {
        filo_index_add_desc ad = {.outer = 1, .N = num_weights, .K = filo_tensor_numel(ids), .inner = D,
                                  .dtype = dy->dtype, .index = filo_tensor_data(t.c[0]),
                                  .index_is64 = ids->dtype == FILO_I64, .skip = padding_idx,
                                  .dy = filo_tensor_data(t.c[1]), .dx = filo_tensor_data(t.out)};
        st = run_index_add(&ad, dy->device, &t);
    }
    return finish(op, &t, st, dweight);
}

/* ---- gather, scatter_add ---- */

filo_status filo_gather(const filo_tensor *x, int dim, const filo_tensor *index, filo_tensor **out)
{
    const char *op = "filo_gather";
    char a[DESC_LEN], b[DESC_LEN];
    if (!x || !out)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", !x ? "x" : "out");
    int d = 0; /* set by norm_dim; initialized for -O3's maybe-uninitialized */
    FILO_TRY(norm_dim(op, x, dim, &d));
    FILO_TRY(check_index(op, "index", index, x));
    int ok = index->ndim == x->ndim;
    for (int k = 0; ok && k < x->ndim; k++)
        ok = k == d || index->shape[k] <= x->shape[k];
    if (!ok)
        return filo_error_set(FILO_ERR_SHAPE, op, "index %s must have the dims of x %s, none larger except dim %d",
                              filo_tensor_describe(index, a, sizeof a), filo_tensor_describe(x, b, sizeof b), d);
    tensors t = {{NULL}, NULL, NULL};
    filo_status st = filo_tensor_contiguous(index, &t.c[0]);
    if (st == FILO_OK)
        st = check_values(op, t.c[0], index, x->shape[d]);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(x, &t.c[1]);
    if (st == FILO_OK)
        st = filo_tensor_empty(x->device, x->dtype, index->ndim, index->shape, &t.out);
    if (st == FILO_OK && filo_tensor_numel(t.out) > 0) {
        filo_gather_desc gd = {.ndim = x->ndim, .dim = d, .elsize = filo_dtype_size(x->dtype),
                               .numel = filo_tensor_numel(t.out), .index = filo_tensor_data(t.c[0]),
                               .index_is64 = index->dtype == FILO_I64, .src = filo_tensor_data(t.c[1]),
                               .out = filo_tensor_data(t.out)};
        memcpy(gd.src_shape, x->shape, sizeof gd.src_shape);
        memcpy(gd.index_shape, index->shape, sizeof gd.index_shape);
        if (x->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_gather(&gd);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(x->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_gather(&gd, stream));
        }
    }
    return finish(op, &t, st, out);
}

filo_status filo_scatter_add(const filo_tensor *self, int dim, const filo_tensor *index, const filo_tensor *src,
                             filo_tensor **out)
{
    const char *op = "filo_scatter_add";
    char a[DESC_LEN], b[DESC_LEN], c[DESC_LEN];
    FILO_TRY(check_float(op, "self", self));
    FILO_TRY(check_float(op, "src", src));
    if (!out)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "out is NULL");
    int d = 0; /* set by norm_dim; initialized for -O3's maybe-uninitialized */
    FILO_TRY(norm_dim(op, self, dim, &d));
    FILO_TRY(check_index(op, "index", index, self));
    if (src->dtype != self->dtype)
        return filo_error_set(FILO_ERR_DTYPE, op, "src %s must have the dtype of self %s",
                              filo_tensor_describe(src, a, sizeof a), filo_tensor_describe(self, b, sizeof b));
    if (!filo_device_equal(src->device, self->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "src %s is not on the device of self %s",
                              filo_tensor_describe(src, a, sizeof a), filo_tensor_describe(self, b, sizeof b));
    int ok = index->ndim == self->ndim && src->ndim == self->ndim;
    for (int k = 0; ok && k < self->ndim; k++)
        ok = index->shape[k] <= src->shape[k] && (k == d || index->shape[k] <= self->shape[k]);
    if (!ok)
        return filo_error_set(FILO_ERR_SHAPE, op,
                              "index %s must have the dims of src %s and self %s, none larger than src's, nor than "
                              "self's except dim %d",
                              filo_tensor_describe(index, a, sizeof a), filo_tensor_describe(src, b, sizeof b),
                              filo_tensor_describe(self, c, sizeof c), d);
    tensors t = {{NULL}, NULL, NULL};
    filo_status st = filo_tensor_contiguous(index, &t.c[0]);
    if (st == FILO_OK)
        st = check_values(op, t.c[0], index, self->shape[d]);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(self, &t.c[1]);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(src, &t.c[2]);
    if (st == FILO_OK)
        st = filo_tensor_empty(self->device, self->dtype, self->ndim, self->shape, &t.out);
    if (st == FILO_OK && filo_tensor_numel(t.out) > 0) {
        filo_scatter_add_desc sd = {.ndim = self->ndim, .dim = d, .dtype = self->dtype,
                                    .numel = filo_tensor_numel(t.out), .index = filo_tensor_data(t.c[0]),
                                    .index_is64 = index->dtype == FILO_I64, .self = filo_tensor_data(t.c[1]),
                                    .src = filo_tensor_data(t.c[2]), .out = filo_tensor_data(t.out)};
        memcpy(sd.self_shape, self->shape, sizeof sd.self_shape);
        memcpy(sd.index_shape, index->shape, sizeof sd.index_shape);
        memcpy(sd.src_shape, src->shape, sizeof sd.src_shape);
        if (self->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_scatter_add(&sd);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(self->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_scatter_add(&sd, stream));
        }
    }
    return finish(op, &t, st, out);
}

/* ---- masked_fill ---- */

filo_status filo_masked_fill(const filo_tensor *x, const filo_tensor *mask, double value, filo_tensor **out)
{
    const char *op = "filo_masked_fill";
    char a[DESC_LEN], b[DESC_LEN];
    if (!x || !mask || !out)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", !x ? "x" : (!mask ? "mask" : "out"));
    if (mask->dtype != FILO_U8)
        return filo_error_set(FILO_ERR_DTYPE, op, "mask must be u8, got %s", filo_tensor_describe(mask, a, sizeof a));
    if (!filo_device_equal(mask->device, x->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "mask %s is not on the device of x %s",
                              filo_tensor_describe(mask, a, sizeof a), filo_tensor_describe(x, b, sizeof b));
    int ok = mask->ndim <= x->ndim;
    for (int k = 0; ok && k < mask->ndim; k++) {
        int64_t m = mask->shape[mask->ndim - 1 - k], s = x->shape[x->ndim - 1 - k];
        ok = m == s || m == 1;
    }
    if (!ok)
        return filo_error_set(FILO_ERR_SHAPE, op, "mask %s does not broadcast to x %s",
                              filo_tensor_describe(mask, a, sizeof a), filo_tensor_describe(x, b, sizeof b));
    filo_masked_fill_desc md = {.ndim = x->ndim, .elsize = filo_dtype_size(x->dtype), .numel = filo_tensor_numel(x)};
    /* The value as one element of x's dtype: rounded for floats, truncated toward zero for
     * integers, which must hold it (no wrap-around). */
    unsigned char bytes[8] = {0};
    if (filo_convert(&value, FILO_F64, bytes, x->dtype, 1) != FILO_OK)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "value %g does not fit in %s", value, filo_dtype_name(x->dtype));
    memcpy(&md.value, bytes, 8);
    tensors t = {{NULL}, NULL, NULL};
    filo_status st = filo_tensor_expand(mask, x->ndim, x->shape, &t.c[0]);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(x, &t.c[1]);
    if (st == FILO_OK)
        st = filo_tensor_empty(x->device, x->dtype, x->ndim, x->shape, &t.out);
    if (st == FILO_OK && md.numel > 0) {
        memcpy(md.shape, x->shape, sizeof md.shape);
        memcpy(md.mask_strides, t.c[0]->strides, sizeof md.mask_strides);
        md.x = filo_tensor_data(t.c[1]);
        md.mask = filo_tensor_data(t.c[0]);
        md.out = filo_tensor_data(t.out);
        if (x->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_masked_fill(&md);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(x->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_masked_fill(&md, stream));
        }
    }
    return finish(op, &t, st, out);
}
