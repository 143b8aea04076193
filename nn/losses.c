/* Differentiable losses (include/filo/losses.h) over the fused kernels of kernels/losses.c and
 * kernels/loss.c. A node keeps only its inputs (logits, target, weights): the backward kernel
 * recomputes the sigmoid from the logits instead of saving anything of the logits' size. */
#include "error.h"
#include "filo/ag.h"
#include "filo/losses.h"
#include "losses_backend.h"
#include "../autograd/node.h"

filo_status filo_loss_cross_entropy(filo_var *logits, const filo_tensor *target, const filo_cross_entropy_options *opts,
                                    filo_var **loss)
{
    return filo_ag_cross_entropy(logits, target, opts, loss);
}

filo_bce_options filo_bce_defaults(void)
{
    filo_bce_options o = {.reduction = FILO_LOSS_MEAN, .weight = NULL, .pos_weight = NULL};
    return o;
}

/* The forward's arguments; the tensor pointers are set again from the saved tensors, whose
 * indices are kept (x, y, then weight and pos_weight when present; -1 when absent). */
typedef struct losses_ctx {
    filo_losses_args args;
    const char *op;
    int saved[4];
} losses_ctx;

static const filo_tensor *saved_or_null(const filo_node *n, int index)
{
    return index >= 0 ? filo_node_saved(n, index) : NULL;
}

static filo_status losses_node_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const losses_ctx *c = n->ctx;
    filo_losses_args a = c->args;
    a.x = saved_or_null(n, c->saved[0]);
    a.y = saved_or_null(n, c->saved[1]);
    a.weight = saved_or_null(n, c->saved[2]);
    a.pos_weight = saved_or_null(n, c->saved[3]);
    int want_dy = a.kind == FILO_LOSSES_MSE && n->n_inputs > 1 && filo_node_needs_grad(n, 1);
    return filo_losses_backward(c->op, &a, grad_out[0], filo_node_needs_grad(n, 0) ? &grad_in[0] : NULL,
                                want_dy ? &grad_in[1] : NULL);
}

/* Runs the forward kernel and records the node: inputs[0] the logits, inputs[1] MSE's target
 * variable or NULL. */
static filo_status record(const char *op, const char *name, filo_losses_args *a, int n_inputs, filo_var *const *inputs,
                          filo_var **loss)
{
    filo_tensor *y = NULL;
    FILO_TRY(filo_losses_forward(op, a, &y));
    filo_node *n = NULL;
    filo_status s = filo_node_begin(name, losses_node_backward, n_inputs, inputs, 1, sizeof(losses_ctx), &n);
    if (s == FILO_OK && n) {
        losses_ctx *c = n->ctx;
        c->args = *a;
        c->args.x = c->args.y = c->args.weight = c->args.pos_weight = NULL;
        c->op = op;
        const filo_tensor *keep[4] = {a->x, a->y, a->weight, a->pos_weight};
        for (int i = 0; i < 4; i++) {
            c->saved[i] = -1;
            if (keep[i] && s == FILO_OK)
                s = filo_node_save_at(n, keep[i], &c->saved[i]);
        }
    }
    return filo_node_finish(n, s, 1, &y, loss);
}

filo_status filo_loss_bce_with_logits(filo_var *logits, const filo_tensor *target, const filo_bce_options *opts,
                                      filo_var **loss)
{
    if (!logits || !loss)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "logits and loss must not be NULL");
    filo_bce_options o = opts ? *opts : filo_bce_defaults();
    filo_losses_args a = {.kind = FILO_LOSSES_BCE, .reduction = o.reduction, .x = filo_var_value(logits),
                          .y = target, .weight = o.weight, .pos_weight = o.pos_weight};
    return record(__func__, "bce_with_logits", &a, 1, &logits, loss);
}

filo_status filo_loss_focal(filo_var *logits, const filo_tensor *target, double alpha, double gamma,
                            filo_loss_reduction reduction, filo_var **loss)
{
    if (!logits || !loss)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "logits and loss must not be NULL");
    filo_losses_args a = {.kind = FILO_LOSSES_FOCAL, .reduction = reduction, .x = filo_var_value(logits),
                          .y = target, .alpha = alpha, .gamma = gamma};
    return record(__func__, "sigmoid_focal_loss", &a, 1, &logits, loss);
}

filo_status filo_loss_mse(filo_var *input, filo_var *target, const filo_tensor *target_tensor,
                          filo_loss_reduction reduction, filo_var **loss)
{
    if (!input || !loss)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "input and loss must not be NULL");
    if ((target != NULL) == (target_tensor != NULL))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "give exactly one of target (a variable) and target_tensor, got %s",
                         target ? "both" : "neither");
    filo_losses_args a = {.kind = FILO_LOSSES_MSE, .reduction = reduction, .x = filo_var_value(input),
                          .y = target ? filo_var_value(target) : target_tensor};
    filo_var *inputs[2] = {input, target};
    return record(__func__, "mse_loss", &a, 2, inputs, loss);
}
