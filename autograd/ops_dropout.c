/* Differentiable dropout and the fused pointwise layers: dropout, bias + GELU, and
 * bias + dropout + residual. The backwards are the op library's fused backward kernels; a
 * dropout node keeps only the mask's (seed, offset, p, numel), never the mask. */
#include "error.h"
#include "filo/ag.h"
#include "filo/bias_act.h"
#include "filo/dropout.h"
#include "node.h"

/* ---- dropout ---- */

typedef struct dropout_ctx {
    filo_dropout_state state;
} dropout_ctx;

static filo_status dropout_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const dropout_ctx *c = n->ctx;
    /* p == 0 is the identity: the gradient passes through without a copy. */
    if (c->state.p == 0.0)
        return filo_tensor_alias(grad_out[0], &grad_in[0]);
    return filo_dropout_backward(grad_out[0], &c->state, &grad_in[0]);
}

filo_status filo_ag_dropout(filo_var *x, double p, filo_generator *gen, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    filo_tensor *y;
    filo_dropout_state state;
    FILO_TRY(filo_dropout(filo_var_value(x), p, gen, &y, &state));
    filo_node *n;
    filo_status s = filo_node_begin("dropout", dropout_backward, 1, &x, 1, sizeof(dropout_ctx), &n);
    if (s == FILO_OK && n)
        ((dropout_ctx *)n->ctx)->state = state;
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- bias + GELU ---- */

typedef struct bias_gelu_ctx {
    int approximate;
} bias_gelu_ctx;

/* Saved: x, then the bias when there is one (the backward recomputes x + bias). */
static filo_status bias_gelu_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const bias_gelu_ctx *c = n->ctx;
    const filo_tensor *x = filo_node_saved(n, 0), *bias = filo_node_saved(n, 1);
    filo_tensor *dx = NULL, *dbias = NULL;
    /* The kernel gives dx always and dbias whenever there is a bias: keep what is needed. */
    FILO_TRY(filo_bias_gelu_backward(grad_out[0], x, bias, c->approximate, &dx, bias ? &dbias : NULL));
    if (filo_node_needs_grad(n, 0))
        grad_in[0] = dx;
    else
        filo_tensor_free(dx);
    if (filo_node_needs_grad(n, 1))
        grad_in[1] = dbias;
    else
        filo_tensor_free(dbias);
    return FILO_OK;
}

filo_status filo_ag_bias_gelu(filo_var *x, filo_var *bias, int approximate, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    const filo_tensor *xv = filo_var_value(x), *bv = bias ? filo_var_value(bias) : NULL;
    filo_tensor *y;
    FILO_TRY(filo_bias_gelu_forward(xv, bv, approximate, &y));
    filo_var *in[2] = {x, bias};
    filo_node *n;
    filo_status s = filo_node_begin("bias_gelu", bias_gelu_backward, 2, in, 1, sizeof(bias_gelu_ctx), &n);
    if (s == FILO_OK && n) {
        ((bias_gelu_ctx *)n->ctx)->approximate = approximate;
        s = filo_node_save(n, xv);
        if (s == FILO_OK && bv)
            s = filo_node_save(n, bv);
    }
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- bias + dropout + residual ---- */

typedef struct bias_dropout_residual_ctx {
    filo_dropout_state state;
    filo_dtype bias_dtype; /* when there is a bias */
} bias_dropout_residual_ctx;

/* Inputs: x, bias, residual (bias and residual may be NULL). */
static filo_status bias_dropout_residual_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const bias_dropout_residual_ctx *c = n->ctx;
    const filo_tensor *g = grad_out[0];
    filo_status s = FILO_OK;
    if (filo_node_needs_grad(n, 0) || filo_node_needs_grad(n, 1)) {
        /* with_bias 2 asks for an f32 dbias: the bias of a bf16/f16 x may be f32. */
        int with_bias = !filo_node_needs_grad(n, 1) ? 0 : c->bias_dtype == g->dtype ? 1 : 2;
        filo_tensor *dx = NULL, *dbias = NULL;
        FILO_TRY(filo_bias_dropout_residual_backward(g, &c->state, with_bias, &dx, &dbias));
        if (filo_node_needs_grad(n, 0))
            grad_in[0] = dx;
        else
            filo_tensor_free(dx);
        grad_in[1] = dbias;
    }
    if (filo_node_needs_grad(n, 2))
        s = filo_tensor_alias(g, &grad_in[2]);
    return s;
}

filo_status filo_ag_bias_dropout_residual(filo_var *x, filo_var *bias, filo_var *residual, double p,
                                          filo_generator *gen, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    const filo_tensor *bv = bias ? filo_var_value(bias) : NULL;
    filo_tensor *y;
    filo_dropout_state state;
    FILO_TRY(filo_bias_dropout_residual_forward(filo_var_value(x), bv, residual ? filo_var_value(residual) : NULL, p,
                                                gen, &y, &state));
    filo_var *in[3] = {x, bias, residual};
    filo_node *n;
    filo_status s = filo_node_begin("bias_dropout_residual", bias_dropout_residual_backward, 3, in, 1,
                                    sizeof(bias_dropout_residual_ctx), &n);
    if (s == FILO_OK && n) {
        bias_dropout_residual_ctx *c = n->ctx;
        c->state = state;
        if (bv)
            c->bias_dtype = bv->dtype;
    }
    return filo_node_finish(n, s, 1, &y, out);
}
