/* LayerNorm and RMSNorm modules over the fused norm op (with its residual add and h output).
 * Under autocast they compute in f32 without a cast pass: the op reads a bf16/f16 x with the f32
 * gain directly and returns x's dtype. Only when x and the residual differ in dtype (a bf16
 * sublayer output on an f32 residual stream) is the narrower one cast up, so the stream stays f32. */
#include "error.h"
#include "nn_internal.h"

filo_status filo_nn_layernorm_init(filo_nn_layernorm *m, filo_params *ps, const char *prefix, int64_t dim, double eps)
{
    if (!m || !ps)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m and ps must not be NULL");
    if (dim <= 0 || !(eps >= 0.0))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dim = %lld must be positive and eps = %g >= 0", (long long)dim, eps);
    *m = (filo_nn_layernorm){NULL, NULL, dim, eps};
    char name[FILO_NN_NAME_MAX];
    FILO_TRY(filo_params_create(ps, filo_param_name_join(name, sizeof name, prefix, "weight"), 1, &dim,
                                (filo_init){FILO_INIT_ONES, 0, 0}, FILO_PARAM_NORM, &m->weight));
    return filo_params_create(ps, filo_param_name_join(name, sizeof name, prefix, "bias"), 1, &dim,
                              (filo_init){FILO_INIT_ZEROS, 0, 0}, FILO_PARAM_NORM, &m->bias);
}

filo_status filo_nn_rmsnorm_init(filo_nn_rmsnorm *m, filo_params *ps, const char *prefix, int64_t dim, double eps)
{
    if (!m || !ps)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m and ps must not be NULL");
    if (dim <= 0 || !(eps >= 0.0))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dim = %lld must be positive and eps = %g >= 0", (long long)dim, eps);
    *m = (filo_nn_rmsnorm){NULL, dim, eps};
    char name[FILO_NN_NAME_MAX];
    return filo_params_create(ps, filo_param_name_join(name, sizeof name, prefix, "weight"), 1, &dim,
                              (filo_init){FILO_INIT_ONES, 0, 0}, FILO_PARAM_NORM, &m->weight);
}

/* x and residual in one dtype: f32 when they differ (or when the norm's gain needs it). */
static filo_status norm_inputs(const filo_nn_ctx *ctx, int64_t dim, filo_var *x, filo_var *residual, filo_var **xc,
                               filo_var **rc)
{
    const filo_tensor *xv = filo_var_value(x);
    char buf[96];
    if (xv->ndim < 1 || xv->shape[xv->ndim - 1] != dim)
        return FILO_FAIL(FILO_ERR_SHAPE, "x is %s; its last dim must be %lld", filo_tensor_describe(xv, buf, sizeof buf),
                         (long long)dim);
    filo_dtype dt = xv->dtype;
    if (residual && filo_var_value(residual)->dtype != dt) {
        if (ctx->autocast == FILO_F32)
            return FILO_FAIL(FILO_ERR_DTYPE, "x is %s but the residual is %s", filo_dtype_name(dt),
                             filo_dtype_name(filo_var_value(residual)->dtype));
        dt = FILO_F32;
    }
    FILO_TRY(filo_nn_cast_to(x, dt, xc));
    if (!residual)
        return FILO_OK;
    filo_status s = filo_nn_cast_to(residual, dt, rc);
    if (s != FILO_OK) {
        filo_var_free(*xc);
        *xc = NULL;
    }
    return s;
}

static filo_status norm_forward(int rms, const filo_nn_ctx *ctx, filo_var *gamma, filo_var *beta, int64_t dim,
                                double eps, filo_var *x, filo_var *residual, filo_var **y, filo_var **h_out)
{
    if (!x || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and y must not be NULL");
    FILO_TRY(filo_nn_ctx_check(ctx));
    if (!gamma)
        return FILO_FAIL(FILO_ERR_STATE, "the norm has no weight (not initialized)");
    if (h_out && !residual)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "h_out (x + residual) needs a residual");
    filo_var *xc = NULL, *rc = NULL;
    FILO_TRY(norm_inputs(ctx, dim, x, residual, &xc, &rc));
    filo_status s = rms ? filo_ag_rmsnorm(xc, rc, gamma, eps, y, h_out)
                        : filo_ag_layernorm(xc, rc, gamma, beta, eps, y, h_out);
    filo_var_free(xc);
    filo_var_free(rc);
    return s;
}

filo_status filo_nn_layernorm_forward(const filo_nn_layernorm *m, const filo_nn_ctx *ctx, filo_var *x,
                                      filo_var *residual, filo_var **y, filo_var **h_out)
{
    if (!m)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m is NULL");
    return norm_forward(0, ctx, m->weight, m->bias, m->dim, m->eps, x, residual, y, h_out);
}

filo_status filo_nn_rmsnorm_forward(const filo_nn_rmsnorm *m, const filo_nn_ctx *ctx, filo_var *x, filo_var *residual,
                                    filo_var **y, filo_var **h_out)
{
    if (!m)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m is NULL");
    return norm_forward(1, ctx, m->weight, NULL, m->dim, m->eps, x, residual, y, h_out);
}
