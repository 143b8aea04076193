/* Gradient checkpointing: one node stands for a whole sub-computation, saves only its inputs,
 * and recomputes the sub-graph during the backward (a nested backward through it). */
#include <stdlib.h>

#include "error.h"
#include "node.h"

typedef struct ckpt_ctx {
    filo_checkpoint_fn fn;
    void *user;
    filo_generator *gen;
    filo_generator gen_before; /* the generator's state when the forward started */
} ckpt_ctx;

static void free_vars(int n, filo_var **v)
{
    for (int i = 0; i < n; i++) {
        filo_var_free(v[i]);
        v[i] = NULL;
    }
}

static filo_status ckpt_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const ckpt_ctx *c = n->ctx;
    filo_var **leaves = calloc((size_t)n->n_inputs, sizeof *leaves);
    filo_var **outs = calloc((size_t)n->n_outputs, sizeof *outs);
    filo_var **roots = calloc((size_t)n->n_outputs, sizeof *roots);
    const filo_tensor **grads = calloc((size_t)n->n_outputs, sizeof *grads);
    filo_status s = leaves && outs && roots && grads ? FILO_OK : FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    for (int i = 0; i < n->n_inputs && s == FILO_OK; i++)
        s = filo_var_new(filo_node_saved(n, i), filo_node_needs_grad(n, i), &leaves[i]);

    /* Recompute with recording on, drawing the forward's random numbers again. */
    filo_generator after = {0};
    if (c->gen) {
        after = *c->gen;
        *c->gen = c->gen_before;
    }
    int prev = filo_grad_set_enabled(1);
    if (s == FILO_OK)
        s = c->fn(c->user, leaves, outs);
    filo_grad_set_enabled(prev);
    if (c->gen)
        *c->gen = after;

    int n_roots = 0;
    for (int o = 0; o < n->n_outputs && s == FILO_OK; o++) {
        if (!outs[o]) {
            s = FILO_FAIL(FILO_ERR_INVALID_ARG, "the checkpointed function left output %d unset on recompute", o);
        } else if (filo_var_requires_grad(outs[o])) {
            roots[n_roots] = outs[o];
            grads[n_roots++] = grad_out[o];
        }
    }
    if (s == FILO_OK && n_roots)
        s = filo_engine_run(n_roots, roots, grads, 0);
    for (int i = 0; i < n->n_inputs && s == FILO_OK; i++) {
        const filo_tensor *g = filo_var_grad(leaves[i]);
        if (filo_node_needs_grad(n, i) && g)
            s = filo_tensor_alias(g, &grad_in[i]);
    }
    if (leaves)
        free_vars(n->n_inputs, leaves);
    if (outs)
        free_vars(n->n_outputs, outs);
    free(leaves);
    free(outs);
    free(roots);
    free(grads);
    return s;
}

filo_status filo_checkpoint(filo_checkpoint_fn fn, void *user, filo_generator *gen, int n_inputs,
                            filo_var *const *inputs, int n_outputs, filo_var **outputs)
{
    if (!fn || n_inputs < 0 || n_outputs < 1 || (n_inputs && !inputs) || !outputs)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "fn, the inputs and at least one output are required");
    for (int o = 0; o < n_outputs; o++)
        outputs[o] = NULL;
    filo_node *n;
    FILO_TRY(filo_node_begin("checkpoint", ckpt_backward, n_inputs, inputs, n_outputs, sizeof(ckpt_ctx), &n));
    if (!n) /* nothing to recompute for: fn runs as usual (its parameters may still record a graph) */
        return fn(user, inputs, outputs);

    ckpt_ctx *c = n->ctx;
    c->fn = fn;
    c->user = user;
    c->gen = gen;
    if (gen)
        c->gen_before = *gen;
    filo_var **detached = calloc((size_t)(n_inputs ? n_inputs : 1), sizeof *detached);
    filo_var **inner = calloc((size_t)n_outputs, sizeof *inner);
    filo_tensor **values = calloc((size_t)n_outputs, sizeof *values);
    filo_status s = detached && inner && values ? FILO_OK : FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    for (int i = 0; i < n_inputs && s == FILO_OK; i++) {
        s = filo_node_save(n, filo_var_value(inputs[i]));
        if (s == FILO_OK)
            s = filo_var_detach(inputs[i], &detached[i]);
    }
    if (s == FILO_OK) {
        int prev = filo_grad_set_enabled(0);
        s = fn(user, detached, inner);
        filo_grad_set_enabled(prev);
    }
    for (int o = 0; o < n_outputs && s == FILO_OK; o++) {
        if (!inner[o])
            s = FILO_FAIL(FILO_ERR_INVALID_ARG, "the checkpointed function left output %d unset", o);
        else
            s = filo_tensor_alias(filo_var_value(inner[o]), &values[o]);
    }
    if (detached)
        free_vars(n_inputs, detached);
    if (inner)
        free_vars(n_outputs, inner);
    free(detached);
    free(inner);
    if (!values) {
        filo_node_release(n);
        return s;
    }
    s = filo_node_finish(n, s, n_outputs, values, outputs);
    free(values);
    return s;
}
