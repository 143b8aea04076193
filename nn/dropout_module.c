/* The Dropout module: PyTorch's nn.Dropout, active only in training mode. */
#include "error.h"
#include "nn_internal.h"

filo_status filo_nn_dropout_forward(const filo_nn_dropout *m, const filo_nn_ctx *ctx, filo_var *x, filo_var **y)
{
    if (!m || !x || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, x and y must not be NULL");
    FILO_TRY(filo_nn_ctx_check(ctx));
    if (!(m->p >= 0.0 && m->p <= 1.0))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dropout p = %g is outside [0, 1]", m->p);
    if (!ctx->training || m->p == 0.0) {
        *y = filo_var_retain(x);
        return FILO_OK;
    }
    if (!ctx->gen)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "training with dropout p = %g needs ctx->gen", m->p);
    return filo_ag_dropout(x, m->p, ctx->gen, y);
}
