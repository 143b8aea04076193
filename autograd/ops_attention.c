/* Differentiable fused attention over filo_attention_forward / filo_attention_backward: the node
 * keeps q, k, v, the output, the log-sum-exp, the key lengths and the dropout the forward drew,
 * so the backward rebuilds the same masks without touching the generator. */
#include "error.h"
#include "filo/ag.h"
#include "filo/attention.h"
#include "node.h"

enum { SAVED_Q, SAVED_K, SAVED_V, SAVED_OUT, SAVED_LSE, SAVED_LENGTHS };

typedef struct attention_ctx {
    double scale;
    int causal;
    int has_lengths;
    filo_attention_dropout dropout;
} attention_ctx;

static filo_status attention_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const attention_ctx *c = n->ctx;
    filo_attention_mask mask = {
        .key_lengths = c->has_lengths ? filo_node_saved(n, SAVED_LENGTHS) : NULL,
        .causal = c->causal,
    };
    filo_tensor *d[3] = {NULL, NULL, NULL};
    filo_status s = filo_attention_backward(grad_out[0], filo_node_saved(n, SAVED_Q), filo_node_saved(n, SAVED_K),
                                            filo_node_saved(n, SAVED_V), filo_node_saved(n, SAVED_OUT),
                                            filo_node_saved(n, SAVED_LSE), &mask, c->scale, &c->dropout, &d[0],
                                            &d[1], &d[2]);
    for (int i = 0; i < 3; i++) {
        if (s == FILO_OK && filo_node_needs_grad(n, i)) {
            grad_in[i] = d[i];
            d[i] = NULL;
        }
        filo_tensor_free(d[i]);
    }
    return s;
}

filo_status filo_ag_attention(filo_var *q, filo_var *k, filo_var *v, const filo_attention_mask *mask, double scale,
                              double dropout_p, filo_generator *gen, filo_var **out)
{
    if (!q || !k || !v || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "q, k, v and out must not be NULL");
    const filo_tensor *qv = filo_var_value(q), *kv = filo_var_value(k), *vv = filo_var_value(v);
    filo_tensor *y, *lse;
    filo_attention_dropout dropout = {0};
    FILO_TRY(filo_attention_forward(qv, kv, vv, mask, scale, dropout_p, gen, &y, &lse, &dropout));
    filo_var *in[3] = {q, k, v};
    filo_node *n;
    filo_status s = filo_node_begin("attention", attention_backward, 3, in, 1, sizeof(attention_ctx), &n);
    if (s == FILO_OK && n) {
        attention_ctx *c = n->ctx;
        c->scale = scale;
        c->causal = mask ? mask->causal : 0;
        c->has_lengths = mask && mask->key_lengths;
        c->dropout = dropout;
        const filo_tensor *keep[6] = {qv, kv, vv, y, lse, c->has_lengths ? mask->key_lengths : NULL};
        for (int i = 0; i < 6 && s == FILO_OK && keep[i]; i++)
            s = filo_node_save(n, keep[i]);
    }
    filo_tensor_free(lse);
    return filo_node_finish(n, s, 1, &y, out);
}
