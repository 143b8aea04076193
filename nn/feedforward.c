/* FeedForward: dropout(act(x W1^T + b1) W2^T + b2), with the activation in the first matmul's
 * epilogue and the second bias fused with the dropout. */
#include "error.h"
#include "nn_internal.h"

filo_status filo_nn_feedforward_init(filo_nn_feedforward *m, filo_params *ps, const char *up_name,
                                     const char *down_name, int64_t dim, int64_t hidden, filo_activation act,
                                     double dropout)
{
    if (!m || !ps || !up_name || !down_name)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, ps, up_name and down_name must not be NULL");
    if ((int)act < 0 || act > FILO_ACT_NONE)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown activation %d", (int)act);
    if (!(dropout >= 0.0 && dropout <= 1.0))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dropout = %g is outside [0, 1]", dropout);
    m->act = act;
    m->dropout = dropout;
    FILO_TRY(filo_nn_linear_init(&m->up, ps, up_name, dim, hidden, 1));
    return filo_nn_linear_init(&m->down, ps, down_name, hidden, dim, 1);
}

filo_status filo_nn_feedforward_forward(const filo_nn_feedforward *m, const filo_nn_ctx *ctx, filo_var *x,
                                        filo_var **y)
{
    if (!m || !x || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, x and y must not be NULL");
    filo_var *h;
    FILO_TRY(filo_nn_linear_forward_act(&m->up, ctx, x, m->act, &h));
    filo_status s = filo_nn_linear_dropout_residual(&m->down, ctx, h, m->dropout, NULL, y);
    filo_var_free(h);
    return s;
}
