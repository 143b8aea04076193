/* Elementwise ops: argument checks, broadcasting and layout collapsing, then dispatch to
 * kernels/cpu/elementwise.c or kernels/cuda/elementwise.cu by the inputs' device. */
#include "filo/elementwise.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "elementwise_backend.h"
#include "error.h"

static const char *const unary_names[FILO_UNARY_OP_COUNT] = {
    "neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "gelu", "gelu_tanh", "silu", "softplus",
};

static const char *const binary_names[FILO_BINARY_OP_COUNT] = {
    "add", "sub", "mul", "div", "max", "min", "eq", "ne", "lt", "le", "gt", "ge",
};

const char *filo_unary_op_name(filo_unary_op op)
{
    return (unsigned)op < FILO_UNARY_OP_COUNT ? unary_names[op] : "invalid";
}

const char *filo_binary_op_name(filo_binary_op op)
{
    return (unsigned)op < FILO_BINARY_OP_COUNT ? binary_names[op] : "invalid";
}

static int is_compare(filo_binary_op op) { return op >= FILO_BINARY_EQ && op < FILO_BINARY_OP_COUNT; }

static filo_status check_float(const filo_tensor *t, const char *what, const char *where)
{
    if (filo_dtype_is_float(t->dtype))
        return FILO_OK;
    char desc[200];
    return filo_error_set(FILO_ERR_DTYPE, where, "%s needs a float tensor (f64, f32, bf16, f16), got %s", what,
                          filo_tensor_describe(t, desc, sizeof desc));
}

/* The common shape of `n` tensors, or FILO_ERR_SHAPE naming every shape. */
static filo_status broadcast_shape(const filo_tensor *const *t, int n, const char *what, const char *where,
                                   int *ndim, int64_t *shape)
{
    int nd = 0;
    for (int k = 0; k < n; k++)
        nd = t[k]->ndim > nd ? t[k]->ndim : nd;
    for (int d = 0; d < nd; d++) {
        int64_t size = 1;
        for (int k = 0; k < n; k++) {
            int kd = d - (nd - t[k]->ndim);
            int64_t s = kd >= 0 ? t[k]->shape[kd] : 1;
            if (s == 1)
                continue;
            if (size != 1 && size != s) {
                char msg[700];
                size_t len = 0;
                for (int j = 0; j < n; j++) {
                    char desc[200];
                    len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s", j ? " with " : "",
                                            filo_tensor_describe(t[j], desc, sizeof desc));
                    if (len >= sizeof msg)
                        break;
                }
                return filo_error_set(FILO_ERR_SHAPE, where, "%s: cannot broadcast %s (dim %d)", what, msg,
                                      d - nd);
            }
            size = s;
        }
        shape[d] = size;
    }
    *ndim = nd;
    return FILO_OK;
}

static filo_status check_same_device(const filo_tensor *a, const filo_tensor *b, const char *what, const char *where)
{
    if (filo_device_equal(a->device, b->device))
        return FILO_OK;
    char da[200], db[200];
    return filo_error_set(FILO_ERR_DEVICE, where, "%s: inputs on different devices: %s and %s", what,
                          filo_tensor_describe(a, da, sizeof da), filo_tensor_describe(b, db, sizeof db));
}

static filo_status check_same_dtype(const filo_tensor *a, const filo_tensor *b, const char *what, const char *where)
{
    if (a->dtype == b->dtype)
        return FILO_OK;
    char da[200], db[200];
    return filo_error_set(FILO_ERR_DTYPE, where, "%s: inputs of different dtypes: %s and %s", what,
                          filo_tensor_describe(a, da, sizeof da), filo_tensor_describe(b, db, sizeof db));
}

/* Fills d's layout: strides of each input broadcast to `shape`, then dims merged where the
 * output and every input stay contiguous across them, and size-1 dims dropped. */
static void layout_init(filo_ew_desc *d, const filo_tensor *const *in, int n, int ndim, const int64_t *shape)
{
    d->n_inputs = n;
    d->numel = 1;
    for (int i = 0; i < ndim; i++)
        d->numel *= shape[i];
    for (int k = 0; k < n; k++)
        d->in[k] = filo_tensor_data(in[k]);
    int m = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == 1)
            continue;
        int64_t st[FILO_EW_MAX_INPUTS];
        for (int k = 0; k < n; k++) {
            int kd = i - (ndim - in[k]->ndim);
            st[k] = kd >= 0 && in[k]->shape[kd] != 1 ? in[k]->strides[kd] : 0;
        }
        /* The output is contiguous, so a dim merges into the previous one when each input's
         * previous stride equals this stride times this size (broadcast: 0 == 0 * size). */
        int merge = m > 0;
        for (int k = 0; merge && k < n; k++)
            merge = d->strides[k][m - 1] == st[k] * shape[i];
        if (merge) {
            d->shape[m - 1] *= shape[i];
            for (int k = 0; k < n; k++)
                d->strides[k][m - 1] = st[k];
            continue;
        }
        d->shape[m] = shape[i];
        for (int k = 0; k < n; k++)
            d->strides[k][m] = st[k];
        m++;
    }
    d->ndim = m;
}

static filo_status launch(const filo_ew_desc *d, filo_device device)
{
    if (d->numel == 0)
        return FILO_OK;
    if (device.type == FILO_DEVICE_CPU) {
        filo_cpu_elementwise(d);
        return FILO_OK;
    }
    filo_stream *stream;
    FILO_TRY(filo_stream_current(device, &stream));
    return FILO_CUDA_CALL(filo_cuda_elementwise(d, stream->native));
}

/* Allocates the output of a broadcast op over `in` and runs it. */
static filo_status run(filo_ew_desc *d, const filo_tensor *const *in, int n, filo_dtype out_dtype, const char *what,
                       const char *where, filo_tensor **out)
{
    int ndim;
    int64_t shape[FILO_MAX_DIMS];
    FILO_TRY(broadcast_shape(in, n, what, where, &ndim, shape));
    filo_tensor *r;
    FILO_TRY(filo_tensor_empty(in[0]->device, out_dtype, ndim, shape, &r));
    layout_init(d, in, n, ndim, shape);
    d->out = filo_tensor_data(r);
    filo_status s = launch(d, r->device);
    if (s != FILO_OK) {
        filo_tensor_free(r);
        return filo_error_wrap(s, where);
    }
    *out = r;
    return FILO_OK;
}

static filo_status unary_run(int op, double p, const filo_tensor *x, const char *what, const char *where,
                             filo_tensor **out)
{
    if (!x || !out)
        return filo_error_set(FILO_ERR_INVALID_ARG, where, "%s: %s is NULL", what, x ? "out" : "x");
    FILO_TRY(check_float(x, what, where));
    filo_ew_desc d;
    memset(&d, 0, sizeof d);
    d.kind = FILO_EW_UNARY;
    d.op = op;
    d.scalar = p;
    d.dtype = x->dtype;
    return run(&d, &x, 1, x->dtype, what, where, out);
}

filo_status filo_unary(filo_unary_op op, const filo_tensor *x, filo_tensor **out)
{
    if ((unsigned)op >= FILO_UNARY_OP_COUNT)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown unary op %d", (int)op);
    return unary_run((int)op, 0.0, x, unary_names[op], __func__, out);
}

filo_status filo_pow_scalar(const filo_tensor *x, double p, filo_tensor **out)
{
    return unary_run(FILO_EW_POW, p, x, "pow", __func__, out);
}

filo_status filo_binary(filo_binary_op op, const filo_tensor *a, const filo_tensor *b, filo_tensor **out)
{
    if ((unsigned)op >= FILO_BINARY_OP_COUNT)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown binary op %d", (int)op);
    const char *what = binary_names[op];
    if (!a || !b || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "%s: %s is NULL", what, !a ? "a" : !b ? "b" : "out");
    FILO_TRY(check_same_device(a, b, what, __func__));
    FILO_TRY(check_same_dtype(a, b, what, __func__));
    if (!is_compare(op))
        FILO_TRY(check_float(a, what, __func__));
    filo_ew_desc d;
    memset(&d, 0, sizeof d);
    d.kind = is_compare(op) ? FILO_EW_COMPARE : FILO_EW_BINARY;
    d.op = (int)op;
    d.dtype = a->dtype;
    const filo_tensor *in[2] = {a, b};
    return run(&d, in, 2, is_compare(op) ? FILO_U8 : a->dtype, what, __func__, out);
}

filo_status filo_binary_scalar(filo_binary_op op, const filo_tensor *x, double s, int reversed, filo_tensor **out)
{
    if ((unsigned)op >= FILO_BINARY_OP_COUNT || is_compare(op))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "op %d (%s) has no scalar form (add, sub, mul, div, max, min do)",
                         (int)op, filo_binary_op_name(op));
    const char *what = binary_names[op];
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "%s: %s is NULL", what, x ? "out" : "x");
    FILO_TRY(check_float(x, what, __func__));
    filo_ew_desc d;
    memset(&d, 0, sizeof d);
    d.kind = FILO_EW_SCALAR;
    d.op = (int)op;
    d.scalar = s;
    d.reversed = reversed != 0;
    d.dtype = x->dtype;
    return run(&d, &x, 1, x->dtype, what, __func__, out);
}

filo_status filo_where(const filo_tensor *cond, const filo_tensor *a, const filo_tensor *b, filo_tensor **out)
{
    if (!cond || !a || !b || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "where: %s is NULL", !cond ? "cond" : !a ? "a" : !b ? "b" : "out");
    FILO_TRY(check_same_device(cond, a, "where", __func__));
    FILO_TRY(check_same_device(a, b, "where", __func__));
    if (cond->dtype != FILO_U8) {
        char desc[200];
        return FILO_FAIL(FILO_ERR_DTYPE, "where: cond must be u8, got %s", filo_tensor_describe(cond, desc, sizeof desc));
    }
    FILO_TRY(check_same_dtype(a, b, "where", __func__));
    filo_ew_desc d;
    memset(&d, 0, sizeof d);
    d.kind = FILO_EW_WHERE;
    d.dtype = a->dtype;
    const filo_tensor *in[3] = {cond, a, b};
    return run(&d, in, 3, a->dtype, "where", __func__, out);
}

filo_status filo_arange(filo_device device, filo_dtype dtype, double start, double end, double step, filo_tensor **out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    if (!isfinite(start) || !isfinite(end) || !isfinite(step))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "start %g, end %g and step %g must be finite", start, end, step);
    if (step == 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "step must be non-zero (start %g, end %g)", start, end);
    if ((end > start && step < 0) || (end < start && step > 0))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "step %g points away from end %g (start %g)", step, end, start);
    double len = ceil((end - start) / step);
    if (len > 9.0e15)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "arange(%g, %g, %g) would have %g elements", start, end, step, len);
    int64_t n = (int64_t)len;
    filo_tensor *r;
    FILO_TRY(filo_tensor_empty(device, dtype, 1, &n, &r));
    filo_status s = FILO_OK;
    if (n > 0 && device.type == FILO_DEVICE_CPU) {
        filo_cpu_arange(filo_tensor_data(r), dtype, n, start, step);
    } else if (n > 0) {
        filo_stream *stream;
        s = filo_stream_current(device, &stream);
        if (s == FILO_OK)
            s = FILO_CUDA_CALL(filo_cuda_arange(filo_tensor_data(r), dtype, n, start, step, stream->native));
    }
    if (s != FILO_OK) {
        filo_tensor_free(r);
        return filo_error_wrap(s, __func__);
    }
    *out = r;
    return FILO_OK;
}

/* "[1, 0, 2]": the multi-index of row-major position `pos` in `shape`. */
static const char *index_str(int ndim, const int64_t *shape, int64_t pos, char *buf, size_t size)
{
    int64_t idx[FILO_MAX_DIMS];
    for (int i = ndim - 1; i >= 0; i--) {
        idx[i] = pos % shape[i];
        pos /= shape[i];
    }
    return filo_dims_format(ndim, idx, buf, size);
}

filo_status filo_one_hot(const filo_tensor *indices, int64_t num_classes, filo_dtype out_dtype, filo_tensor **out)
{
    if (!indices || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "%s is NULL", indices ? "out" : "indices");
    char desc[200];
    if (indices->dtype != FILO_I64 && indices->dtype != FILO_I32)
        return FILO_FAIL(FILO_ERR_DTYPE, "indices must be i64 or i32, got %s",
                         filo_tensor_describe(indices, desc, sizeof desc));
    if (!filo_dtype_valid(out_dtype))
        return FILO_FAIL(FILO_ERR_DTYPE, "invalid out_dtype %d", (int)out_dtype);
    if (num_classes < 1)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "num_classes must be >= 1, got %lld", (long long)num_classes);
    if (indices->ndim >= FILO_MAX_DIMS)
        return FILO_FAIL(FILO_ERR_SHAPE, "indices %s already have %d dims, the most a tensor can have",
                         filo_tensor_describe(indices, desc, sizeof desc), FILO_MAX_DIMS);
    filo_one_hot_desc d;
    memset(&d, 0, sizeof d);
    d.ndim = indices->ndim;
    d.rows = filo_tensor_numel(indices);
    int64_t shape[FILO_MAX_DIMS];
    for (int i = 0; i < indices->ndim; i++) {
        d.shape[i] = shape[i] = indices->shape[i];
        d.strides[i] = indices->strides[i];
    }
    shape[indices->ndim] = num_classes;
    d.indices = filo_tensor_data(indices);
    d.index_dtype = indices->dtype;
    d.num_classes = num_classes;
    d.out_dtype = out_dtype;
    filo_tensor *r;
    FILO_TRY(filo_tensor_empty(indices->device, out_dtype, indices->ndim + 1, shape, &r));
    d.out = filo_tensor_data(r);
    size_t bytes = filo_tensor_nbytes(r);
    filo_status s = FILO_OK;
    if (bytes > 0 && r->device.type == FILO_DEVICE_CPU) {
        memset(d.out, 0, bytes);
        int64_t bad = filo_cpu_one_hot(&d);
        if (bad >= 0) {
            char where[160];
            int64_t off = 0, pos = bad;
            for (int i = d.ndim - 1; i >= 0; i--) {
                off += (pos % d.shape[i]) * d.strides[i];
                pos /= d.shape[i];
            }
            int64_t v = filo_el_load_i((const char *)d.indices + off * (int64_t)filo_dtype_size(d.index_dtype),
                                       d.index_dtype);
            s = FILO_FAIL(FILO_ERR_INVALID_ARG, "index %lld at position %s of %s is outside [0, %lld)", (long long)v,
                          index_str(d.ndim, d.shape, bad, where, sizeof where),
                          filo_tensor_describe(indices, desc, sizeof desc), (long long)num_classes);
        }
    } else if (bytes > 0) {
        filo_stream *stream;
        s = filo_stream_current(r->device, &stream);
        if (s == FILO_OK)
            s = filo_cuda_memset_async(r->device.index, d.out, 0, bytes, stream->native);
        if (s == FILO_OK)
            s = FILO_CUDA_CALL(filo_cuda_one_hot(&d, stream->native));
        if (s != FILO_OK)
            s = filo_error_wrap(s, __func__);
    }
    if (s != FILO_OK) {
        filo_tensor_free(r);
        return s;
    }
    *out = r;
    return FILO_OK;
}
