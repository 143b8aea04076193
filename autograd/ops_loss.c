/* Differentiable softmax cross-entropy over filo_cross_entropy_forward / _backward: the node
 * keeps the logits, the target, the per-row log-sum-exp and the class weights. */
#include "error.h"
#include "filo/ag.h"
#include "filo/loss.h"
#include "node.h"

enum { SAVED_LOGITS, SAVED_TARGET, SAVED_LSE, SAVED_WEIGHT };

/* The forward's options; the weight pointer is the saved tensor's, set again in the backward. */
typedef struct cross_entropy_ctx {
    filo_cross_entropy_options opts;
    int has_weight;
} cross_entropy_ctx;

static filo_status cross_entropy_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const cross_entropy_ctx *c = n->ctx;
    filo_cross_entropy_options o = c->opts;
    o.weight = c->has_weight ? filo_node_saved(n, SAVED_WEIGHT) : NULL;
    return filo_cross_entropy_backward(grad_out[0], filo_node_saved(n, SAVED_LOGITS), filo_node_saved(n, SAVED_TARGET),
                                       filo_node_saved(n, SAVED_LSE), &o, &grad_in[0]);
}

filo_status filo_ag_cross_entropy(filo_var *logits, const filo_tensor *target, const filo_cross_entropy_options *opts,
                                  filo_var **loss)
{
    if (!logits || !target || !loss)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "logits, target and loss must not be NULL");
    const filo_tensor *xv = filo_var_value(logits);
    filo_cross_entropy_options o = opts ? *opts : filo_cross_entropy_defaults();
    filo_tensor *y, *lse;
    FILO_TRY(filo_cross_entropy_forward(xv, target, &o, &y, &lse));
    filo_node *n;
    filo_status s = filo_node_begin("cross_entropy", cross_entropy_backward, 1, &logits, 1,
                                    sizeof(cross_entropy_ctx), &n);
    if (s == FILO_OK && n) {
        cross_entropy_ctx *c = n->ctx;
        c->opts = o;
        c->opts.weight = NULL;
        c->has_weight = o.weight != NULL;
        const filo_tensor *keep[4] = {xv, target, lse, o.weight};
        for (int i = 0; i < 4 && s == FILO_OK && keep[i]; i++)
            s = filo_node_save(n, keep[i]);
    }
    filo_tensor_free(lse);
    return filo_node_finish(n, s, 1, &y, loss);
}
