/* Layout ops (include/filo/layout.h): argument checks, contiguous inputs, output allocation and
 * the dispatch to kernels/cpu/layout.c or kernels/cuda/layout.cu by the inputs' device. */
#include "filo/layout.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "element.h"
#include "error.h"
#include "layout_backend.h"

#define DESC_LEN 200

static filo_status norm_dim(const char *op, const filo_tensor *x, int dim, int *out)
{
    char desc[DESC_LEN];
    if (x->ndim < 1 || dim < -x->ndim || dim >= x->ndim)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dim %d is out of range for %s", dim,
                              filo_tensor_describe(x, desc, sizeof desc));
    *out = dim < 0 ? dim + x->ndim : dim;
    return FILO_OK;
}

filo_status filo_cast(const filo_tensor *x, filo_dtype dtype, filo_tensor **out)
{
    const char *op = "filo_cast";
    if (!x || !out)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", !x ? "x" : "out");
    if (!filo_dtype_valid(dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "invalid target dtype %d", (int)dtype);
    filo_tensor *o = NULL;
    filo_status st = filo_tensor_empty(x->device, dtype, x->ndim, x->shape, &o);
    if (st == FILO_OK)
        st = filo_tensor_copy(o, x); /* the runtime's strided copy converts on either device */
    if (st != FILO_OK) {
        filo_tensor_free(o);
        return filo_error_wrap(st, op);
    }
    *out = o;
    return FILO_OK;
}

static filo_status copy2d(filo_device dev, const filo_copy2d_desc *d)
{
    if (d->rows == 0 || d->cols == 0)
        return FILO_OK;
    if (dev.type == FILO_DEVICE_CPU)
        return filo_cpu_copy2d(d);
    void *stream = NULL;
    FILO_TRY(filo_stream_current_native(dev, &stream));
    return FILO_CUDA_CALL(filo_cuda_copy2d(d, stream));
}

filo_status filo_concat(const filo_tensor *const *xs, int n, int dim, filo_tensor **out)
{
    const char *op = "filo_concat";
    char a[DESC_LEN], b[DESC_LEN];
    if (!xs || !out)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", !xs ? "xs" : "out");
    if (n < 1)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "needs at least one tensor, got n = %d", n);
    for (int i = 0; i < n; i++)
        if (!xs[i])
            return filo_error_set(FILO_ERR_INVALID_ARG, op, "xs[%d] is NULL", i);
    const filo_tensor *x0 = xs[0];
    int d = 0; /* set by norm_dim; initialized for -O3's maybe-uninitialized */
    FILO_TRY(norm_dim(op, x0, dim, &d));
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const filo_tensor *x = xs[i];
        if (x->ndim != x0->ndim)
            return filo_error_set(FILO_ERR_SHAPE, op, "xs[%d] %s has %d dims but xs[0] %s has %d", i,
                                  filo_tensor_describe(x, a, sizeof a), x->ndim, filo_tensor_describe(x0, b, sizeof b),
                                  x0->ndim);
        for (int k = 0; k < x0->ndim; k++)
            if (k != d && x->shape[k] != x0->shape[k])
                return filo_error_set(FILO_ERR_SHAPE, op, "xs[%d] %s and xs[0] %s differ in dim %d (only dim %d may differ)",
                                      i, filo_tensor_describe(x, a, sizeof a), filo_tensor_describe(x0, b, sizeof b), k, d);
        if (x->dtype != x0->dtype)
            return filo_error_set(FILO_ERR_DTYPE, op, "xs[%d] %s and xs[0] %s have different dtypes", i,
                                  filo_tensor_describe(x, a, sizeof a), filo_tensor_describe(x0, b, sizeof b));
        if (!filo_device_equal(x->device, x0->device))
            return filo_error_set(FILO_ERR_DEVICE, op, "xs[%d] %s is not on the device of xs[0] %s", i,
                                  filo_tensor_describe(x, a, sizeof a), filo_tensor_describe(x0, b, sizeof b));
        total += x->shape[d];
    }
    int64_t shape[FILO_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof shape);
    shape[d] = total;
    int64_t outer = 1, inner = 1;
    for (int k = 0; k < d; k++)
        outer *= shape[k];
    for (int k = d + 1; k < x0->ndim; k++)
        inner *= shape[k];
    filo_tensor *o = NULL;
    filo_status st = filo_tensor_empty(x0->device, x0->dtype, x0->ndim, shape, &o);
    int64_t off = 0;
    for (int i = 0; st == FILO_OK && i < n; i++) {
        if (!filo_tensor_is_contiguous(xs[i])) {
            /* A strided input: one pass of the runtime's strided copy into its slot. */
            filo_tensor *slot = NULL;
            st = filo_tensor_slice(o, d, off, off + xs[i]->shape[d], 1, &slot);
            if (st == FILO_OK)
                st = filo_tensor_copy(slot, xs[i]);
            filo_tensor_free(slot);
            off += xs[i]->shape[d];
            continue;
        }
        filo_tensor *c = NULL;
        st = filo_tensor_contiguous(xs[i], &c);
        if (st != FILO_OK)
            break;
        filo_copy2d_desc cd = {
            .rows = outer,
            .cols = xs[i]->shape[d] * inner,
            .elsize = filo_dtype_size(x0->dtype),
            .dst = (char *)filo_tensor_data(o) + (size_t)(off * inner) * filo_dtype_size(x0->dtype),
            .dst_ld = total * inner,
            .src = filo_tensor_data(c),
            .src_ld = xs[i]->shape[d] * inner,
        };
        st = copy2d(x0->device, &cd);
        filo_tensor_free(c);
        off += xs[i]->shape[d];
    }
    if (st != FILO_OK) {
        filo_tensor_free(o);
        return filo_error_wrap(st, op);
    }
    *out = o;
    return FILO_OK;
}

filo_status filo_split(const filo_tensor *x, int dim, const int64_t *sizes, int n, filo_tensor **outs)
{
    const char *op = "filo_split";
    char a[DESC_LEN];
    if (!x || !sizes || !outs)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", !x ? "x" : (!sizes ? "sizes" : "outs"));
    if (n < 1)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "needs at least one size, got n = %d", n);
    int d = 0; /* set by norm_dim; initialized for -O3's maybe-uninitialized */
    FILO_TRY(norm_dim(op, x, dim, &d));
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 0)
            return filo_error_set(FILO_ERR_INVALID_ARG, op, "sizes[%d] = %lld is negative", i, (long long)sizes[i]);
        sum += sizes[i];
    }
    if (sum != x->shape[d])
        return filo_error_set(FILO_ERR_SHAPE, op, "sizes sum to %lld but dim %d of %s has size %lld", (long long)sum, d,
                              filo_tensor_describe(x, a, sizeof a), (long long)x->shape[d]);
    int64_t start = 0;
    for (int i = 0; i < n; i++) {
        filo_status st = filo_tensor_slice(x, d, start, start + sizes[i], 1, &outs[i]);
        if (st != FILO_OK) {
            for (int j = 0; j < i; j++) {
                filo_tensor_free(outs[j]);
                outs[j] = NULL;
            }
            return filo_error_wrap(st, op);
        }
        start += sizes[i];
    }
    return FILO_OK;
}

filo_status filo_chunk(const filo_tensor *x, int dim, int n, filo_tensor **outs, int *n_out)
{
    const char *op = "filo_chunk";
    if (!x || !outs || !n_out)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", !x ? "x" : (!outs ? "outs" : "n_out"));
    if (n < 1)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "chunks must be >= 1, got %d", n);
    int d = 0; /* set by norm_dim; initialized for -O3's maybe-uninitialized */
    FILO_TRY(norm_dim(op, x, dim, &d));
    int64_t size = x->shape[d], each = (size + n - 1) / n;
    /* ceil(size / each) <= n views; torch.chunk of an empty dim gives one empty chunk. */
    int count = size == 0 ? 1 : (int)((size + each - 1) / each);
    int64_t *sizes = malloc(sizeof(int64_t) * (size_t)count);
    if (!sizes)
        return filo_error_set(FILO_ERR_OOM, op, "out of host memory for %d chunk sizes", count);
    for (int i = 0; i < count; i++) {
        int64_t start = (int64_t)i * each;
        sizes[i] = size - start < each ? size - start : each;
    }
    filo_status st = filo_split(x, d, sizes, count, outs);
    free(sizes);
    if (st != FILO_OK)
        return filo_error_wrap(st, op);
    *n_out = count;
    return FILO_OK;
}

static filo_status pad_impl(const char *op, const filo_tensor *x, int npairs, const int64_t *pads, int negate,
                            double value, filo_tensor **out)
{
    char a[DESC_LEN];
    if (!x || !pads || !out)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", !x ? (negate ? "dy" : "x") : (!pads ? "pads" : "out"));
    if (npairs < 1 || npairs > x->ndim)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "npairs = %d must be in [1, %d] for %s", npairs, x->ndim,
                              filo_tensor_describe(x, a, sizeof a));
    filo_pad_desc pd = {.ndim = x->ndim, .elsize = filo_dtype_size(x->dtype)};
    for (int k = 0; k < x->ndim; k++) {
        pd.in_shape[k] = x->shape[k];
        pd.out_shape[k] = x->shape[k];
    }
    for (int p = 0; p < npairs; p++) {
        int k = x->ndim - 1 - p;
        int64_t l = pads[2 * p], r = pads[2 * p + 1];
        if (negate) {
            l = -l;
            r = -r;
        }
        int64_t size = x->shape[k] + l + r;
        if (size < 0)
            return filo_error_set(FILO_ERR_SHAPE, op, "pads (%lld, %lld) on dim %d of %s give a negative size %lld",
                                  (long long)pads[2 * p], (long long)pads[2 * p + 1], k,
                                  filo_tensor_describe(x, a, sizeof a), (long long)size);
        pd.left[k] = l;
        pd.out_shape[k] = size;
    }
    /* The fill value as one element of x's dtype. */
    /* The value as one element of x's dtype: rounded for floats, truncated toward zero for
     * integers, which must hold it (no wrap-around). */
    unsigned char bytes[8] = {0};
    if (filo_convert(&value, FILO_F64, bytes, x->dtype, 1) != FILO_OK)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "value %g does not fit in %s", value, filo_dtype_name(x->dtype));
    memcpy(&pd.value, bytes, 8);
    filo_tensor *o = NULL, *c = NULL;
    filo_status st = filo_tensor_empty(x->device, x->dtype, x->ndim, pd.out_shape, &o);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(x, &c);
    pd.numel = o ? filo_tensor_numel(o) : 0;
    if (st == FILO_OK && pd.numel > 0) {
        pd.src = filo_tensor_data(c);
        pd.dst = filo_tensor_data(o);
        if (x->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_pad(&pd);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(x->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_pad(&pd, stream));
        }
    }
    filo_tensor_free(c);
    if (st != FILO_OK) {
        filo_tensor_free(o);
        return filo_error_wrap(st, op);
    }
    *out = o;
    return FILO_OK;
}

filo_status filo_pad(const filo_tensor *x, int npairs, const int64_t *pads, double value, filo_tensor **out)
{
    return pad_impl("filo_pad", x, npairs, pads, 0, value, out);
}

filo_status filo_pad_backward(const filo_tensor *dy, int npairs, const int64_t *pads, filo_tensor **dx)
{
    return pad_impl("filo_pad_backward", dy, npairs, pads, 1, 0.0, dx);
}
