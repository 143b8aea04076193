/* Reductions and softmax: argument checks, output shapes and the dispatch to the CPU loops
 * (kernels/cpu/reduce.c) or the CUDA kernels (kernels/cuda/reduce.cu). Both backends see a
 * contiguous input described as [outer, extent, inner] (see reduce_backend.h). */
#include "filo/reduce.h"

#include "backend.h"
#include "error.h"
#include "reduce_backend.h"

static const char *kind_name(filo_reduce_kind kind)
{
    switch (kind) {
    case FILO_RK_SUM: return "sum";
    case FILO_RK_MEAN: return "mean";
    case FILO_RK_MAX: return "max";
    case FILO_RK_MIN: return "min";
    case FILO_RK_ARGMAX: return "argmax";
    case FILO_RK_VAR: return "var";
    }
    return "reduce";
}

static filo_status check_input(const filo_tensor *x, filo_tensor **out, const char *op, const char *where)
{
    if (!x)
        return filo_error_set(FILO_ERR_INVALID_ARG, where, "%s: x is NULL", op);
    if (!out)
        return filo_error_set(FILO_ERR_INVALID_ARG, where, "%s: out is NULL", op);
    if (!filo_dtype_is_float(x->dtype)) {
        char desc[200];
        return filo_error_set(FILO_ERR_DTYPE, where, "%s needs a floating-point tensor (f64, f32, bf16, f16), got %s",
                              op, filo_tensor_describe(x, desc, sizeof desc));
    }
    return filo_device_check(x->device);
}

/* Shared by every reduction: resolves dim, builds the output, runs the backend. */
static filo_status reduce_run(filo_reduce_kind kind, const filo_tensor *x, int dim, int keepdim, int correction,
                              const char *where, filo_tensor **out)
{
    const char *op = kind_name(kind);
    FILO_TRY(check_input(x, out, op, where));
    char desc[200];
    int all = dim == FILO_ALL_DIMS;
    int d = 0;
    if (!all) {
        /* A 0-d tensor reduces like a 1-d tensor of one element (dims 0 and -1), as in PyTorch. */
        int n = x->ndim > 0 ? x->ndim : 1;
        d = dim < 0 ? dim + n : dim;
        if (d < 0 || d >= n)
            return filo_error_set(FILO_ERR_SHAPE, where, "%s: dim %d out of range for %s (valid: %d..%d)", op, dim,
                                  filo_tensor_describe(x, desc, sizeof desc), -n, n - 1);
    }
    filo_reduce_desc rd = {kind, x->dtype, 1, 1, 1, correction, NULL, NULL};
    int64_t out_shape[FILO_MAX_DIMS];
    int out_ndim = 0;
    for (int i = 0; i < x->ndim; i++) {
        int reduced = all || i == d;
        if (reduced)
            rd.extent *= x->shape[i];
        else if (all || i < d)
            rd.outer *= x->shape[i];
        else
            rd.inner *= x->shape[i];
        if (!reduced || keepdim)
            out_shape[out_ndim++] = reduced ? 1 : x->shape[i];
    }
    if (rd.extent == 0 && (kind == FILO_RK_MAX || kind == FILO_RK_MIN || kind == FILO_RK_ARGMAX)) {
        if (all)
            return filo_error_set(FILO_ERR_SHAPE, where, "%s of an empty tensor %s has no identity", op,
                                  filo_tensor_describe(x, desc, sizeof desc));
        return filo_error_set(FILO_ERR_SHAPE, where, "%s over dim %d of size 0 of %s has no identity", op, dim,
                              filo_tensor_describe(x, desc, sizeof desc));
    }
    filo_dtype out_dtype = kind == FILO_RK_ARGMAX ? FILO_I64 : x->dtype;
    filo_tensor *y;
    FILO_TRY(filo_tensor_empty(x->device, out_dtype, out_ndim, out_shape, &y));
    if (filo_tensor_numel(y) == 0) {
        *out = y;
        return FILO_OK;
    }
    filo_tensor *xc = NULL;
    filo_status s = filo_tensor_contiguous(x, &xc);
    if (s == FILO_OK) {
        rd.x = filo_tensor_data(xc);
        rd.out = filo_tensor_data(y);
        if (x->device.type == FILO_DEVICE_CPU) {
            s = filo_cpu_reduce(&rd);
        } else {
            void *stream = NULL;
            s = filo_stream_current_native(x->device, &stream);
            if (s == FILO_OK)
                s = FILO_CUDA_CALL(filo_cuda_reduce(&rd, x->device.index, stream));
        }
    }
    filo_tensor_free(xc);
    if (s != FILO_OK) {
        filo_tensor_free(y);
        return filo_error_wrap(s, where);
    }
    *out = y;
    return FILO_OK;
}

filo_status filo_reduce(filo_reduce_op op, const filo_tensor *x, int dim, int keepdim, filo_tensor **out)
{
    filo_reduce_kind kind;
    switch (op) {
    case FILO_REDUCE_SUM: kind = FILO_RK_SUM; break;
    case FILO_REDUCE_MEAN: kind = FILO_RK_MEAN; break;
    case FILO_REDUCE_MAX: kind = FILO_RK_MAX; break;
    case FILO_REDUCE_MIN: kind = FILO_RK_MIN; break;
    default: return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown reduce op %d", (int)op);
    }
    return reduce_run(kind, x, dim, keepdim, 0, __func__, out);
}

filo_status filo_argmax(const filo_tensor *x, int dim, int keepdim, filo_tensor **out)
{
    return reduce_run(FILO_RK_ARGMAX, x, dim, keepdim, 0, __func__, out);
}

filo_status filo_variance(const filo_tensor *x, int dim, int correction, int keepdim, filo_tensor **out)
{
    if (correction < 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "var: correction %d is negative", correction);
    return reduce_run(FILO_RK_VAR, x, dim, keepdim, correction, __func__, out);
}

static filo_status softmax_run(int log, const filo_tensor *x, const char *where, filo_tensor **out)
{
    const char *op = log ? "log_softmax" : "softmax";
    FILO_TRY(check_input(x, out, op, where));
    filo_tensor *y;
    FILO_TRY(filo_tensor_empty_like(x, &y));
    filo_softmax_desc sd = {log, x->dtype, 1, x->ndim > 0 ? x->shape[x->ndim - 1] : 1, NULL, NULL};
    for (int i = 0; i + 1 < x->ndim; i++)
        sd.rows *= x->shape[i];
    if (sd.rows * sd.cols == 0) {
        *out = y;
        return FILO_OK;
    }
    filo_tensor *xc = NULL;
    filo_status s = filo_tensor_contiguous(x, &xc);
    if (s == FILO_OK) {
        sd.x = filo_tensor_data(xc);
        sd.out = filo_tensor_data(y);
        if (x->device.type == FILO_DEVICE_CPU) {
            s = filo_cpu_softmax(&sd);
        } else {
            void *stream = NULL;
            s = filo_stream_current_native(x->device, &stream);
            if (s == FILO_OK)
                s = FILO_CUDA_CALL(filo_cuda_softmax(&sd, stream));
        }
    }
    filo_tensor_free(xc);
    if (s != FILO_OK) {
        filo_tensor_free(y);
        return filo_error_wrap(s, where);
    }
    *out = y;
    return FILO_OK;
}

filo_status filo_softmax(const filo_tensor *x, filo_tensor **out) { return softmax_run(0, x, __func__, out); }

filo_status filo_log_softmax(const filo_tensor *x, filo_tensor **out) { return softmax_run(1, x, __func__, out); }
