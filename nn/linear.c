/* Linear (nn.Linear): y = x W^T + b on the matmul op, with the bias (and GELU) fused into its
 * epilogue, autocast casts, and the bias + dropout + residual fusion transformer blocks use. */
#include <math.h>

#include "error.h"
#include "nn_internal.h"

filo_status filo_nn_linear_init(filo_nn_linear *m, filo_params *ps, const char *prefix, int64_t in_features,
                                int64_t out_features, int bias)
{
    if (!m || !ps)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m and ps must not be NULL");
    if (in_features <= 0 || out_features <= 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "in_features = %lld and out_features = %lld must be positive",
                         (long long)in_features, (long long)out_features);
    *m = (filo_nn_linear){NULL, NULL, in_features, out_features};
    char name[FILO_NN_NAME_MAX];
    /* PyTorch's reset_parameters: kaiming_uniform(a = sqrt 5) gives U(-1/sqrt(in), 1/sqrt(in)),
     * and the bias draws from the same bound. */
    FILO_TRY(filo_params_create(ps, filo_param_name_join(name, sizeof name, prefix, "weight"), 2,
                                (int64_t[]){out_features, in_features},
                                (filo_init){FILO_INIT_KAIMING_UNIFORM, sqrt(5.0), 0}, FILO_PARAM_WEIGHT, &m->weight));
    if (bias) {
        double bound = 1.0 / sqrt((double)in_features);
        FILO_TRY(filo_params_create(ps, filo_param_name_join(name, sizeof name, prefix, "bias"), 1,
                                    (int64_t[]){out_features}, (filo_init){FILO_INIT_UNIFORM, -bound, bound},
                                    FILO_PARAM_BIAS, &m->bias));
    }
    return FILO_OK;
}

filo_status filo_nn_affine(const filo_nn_ctx *ctx, filo_var *x, filo_var *w, filo_var *b, filo_matmul_epilogue ep,
                           filo_var **y)
{
    if (!x || !w || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x, weight and y must not be NULL");
    *y = NULL;
    FILO_TRY(filo_nn_ctx_check(ctx));
    const filo_tensor *xv = filo_var_value(x), *wv = filo_var_value(w);
    char xs[96];
    if (wv->ndim != 2)
        return FILO_FAIL(FILO_ERR_SHAPE, "weight is %s; it must be [out, in]", filo_tensor_describe(wv, xs, sizeof xs));
    if (xv->ndim < 1 || xv->shape[xv->ndim - 1] != wv->shape[1])
        return FILO_FAIL(FILO_ERR_SHAPE, "x is %s; its last dim must be in_features = %lld",
                         filo_tensor_describe(xv, xs, sizeof xs), (long long)wv->shape[1]);
    if (!filo_dtype_is_float(xv->dtype))
        return FILO_FAIL(FILO_ERR_DTYPE, "x is %s; it must be a float tensor", filo_tensor_describe(xv, xs, sizeof xs));
    if (ep != FILO_MATMUL_EPILOGUE_NONE && !b)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "a bias epilogue needs a bias");
    filo_var *xc = NULL, *wc = NULL, *bc = NULL, *x2 = NULL, *out = NULL;
    filo_status s = filo_autocast_for_matmul(ctx, x, &xc);
    if (s == FILO_OK)
        s = filo_autocast_for_matmul(ctx, w, &wc);
    if (s == FILO_OK && ep != FILO_MATMUL_EPILOGUE_NONE)
        s = filo_autocast_for_matmul(ctx, b, &bc);
    if (s == FILO_OK && filo_var_value(xc)->dtype != filo_var_value(wc)->dtype)
        s = FILO_FAIL(FILO_ERR_DTYPE, "x is %s but the weight is %s (set ctx->autocast to run in another dtype)",
                      filo_dtype_name(filo_var_value(xc)->dtype), filo_dtype_name(filo_var_value(wc)->dtype));
    /* The matmul takes [M, K] and [B, M, K] (strided views in place); other ranks are flattened. */
    int nd = xv->ndim;
    int64_t rows = 1;
    for (int d = 0; d < nd - 1; d++)
        rows *= xv->shape[d];
    if (s == FILO_OK) {
        if (nd == 2 || nd == 3)
            x2 = filo_var_retain(xc);
        else
            s = filo_ag_reshape(xc, 2, (int64_t[]){rows, wv->shape[1]}, &x2);
    }
    if (s == FILO_OK)
        s = filo_ag_matmul(x2, wc, 0, 1, bc, ep, &out);
    if (s == FILO_OK && nd != 2 && nd != 3) {
        int64_t shape[FILO_MAX_DIMS];
        for (int d = 0; d < nd - 1; d++)
            shape[d] = xv->shape[d];
        shape[nd - 1] = wv->shape[0];
        s = filo_ag_reshape(out, nd, shape, y);
        filo_var_free(out);
    } else if (s == FILO_OK) {
        *y = out;
    }
    filo_var_free(xc);
    filo_var_free(wc);
    filo_var_free(bc);
    filo_var_free(x2);
    return s;
}

static filo_status check_linear(const filo_nn_linear *m, filo_var *x, filo_var **y)
{
    if (!m || !x || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, x and y must not be NULL");
    if (!m->weight)
        return FILO_FAIL(FILO_ERR_STATE, "the Linear has no weight (not initialized)");
    return FILO_OK;
}

filo_status filo_nn_linear_forward(const filo_nn_linear *m, const filo_nn_ctx *ctx, filo_var *x, filo_var **y)
{
    FILO_TRY(check_linear(m, x, y));
    return filo_nn_affine(ctx, x, m->weight, m->bias, m->bias ? FILO_MATMUL_EPILOGUE_BIAS : FILO_MATMUL_EPILOGUE_NONE,
                          y);
}

filo_status filo_nn_linear_forward_act(const filo_nn_linear *m, const filo_nn_ctx *ctx, filo_var *x,
                                       filo_activation act, filo_var **y)
{
    FILO_TRY(check_linear(m, x, y));
    if ((int)act < 0 || act > FILO_ACT_NONE)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown activation %d", (int)act);
    if (act == FILO_ACT_GELU && m->bias)
        return filo_nn_affine(ctx, x, m->weight, m->bias, FILO_MATMUL_EPILOGUE_BIAS_GELU, y);
    filo_var *h = NULL;
    filo_status s;
    /* The tanh GELU has no matmul epilogue: the bias goes into the fused bias + GELU op instead
     * (it takes an f32 bias with a bf16/f16 input). */
    if (act == FILO_ACT_GELU_TANH && m->bias) {
        FILO_TRY(filo_nn_affine(ctx, x, m->weight, NULL, FILO_MATMUL_EPILOGUE_NONE, &h));
        s = filo_ag_bias_gelu(h, m->bias, 1, y);
    } else {
        FILO_TRY(filo_nn_linear_forward(m, ctx, x, &h));
        s = filo_nn_activate(act, h, y);
    }
    filo_var_free(h);
    return s;
}

filo_status filo_nn_linear_dropout_residual(const filo_nn_linear *m, const filo_nn_ctx *ctx, filo_var *x, double p,
                                            filo_var *residual, filo_var **y)
{
    FILO_TRY(check_linear(m, x, y));
    FILO_TRY(filo_nn_ctx_check(ctx));
    double pe = ctx->training ? p : 0.0;
    if (pe == 0.0 && !residual)
        return filo_nn_linear_forward(m, ctx, x, y);
    if (pe > 0.0 && !ctx->gen)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "training with dropout p = %g needs ctx->gen", pe);
    filo_var *proj = NULL, *projc = NULL;
    FILO_TRY(filo_nn_affine(ctx, x, m->weight, NULL, FILO_MATMUL_EPILOGUE_NONE, &proj));
    filo_status s = residual ? filo_nn_cast_to(proj, filo_var_value(residual)->dtype, &projc)
                             : (projc = filo_var_retain(proj), FILO_OK);
    if (s == FILO_OK)
        s = filo_ag_bias_dropout_residual(projc, m->bias, residual, pe, pe > 0.0 ? ctx->gen : NULL, y);
    filo_var_free(proj);
    filo_var_free(projc);
    return s;
}
