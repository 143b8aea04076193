/* Variables and nodes: creation, reference counting, gradients of leaves, hooks, grad mode. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "filo/elementwise.h"
#include "node.h"

typedef struct hook {
    filo_grad_hook fn;
    void *user;
} hook;

struct filo_var {
    int refcount;
    filo_tensor *value;
    filo_tensor *grad;
    int requires_grad;
    filo_node *grad_fn; /* NULL for leaves */
    int slot;           /* which output of grad_fn */
    char *name;
    hook *hooks;
    int n_hooks;
};

static int64_t live_vars, live_nodes;
static uint64_t next_seq;
static _Thread_local int grad_disabled;

int64_t filo_autograd_live_vars(void) { return __atomic_load_n(&live_vars, __ATOMIC_RELAXED); }
int64_t filo_autograd_live_nodes(void) { return __atomic_load_n(&live_nodes, __ATOMIC_RELAXED); }

int filo_grad_enabled(void) { return !grad_disabled; }

int filo_grad_set_enabled(int enabled)
{
    int prev = !grad_disabled;
    grad_disabled = !enabled;
    return prev;
}

/* A variable taking over `value`. */
static filo_status var_wrap(filo_tensor *value, int requires_grad, filo_var **out)
{
    filo_var *v = calloc(1, sizeof *v);
    if (!v) {
        filo_tensor_free(value);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for a variable");
    }
    v->refcount = 1;
    v->value = value;
    v->requires_grad = requires_grad;
    __atomic_add_fetch(&live_vars, 1, __ATOMIC_RELAXED);
    *out = v;
    return FILO_OK;
}

filo_status filo_var_new(const filo_tensor *value, int requires_grad, filo_var **out)
{
    if (!value || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "value and out must not be NULL");
    if (requires_grad && !filo_dtype_is_float(value->dtype))
        return FILO_FAIL(FILO_ERR_DTYPE, "only floating-point variables can require a gradient, not %s",
                         filo_dtype_name(value->dtype));
    filo_tensor *alias;
    FILO_TRY(filo_tensor_alias(value, &alias));
    return var_wrap(alias, requires_grad != 0, out);
}

filo_var *filo_var_retain(filo_var *v)
{
    if (v)
        __atomic_add_fetch(&v->refcount, 1, __ATOMIC_RELAXED);
    return v;
}

void filo_var_free(filo_var *v)
{
    if (!v || __atomic_sub_fetch(&v->refcount, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    filo_tensor_free(v->value);
    filo_tensor_free(v->grad);
    free(v->name);
    free(v->hooks);
    filo_node_release(v->grad_fn);
    free(v);
    __atomic_sub_fetch(&live_vars, 1, __ATOMIC_RELAXED);
}

filo_tensor *filo_var_value(const filo_var *v) { return v ? v->value : NULL; }
filo_tensor *filo_var_grad(const filo_var *v) { return v ? v->grad : NULL; }
int filo_var_requires_grad(const filo_var *v) { return v && v->requires_grad; }
int filo_var_is_leaf(const filo_var *v) { return v && !v->grad_fn; }
const char *filo_var_op_name(const filo_var *v) { return v && v->grad_fn ? v->grad_fn->name : NULL; }
const char *filo_var_name(const filo_var *v) { return v ? v->name : NULL; }

filo_node *filo_var_grad_fn(const filo_var *v, int *slot)
{
    if (slot)
        *slot = v->slot;
    return v->grad_fn;
}

filo_status filo_var_set_requires_grad(filo_var *v, int requires_grad)
{
    if (!v)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "v must not be NULL");
    if (v->grad_fn)
        return FILO_FAIL(FILO_ERR_STATE, "requires_grad of a non-leaf variable (made by '%s') follows its inputs",
                         v->grad_fn->name);
    if (requires_grad && !filo_dtype_is_float(v->value->dtype))
        return FILO_FAIL(FILO_ERR_DTYPE, "only floating-point variables can require a gradient, not %s",
                         filo_dtype_name(v->value->dtype));
    v->requires_grad = requires_grad != 0;
    return FILO_OK;
}

void filo_var_zero_grad(filo_var *v)
{
    if (!v)
        return;
    filo_tensor_free(v->grad);
    v->grad = NULL;
}

filo_status filo_var_set_grad(filo_var *v, const filo_tensor *grad)
{
    if (!v)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "v must not be NULL");
    filo_tensor *g = NULL;
    if (grad) {
        char want[96], got[96];
        if (grad->dtype != v->value->dtype || !filo_device_equal(grad->device, v->value->device) ||
            grad->ndim != v->value->ndim || memcmp(grad->shape, v->value->shape, sizeof(int64_t) * grad->ndim))
            return FILO_FAIL(FILO_ERR_SHAPE, "gradient %s does not match the variable %s",
                             filo_tensor_describe(grad, got, sizeof got),
                             filo_tensor_describe(v->value, want, sizeof want));
        FILO_TRY(filo_tensor_alias(grad, &g));
    }
    filo_tensor_free(v->grad);
    v->grad = g;
    return FILO_OK;
}

filo_status filo_var_detach(const filo_var *v, filo_var **out)
{
    if (!v)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "v must not be NULL");
    return filo_var_new(v->value, 0, out);
}

filo_status filo_var_set_name(filo_var *v, const char *name)
{
    if (!v)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "v must not be NULL");
    char *copy = NULL;
    if (name && !(copy = strdup(name)))
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    free(v->name);
    v->name = copy;
    return FILO_OK;
}

filo_status filo_var_add_hook(filo_var *leaf, filo_grad_hook fn, void *user)
{
    if (!leaf || !fn)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "leaf and fn must not be NULL");
    if (leaf->grad_fn)
        return FILO_FAIL(FILO_ERR_STATE, "hooks go on leaves; this variable was made by '%s'", leaf->grad_fn->name);
    hook *h = realloc(leaf->hooks, sizeof *h * (size_t)(leaf->n_hooks + 1));
    if (!h)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    h[leaf->n_hooks++] = (hook){fn, user};
    leaf->hooks = h;
    return FILO_OK;
}

void filo_var_clear_hooks(filo_var *leaf)
{
    if (!leaf)
        return;
    free(leaf->hooks);
    leaf->hooks = NULL;
    leaf->n_hooks = 0;
}

filo_status filo_var_run_hooks(filo_var *leaf)
{
    for (int i = 0; i < leaf->n_hooks; i++) {
        filo_status s = leaf->hooks[i].fn(leaf, leaf->grad, leaf->hooks[i].user);
        if (s != FILO_OK)
            return filo_error_wrap(s, "a gradient hook");
    }
    return FILO_OK;
}

filo_status filo_var_accumulate_grad(filo_var *leaf, const filo_tensor *g)
{
    filo_tensor *value = leaf->value;
    if (g->dtype != value->dtype || g->ndim != value->ndim ||
        memcmp(g->shape, value->shape, sizeof(int64_t) * g->ndim) || !filo_device_equal(g->device, value->device)) {
        char a[96], b[96];
        return FILO_FAIL(FILO_ERR_INTERNAL, "gradient %s does not fit the leaf %s",
                         filo_tensor_describe(g, a, sizeof a), filo_tensor_describe(value, b, sizeof b));
    }
    if (!leaf->grad) {
        /* The leaf owns a contiguous copy: the incoming tensor may be shared with other edges. */
        return filo_tensor_to(g, value->device, &leaf->grad);
    }
    /* Accumulate in place, so the gradient keeps its address (buckets and captured graphs hold it). */
    filo_tensor *sum;
    FILO_TRY(filo_binary(FILO_BINARY_ADD, leaf->grad, g, &sum));
    filo_status s = filo_tensor_copy(leaf->grad, sum);
    filo_tensor_free(sum);
    return s;
}

/* ---- nodes ---- */

filo_status filo_node_begin(const char *name, filo_backward_fn backward, int n_inputs, filo_var *const *inputs,
                            int n_outputs, size_t ctx_bytes, filo_node **out)
{
    *out = NULL;
    if (grad_disabled)
        return FILO_OK;
    int any = 0;
    for (int i = 0; i < n_inputs; i++)
        any |= inputs[i] && inputs[i]->requires_grad;
    if (!any)
        return FILO_OK;
    filo_node *n = calloc(1, sizeof *n);
    if (!n)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory recording '%s'", name);
    n->name = name;
    n->backward = backward;
    n->refcount = 1;
    n->seq = __atomic_fetch_add(&next_seq, 1, __ATOMIC_RELAXED);
    n->n_inputs = n_inputs;
    n->n_outputs = n_outputs;
    __atomic_add_fetch(&live_nodes, 1, __ATOMIC_RELAXED);
    n->next = calloc((size_t)(n_inputs ? n_inputs : 1), sizeof *n->next);
    n->outputs = calloc((size_t)(n_outputs ? n_outputs : 1), sizeof *n->outputs);
    n->ctx = calloc(1, ctx_bytes ? ctx_bytes : 1);
    if (!n->next || !n->outputs || !n->ctx) {
        filo_node_release(n);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory recording '%s'", name);
    }
    filo_device device = filo_cpu();
    for (int i = 0; i < n_inputs; i++) {
        filo_var *in = inputs[i];
        if (!in || !in->requires_grad)
            continue;
        device = in->value->device;
        if (in->grad_fn) {
            n->next[i].node = filo_node_retain(in->grad_fn);
            n->next[i].slot = in->slot;
        } else {
            n->next[i].leaf = filo_var_retain(in);
        }
    }
    if (device.type == FILO_DEVICE_CUDA) {
        filo_status s = filo_stream_current(device, &n->stream);
        if (s != FILO_OK) {
            filo_node_release(n);
            return s;
        }
    }
    *out = n;
    return FILO_OK;
}

filo_status filo_node_save(filo_node *n, const filo_tensor *t) { return filo_node_save_at(n, t, NULL); }

filo_status filo_node_save_at(filo_node *n, const filo_tensor *t, int *index)
{
    if (n->n_saved == FILO_NODE_MAX_SAVED)
        return FILO_FAIL(FILO_ERR_INTERNAL, "'%s' saves more than %d tensors", n->name, FILO_NODE_MAX_SAVED);
    FILO_TRY(filo_tensor_alias(t, &n->saved[n->n_saved]));
    if (index)
        *index = n->n_saved;
    n->n_saved++;
    return FILO_OK;
}

const filo_tensor *filo_node_saved(const filo_node *n, int index)
{
    return index >= 0 && index < n->n_saved ? n->saved[index] : NULL;
}

int filo_node_needs_grad(const filo_node *n, int input)
{
    return input >= 0 && input < n->n_inputs && (n->next[input].node || n->next[input].leaf);
}

filo_status filo_node_finish(filo_node *n, filo_status status, int n_outputs, filo_tensor **values, filo_var **outs)
{
    int made = 0;
    if (status == FILO_OK && n && n->n_outputs != n_outputs)
        status = FILO_FAIL(FILO_ERR_INTERNAL, "'%s' began with %d outputs and finished with %d", n->name,
                           n->n_outputs, n_outputs);
    for (; status == FILO_OK && made < n_outputs; made++) {
        filo_tensor *value = values[made];
        values[made] = NULL;
        status = var_wrap(value, n != NULL, &outs[made]);
        if (status != FILO_OK)
            break;
        if (n) {
            /* An op whose inputs are all on the CPU but whose output is on CUDA (a copy to the
             * device) runs on that device's current stream. */
            if (!n->stream && value->device.type == FILO_DEVICE_CUDA)
                status = filo_stream_current(value->device, &n->stream);
            filo_output_meta *m = &n->outputs[made];
            m->dtype = value->dtype;
            m->device = value->device;
            m->ndim = value->ndim;
            memcpy(m->shape, value->shape, sizeof(int64_t) * (size_t)value->ndim);
            outs[made]->grad_fn = filo_node_retain(n);
            outs[made]->slot = made;
        }
    }
    if (status != FILO_OK) {
        for (int i = 0; i < made; i++) {
            filo_var_free(outs[i]);
            outs[i] = NULL;
        }
        for (int i = 0; i < n_outputs; i++) {
            filo_tensor_free(values[i]);
            values[i] = NULL;
        }
    }
    filo_node_release(n);
    return status;
}

filo_node *filo_node_retain(filo_node *n)
{
    if (n)
        __atomic_add_fetch(&n->refcount, 1, __ATOMIC_RELAXED);
    return n;
}

void filo_node_release_saved(filo_node *n)
{
    for (int i = 0; i < n->n_saved; i++) {
        filo_tensor_free(n->saved[i]);
        n->saved[i] = NULL;
    }
    n->n_saved = 0;
    n->released = 1;
}

/* Iterative, so a long chain (an RNN over many steps) does not recurse once per node. */
void filo_node_release(filo_node *n)
{
    filo_node **stack = NULL;
    size_t depth = 0, cap = 0;
    while (n) {
        if (__atomic_sub_fetch(&n->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
            for (int i = 0; i < n->n_inputs; i++) {
                filo_var_free(n->next[i].leaf);
                if (!n->next[i].node)
                    continue;
                if (depth == cap) {
                    size_t c = cap ? 2 * cap : 16;
                    filo_node **grown = realloc(stack, c * sizeof *grown);
                    if (!grown) {
                        filo_node_release(n->next[i].node); /* out of memory: recurse instead */
                        continue;
                    }
                    stack = grown;
                    cap = c;
                }
                stack[depth++] = n->next[i].node;
            }
            for (int i = 0; i < n->n_saved; i++)
                filo_tensor_free(n->saved[i]);
            if (n->ctx_free && n->ctx)
                n->ctx_free(n->ctx);
            free(n->ctx);
            free(n->next);
            free(n->outputs);
            free(n);
            __atomic_sub_fetch(&live_nodes, 1, __ATOMIC_RELAXED);
        }
        n = depth ? stack[--depth] : NULL;
    }
    free(stack);
}
