/* Fused bias + GELU and bias + dropout + residual: argument checks, contiguous inputs, output
 * (and CUDA scratch) allocation and the dispatch to kernels/cpu/bias_act.c or
 * kernels/cuda/bias_act.cu (the dropout transform: kernels/cpu/dropout.c, kernels/cuda/dropout.cu)
 * by x's device. */
#include "filo/bias_act.h"

#include <stddef.h>

#include "backend.h"
#include "bias_act_backend.h"
#include "dropout_backend.h"
#include "error.h"
#include "op_checks.h"

#define DESC_LEN 200

static int is_float_dtype(filo_dtype t) { return t == FILO_F32 || t == FILO_F64 || t == FILO_BF16 || t == FILO_F16; }

static int64_t cols_of(const filo_tensor *x) { return x->ndim > 0 ? x->shape[x->ndim - 1] : 1; }

static filo_status check_input(const char *op, const char *what, const filo_tensor *t)
{
    char desc[DESC_LEN];
    if (!t)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", what);
    if (!is_float_dtype(t->dtype))
        return filo_error_set(FILO_ERR_DTYPE, op, "%s must be f32, f64, bf16 or f16, got %s", what,
                              filo_tensor_describe(t, desc, sizeof desc));
    return FILO_OK;
}

/* bias: [N] with N = x's last dim, x's dtype (or f32 for a bf16/f16 x), x's device. */
static filo_status check_bias(const char *op, const filo_tensor *bias, const filo_tensor *x)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (x->ndim < 1)
        return filo_error_set(FILO_ERR_SHAPE, op, "x %s has no last dim for a bias", filo_tensor_describe(x, b, sizeof b));
    int64_t N = cols_of(x);
    if (bias->ndim != 1 || bias->shape[0] != N)
        return filo_error_set(FILO_ERR_SHAPE, op, "bias %s must have shape [%lld] (the last dim of x %s)",
                              filo_tensor_describe(bias, a, sizeof a), (long long)N, filo_tensor_describe(x, b, sizeof b));
    int half = x->dtype == FILO_BF16 || x->dtype == FILO_F16;
    if (bias->dtype != x->dtype && !(half && bias->dtype == FILO_F32))
        return filo_error_set(FILO_ERR_DTYPE, op, "bias %s must have the dtype of x %s%s",
                              filo_tensor_describe(bias, a, sizeof a), filo_tensor_describe(x, b, sizeof b),
                              half ? " or f32" : "");
    if (!filo_device_equal(bias->device, x->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "bias %s is not on the device of x %s",
                              filo_tensor_describe(bias, a, sizeof a), filo_tensor_describe(x, b, sizeof b));
    return FILO_OK;
}

static filo_dtype acc_dtype(filo_dtype t) { return t == FILO_F64 ? FILO_F64 : FILO_F32; }

/* The CUDA column reductions' scratch: [chunks, cols] of the accumulation type. */
static filo_status partial_alloc(const filo_tensor *x, int64_t rows, int64_t cols, filo_tensor **partial)
{
    *partial = NULL;
    if (x->device.type != FILO_DEVICE_CUDA || rows == 0 || cols == 0)
        return FILO_OK;
    int64_t shape[2] = {filo_bias_act_chunks(rows), cols};
    return filo_tensor_empty(x->device, acc_dtype(x->dtype), 2, shape, partial);
}

static filo_status check_approximate(const char *op, int approximate)
{
    if (approximate != 0 && approximate != 1)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "approximate must be 0 (erf) or 1 (tanh), got %d", approximate);
    return FILO_OK;
}

filo_status filo_bias_gelu_forward(const filo_tensor *x, const filo_tensor *bias, int approximate, filo_tensor **y)
{
    const char *op = __func__;
    FILO_TRY(check_input(op, "x", x));
    if (bias)
        FILO_TRY(check_bias(op, bias, x));
    FILO_TRY(check_approximate(op, approximate));
    if (!y)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "y is NULL");

    filo_tensor *out = NULL, *cx = NULL, *cb = NULL;
    filo_status st = filo_tensor_empty(x->device, x->dtype, x->ndim, x->shape, &out);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(x, &cx);
    if (st == FILO_OK && bias)
        st = filo_tensor_contiguous(bias, &cb);
    int64_t n = filo_tensor_numel(x), cols = cols_of(x);
    if (st == FILO_OK && n > 0) {
        filo_bias_gelu_desc d = {
            .rows = n / cols,
            .cols = cols,
            .approximate = approximate,
            .dtype = x->dtype,
            .bias_dtype = bias ? bias->dtype : x->dtype,
            .x = filo_tensor_data(cx),
            .bias = cb ? filo_tensor_data(cb) : NULL,
            .y = filo_tensor_data(out),
        };
        if (x->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_bias_gelu_forward(&d);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(x->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_bias_gelu_forward(&d, stream));
        }
    }
    filo_tensor_free(cx);
    filo_tensor_free(cb);
    if (st != FILO_OK) {
        filo_tensor_free(out);
        return filo_error_wrap(st, op);
    }
    *y = out;
    return FILO_OK;
}

filo_status filo_bias_gelu_backward(const filo_tensor *dy, const filo_tensor *x, const filo_tensor *bias,
                                    int approximate, filo_tensor **dx, filo_tensor **dbias)
{
    const char *op = __func__;
    FILO_TRY(check_input(op, "x", x));
    FILO_TRY(filo_check_like(op, "dy", dy, "x", x));
    if (bias)
        FILO_TRY(check_bias(op, bias, x));
    FILO_TRY(check_approximate(op, approximate));
    if (!dx || (bias && !dbias))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (dx%s) is NULL", bias ? ", dbias" : "");

    int64_t n = filo_tensor_numel(x), cols = cols_of(x), rows = cols ? n / cols : 0;
    filo_tensor *out = NULL, *db = NULL, *partial = NULL, *cdy = NULL, *cx = NULL, *cb = NULL;
    filo_status st = filo_tensor_empty(x->device, x->dtype, x->ndim, x->shape, &out);
    if (st == FILO_OK && bias)
        st = rows > 0 ? filo_tensor_empty(x->device, bias->dtype, 1, &cols, &db)
                      : filo_tensor_zeros(x->device, bias->dtype, 1, &cols, &db); /* empty sums */
    if (st == FILO_OK && bias)
        st = partial_alloc(x, rows, cols, &partial);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(dy, &cdy);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(x, &cx);
    if (st == FILO_OK && bias)
        st = filo_tensor_contiguous(bias, &cb);
    if (st == FILO_OK && n > 0) {
        filo_bias_gelu_desc d = {
            .rows = rows,
            .cols = cols,
            .approximate = approximate,
            .dtype = x->dtype,
            .bias_dtype = bias ? bias->dtype : x->dtype,
            .x = filo_tensor_data(cx),
            .bias = cb ? filo_tensor_data(cb) : NULL,
            .dy = filo_tensor_data(cdy),
            .y = filo_tensor_data(out),
            .dbias = db ? filo_tensor_data(db) : NULL,
            .partial = partial ? filo_tensor_data(partial) : NULL,
        };
        if (x->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_bias_gelu_backward(&d);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(x->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_bias_gelu_backward(&d, stream));
        }
    }
    filo_tensor_free(cdy);
    filo_tensor_free(cx);
    filo_tensor_free(cb);
    /* The scratch returns to the caching allocator now: only later work on this stream reuses it. */
    filo_tensor_free(partial);
    if (st != FILO_OK) {
        filo_tensor_free(out);
        filo_tensor_free(db);
        return filo_error_wrap(st, op);
    }
    *dx = out;
    if (dbias)
        *dbias = db;
    return FILO_OK;
}

filo_status filo_bias_dropout_residual_forward(const filo_tensor *x, const filo_tensor *bias,
                                               const filo_tensor *residual, double p, filo_generator *gen,
                                               filo_tensor **y, filo_dropout_state *state)
{
    const char *op = __func__;
    FILO_TRY(check_input(op, "x", x));
    if (bias)
        FILO_TRY(check_bias(op, bias, x));
    if (residual)
        FILO_TRY(filo_check_like(op, "residual", residual, "x", x));
    FILO_TRY(filo_dropout_check_p(op, p, gen));
    if (!y || !state)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (y, state) is NULL");
    int64_t n = filo_tensor_numel(x);
    filo_dropout_state s = filo_dropout_state_make(gen, p, n);
    FILO_TRY(filo_dropout_apply_tensors(op, x, bias, residual, &s, y));
    if (p > 0.0)
        filo_generator_advance(gen, (uint64_t)n);
    *state = s;
    return FILO_OK;
}

filo_status filo_bias_dropout_residual_backward(const filo_tensor *dy, const filo_dropout_state *state, int with_bias,
                                                filo_tensor **dx, filo_tensor **dbias)
{
    const char *op = __func__;
    char desc[DESC_LEN];
    FILO_TRY(check_input(op, "dy", dy));
    FILO_TRY(filo_dropout_check_state(op, state));
    if (with_bias < 0 || with_bias > 2)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "with_bias must be 0, 1 or 2 (f32 dbias), got %d", with_bias);
    if (with_bias == 2 && dy->dtype == FILO_F64)
        return filo_error_set(FILO_ERR_DTYPE, op, "with_bias = 2 (an f32 dbias) needs a bf16, f16 or f32 dy, got %s",
                              filo_tensor_describe(dy, desc, sizeof desc));
    if (filo_tensor_numel(dy) != state->numel)
        return filo_error_set(FILO_ERR_SHAPE, op, "dy %s has %lld elements but the forward's mask has %lld",
                              filo_tensor_describe(dy, desc, sizeof desc), (long long)filo_tensor_numel(dy),
                              (long long)state->numel);
    if (with_bias && dy->ndim < 1)
        return filo_error_set(FILO_ERR_SHAPE, op, "dy %s has no last dim for a bias gradient",
                              filo_tensor_describe(dy, desc, sizeof desc));
    if (!dx || (with_bias && !dbias))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (dx%s) is NULL", with_bias ? ", dbias" : "");
    if (!with_bias)
        return filo_dropout_apply_tensors(op, dy, NULL, NULL, state, dx);

    filo_dtype dbias_dtype = with_bias == 2 ? FILO_F32 : dy->dtype;
    int64_t n = filo_tensor_numel(dy), cols = cols_of(dy), rows = cols ? n / cols : 0;
    filo_tensor *out = NULL, *db = NULL, *partial = NULL, *cdy = NULL;
    filo_status st = filo_tensor_empty(dy->device, dy->dtype, dy->ndim, dy->shape, &out);
    if (st == FILO_OK)
        st = rows > 0 ? filo_tensor_empty(dy->device, dbias_dtype, 1, &cols, &db)
                      : filo_tensor_zeros(dy->device, dbias_dtype, 1, &cols, &db);
    if (st == FILO_OK)
        st = partial_alloc(dy, rows, cols, &partial);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(dy, &cdy);
    if (st == FILO_OK && n > 0) {
        filo_dropout_dbias_desc d = {
            .drop = {.n = n, .cols = cols, .dtype = dy->dtype, .bias_dtype = dy->dtype,
                     .x = filo_tensor_data(cdy), .y = filo_tensor_data(out)},
            .rows = rows,
            .dbias_dtype = dbias_dtype,
            .dbias = filo_tensor_data(db),
            .partial = partial ? filo_tensor_data(partial) : NULL,
        };
        filo_dropout_desc_set_mask(&d.drop, state, dy->dtype);
        if (dy->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_dropout_dbias(&d);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(dy->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_dropout_dbias(&d, stream));
        }
    }
    filo_tensor_free(cdy);
    filo_tensor_free(partial);
    if (st != FILO_OK) {
        filo_tensor_free(out);
        filo_tensor_free(db);
        return filo_error_wrap(st, op);
    }
    *dx = out;
    *dbias = db;
    return FILO_OK;
}
