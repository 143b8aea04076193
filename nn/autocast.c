/* The forward context and autocast's casting rules (torch.autocast's, made explicit): matmul-like
 * ops take the autocast dtype, norms, softmax and losses f32. */
#include "error.h"
#include "nn_internal.h"

filo_nn_ctx filo_nn_ctx_make(int training, filo_generator *gen)
{
    return (filo_nn_ctx){training, gen, FILO_F32};
}

filo_status filo_nn_ctx_check(const filo_nn_ctx *ctx)
{
    if (!ctx)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "ctx is NULL (use filo_nn_ctx_make)");
    if (ctx->autocast != FILO_F32 && ctx->autocast != FILO_BF16 && ctx->autocast != FILO_F16)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "ctx->autocast is %s; it must be f32 (off), bf16 or f16",
                         filo_dtype_name(ctx->autocast));
    return FILO_OK;
}

filo_status filo_nn_cast_to(filo_var *x, filo_dtype dtype, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    if (filo_var_value(x)->dtype == dtype) {
        *out = filo_var_retain(x);
        return FILO_OK;
    }
    return filo_ag_cast(x, dtype, out);
}

filo_status filo_autocast_for_matmul(const filo_nn_ctx *ctx, filo_var *x, filo_var **out)
{
    FILO_TRY(filo_nn_ctx_check(ctx));
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    if (ctx->autocast == FILO_F32 || !filo_dtype_is_float(filo_var_value(x)->dtype)) {
        *out = filo_var_retain(x);
        return FILO_OK;
    }
    return filo_nn_cast_to(x, ctx->autocast, out);
}

filo_status filo_autocast_for_f32(const filo_nn_ctx *ctx, filo_var *x, filo_var **out)
{
    FILO_TRY(filo_nn_ctx_check(ctx));
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    filo_dtype dt = filo_var_value(x)->dtype;
    if (ctx->autocast == FILO_F32 || (dt != FILO_BF16 && dt != FILO_F16)) {
        *out = filo_var_retain(x);
        return FILO_OK;
    }
    return filo_ag_cast(x, FILO_F32, out);
}
