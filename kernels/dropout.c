/* Dropout: argument checks, the state, contiguous inputs, output allocation and the dispatch to
 * kernels/cpu/dropout.c or kernels/cuda/dropout.cu by the input's device. The helpers here also
 * serve the fused bias + dropout + residual (kernels/bias_act.c). */
#include "filo/dropout.h"

#include <math.h>
#include <stddef.h>

#include "backend.h"
#include "dropout_backend.h"
#include "element.h"
#include "error.h"

#define DESC_LEN 200

static int is_float_dtype(filo_dtype t) { return t == FILO_F32 || t == FILO_F64 || t == FILO_BF16 || t == FILO_F16; }

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

filo_status filo_dropout_check_p(const char *op, double p, const filo_generator *gen)
{
    if (!(p >= 0.0 && p <= 1.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "p must be in [0, 1], got %g", p);
    if (p > 0.0 && !gen)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "gen is NULL but p = %g > 0 needs a generator", p);
    return FILO_OK;
}

filo_status filo_dropout_check_state(const char *op, const filo_dropout_state *state)
{
    if (!state)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "state is NULL");
    if (!(state->p >= 0.0 && state->p <= 1.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "state has p = %g outside [0, 1] (not from a forward?)",
                              state->p);
    if (state->numel < 0)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "state has numel %lld < 0", (long long)state->numel);
    return FILO_OK;
}

filo_dropout_state filo_dropout_state_make(const filo_generator *gen, double p, int64_t n)
{
    filo_dropout_state s = {gen ? gen->seed : 0, gen ? gen->offset : 0, p, n};
    return s;
}

void filo_dropout_desc_set_mask(filo_dropout_desc *d, const filo_dropout_state *state, filo_dtype dtype)
{
    double p = state->p;
    d->seed = state->seed;
    d->offset = state->offset;
    d->threshold = 0;
    if (p == 0.0) {
        d->mode = FILO_DROPOUT_KEEP_ALL;
        d->scale = 1.0;
    } else if (p == 1.0) {
        d->mode = FILO_DROPOUT_DROP_ALL;
        d->scale = 0.0;
    } else {
        d->mode = FILO_DROPOUT_MASK;
        d->threshold = filo_dropout_threshold(p);
        /* The scale in the compute type: f32 arithmetic unless the data is f64. */
        d->scale = dtype == FILO_F64 ? 1.0 / (1.0 - p) : (double)(1.0f / (1.0f - (float)p));
    }
}

filo_status filo_dropout_apply_tensors(const char *op, const filo_tensor *x, const filo_tensor *bias,
                                       const filo_tensor *residual, const filo_dropout_state *state,
                                       filo_tensor **y)
{
    filo_tensor *out = NULL, *cx = NULL, *cb = NULL, *cr = NULL;
    filo_status st = filo_tensor_empty(x->device, x->dtype, x->ndim, x->shape, &out);
    if (st == FILO_OK)
        st = filo_tensor_contiguous(x, &cx);
    if (st == FILO_OK && bias)
        st = filo_tensor_contiguous(bias, &cb);
    if (st == FILO_OK && residual)
        st = filo_tensor_contiguous(residual, &cr);
    int64_t n = filo_tensor_numel(x);
    if (st == FILO_OK && n > 0) {
        filo_dropout_desc d = {
            .n = n,
            .cols = x->ndim > 0 ? x->shape[x->ndim - 1] : 1,
            .dtype = x->dtype,
            .bias_dtype = bias ? bias->dtype : x->dtype,
            .x = filo_tensor_data(cx),
            .bias = cb ? filo_tensor_data(cb) : NULL,
            .residual = cr ? filo_tensor_data(cr) : NULL,
            .y = filo_tensor_data(out),
        };
        filo_dropout_desc_set_mask(&d, state, x->dtype);
        if (x->device.type == FILO_DEVICE_CPU) {
            st = filo_cpu_dropout_apply(&d);
        } else {
            void *stream = NULL;
            st = filo_stream_current_native(x->device, &stream);
            if (st == FILO_OK)
                st = FILO_CUDA_CALL(filo_cuda_dropout_apply(&d, stream));
        }
    }
    filo_tensor_free(cx);
    filo_tensor_free(cb);
    filo_tensor_free(cr);
    if (st != FILO_OK) {
        filo_tensor_free(out);
        return filo_error_wrap(st, op);
    }
    *y = out;
    return FILO_OK;
}

filo_status filo_dropout(const filo_tensor *x, double p, filo_generator *gen, filo_tensor **out,
                         filo_dropout_state *state)
{
    const char *op = __func__;
    FILO_TRY(check_input(op, "x", x));
    FILO_TRY(filo_dropout_check_p(op, p, gen));
    if (!out || !state)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "an output pointer (out, state) is NULL");
    int64_t n = filo_tensor_numel(x);
    filo_dropout_state s = filo_dropout_state_make(gen, p, n);
    FILO_TRY(filo_dropout_apply_tensors(op, x, NULL, NULL, &s, out));
    if (p > 0.0)
        filo_generator_advance(gen, (uint64_t)n);
    *state = s;
    return FILO_OK;
}

filo_status filo_dropout_backward(const filo_tensor *dy, const filo_dropout_state *state, filo_tensor **dx)
{
    const char *op = __func__;
    char desc[DESC_LEN];
    FILO_TRY(check_input(op, "dy", dy));
    FILO_TRY(filo_dropout_check_state(op, state));
    if (!dx)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dx is NULL");
    if (filo_tensor_numel(dy) != state->numel)
        return filo_error_set(FILO_ERR_SHAPE, op, "dy %s has %lld elements but the forward's mask has %lld",
                              filo_tensor_describe(dy, desc, sizeof desc), (long long)filo_tensor_numel(dy),
                              (long long)state->numel);
    return filo_dropout_apply_tensors(op, dy, NULL, NULL, state, dx);
}
