/* Differentiable LayerNorm and RMSNorm over the fused norm kernels, with the optional fused
 * residual add and its h = x + residual output. */
#include "error.h"
#include "filo/ag.h"
#include "filo/norm.h"
#include "node.h"

/* The node's inputs: x, residual, gamma, beta (LayerNorm only). */
enum { IN_X, IN_RESIDUAL, IN_GAMMA, IN_BETA };
/* What the forward saved, in this order; MEAN only for LayerNorm. */
enum { SAVED_H, SAVED_GAMMA, SAVED_RSTD, SAVED_MEAN };

typedef struct norm_ctx {
    int rms;
} norm_ctx;

static filo_status norm_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const norm_ctx *c = n->ctx;
    const filo_tensor *h = filo_node_saved(n, SAVED_H), *gamma = filo_node_saved(n, SAVED_GAMMA);
    const filo_tensor *rstd = filo_node_saved(n, SAVED_RSTD);
    int want_beta = filo_node_needs_grad(n, IN_BETA);
    filo_tensor *dx = NULL, *dgamma = NULL, *dbeta = NULL;
    filo_status s = c->rms ? filo_rmsnorm_backward(grad_out[0], h, rstd, gamma, &dx, &dgamma)
                           : filo_layernorm_backward(grad_out[0], h, filo_node_saved(n, SAVED_MEAN), rstd, gamma,
                                                     &dx, &dgamma, want_beta ? &dbeta : NULL);
    /* h = x + residual was an output too: its gradient reaches x and residual unchanged. */
    if (s == FILO_OK && n->n_outputs == 2) {
        filo_tensor *sum = NULL;
        s = filo_binary(FILO_BINARY_ADD, dx, grad_out[1], &sum);
        filo_tensor_free(dx);
        dx = sum;
    }
    if (s == FILO_OK && filo_node_needs_grad(n, IN_RESIDUAL))
        s = filo_tensor_alias(dx, &grad_in[IN_RESIDUAL]);
    if (s == FILO_OK && filo_node_needs_grad(n, IN_X)) {
        grad_in[IN_X] = dx;
        dx = NULL;
    }
    if (s == FILO_OK && filo_node_needs_grad(n, IN_GAMMA)) {
        grad_in[IN_GAMMA] = dgamma;
        dgamma = NULL;
    }
    if (s == FILO_OK && want_beta) {
        grad_in[IN_BETA] = dbeta;
        dbeta = NULL;
    }
    filo_tensor_free(dx);
    filo_tensor_free(dgamma);
    filo_tensor_free(dbeta);
    return s;
}

static filo_status norm_op(int rms, filo_var *x, filo_var *residual, filo_var *gamma, filo_var *beta, double eps,
                           filo_var **y, filo_var **h_out)
{
    if (!x || !gamma || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x, gamma and y must not be NULL");
    if (h_out && !residual)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "h_out (x + residual) needs a residual");
    const filo_tensor *xv = filo_var_value(x), *gv = filo_var_value(gamma);
    const filo_tensor *rv = residual ? filo_var_value(residual) : NULL;
    filo_tensor *outs[2] = {NULL, NULL}, *mean = NULL, *rstd = NULL;
    if (rms)
        FILO_TRY(filo_rmsnorm_forward(xv, rv, gv, eps, &outs[0], rv ? &outs[1] : NULL, &rstd));
    else
        FILO_TRY(filo_layernorm_forward(xv, rv, gv, beta ? filo_var_value(beta) : NULL, eps, &outs[0],
                                        rv ? &outs[1] : NULL, &mean, &rstd));
    int n_out = h_out ? 2 : 1;
    filo_var *in[4] = {x, residual, gamma, beta};
    filo_node *n;
    filo_status s = filo_node_begin(rms ? "rmsnorm" : "layernorm", norm_backward, rms ? 3 : 4, in, n_out,
                                    sizeof(norm_ctx), &n);
    if (s == FILO_OK && n) {
        ((norm_ctx *)n->ctx)->rms = rms;
        /* The backward normalizes what the forward normalized: h when the residual was fused. */
        s = filo_node_save(n, outs[1] ? outs[1] : xv);
        if (s == FILO_OK)
            s = filo_node_save(n, gv);
        if (s == FILO_OK)
            s = filo_node_save(n, rstd);
        if (s == FILO_OK && !rms)
            s = filo_node_save(n, mean);
    }
    filo_tensor_free(mean);
    filo_tensor_free(rstd);
    if (!h_out) {
        filo_tensor_free(outs[1]);
        outs[1] = NULL;
    }
    filo_var *res[2] = {NULL, NULL};
    s = filo_node_finish(n, s, n_out, outs, res);
    if (s == FILO_OK) {
        *y = res[0];
        if (h_out)
            *h_out = res[1];
    }
    return s;
}

filo_status filo_ag_layernorm(filo_var *x, filo_var *residual, filo_var *gamma, filo_var *beta, double eps,
                              filo_var **y, filo_var **h_out)
{
    return norm_op(0, x, residual, gamma, beta, eps, y, h_out);
}

filo_status filo_ag_rmsnorm(filo_var *x, filo_var *residual, filo_var *gamma, double eps, filo_var **y,
                            filo_var **h_out)
{
    return norm_op(1, x, residual, gamma, NULL, eps, y, h_out);
}
