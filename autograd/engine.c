/* The backward engine: finds the nodes reachable from the roots, runs their backwards in
 * decreasing creation order (every consumer of a node was created after it, so this is a
 * reverse topological order), sums the gradients that reach one output, accumulates into
 * leaves, fires leaf hooks when a leaf's last feeding node has run, and frees saved tensors as
 * it goes. It keeps no global state, so a node's backward may run a nested backward
 * (checkpointing). */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "filo/elementwise.h"
#include "node.h"

/* Open-addressing map from a pointer to a small index, local to one run. */
typedef struct ptr_map {
    const void **keys;
    int *values;
    size_t cap;
    size_t count;
} ptr_map;

static size_t ptr_hash(const void *p, size_t cap)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (cap - 1);
}

static filo_status map_grow(ptr_map *m)
{
    size_t cap = m->cap ? 2 * m->cap : 64;
    const void **keys = calloc(cap, sizeof *keys);
    int *values = calloc(cap, sizeof *values);
    if (!keys || !values) {
        free(keys);
        free(values);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory walking the graph");
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t h = ptr_hash(m->keys[i], cap);
        while (keys[h])
            h = (h + 1) & (cap - 1);
        keys[h] = m->keys[i];
        values[h] = m->values[i];
    }
    free(m->keys);
    free(m->values);
    m->keys = keys;
    m->values = values;
    m->cap = cap;
    return FILO_OK;
}

/* -1 when absent. */
static int map_get(const ptr_map *m, const void *key)
{
    if (!m->cap)
        return -1;
    for (size_t h = ptr_hash(key, m->cap);; h = (h + 1) & (m->cap - 1)) {
        if (!m->keys[h])
            return -1;
        if (m->keys[h] == key)
            return m->values[h];
    }
}

static filo_status map_put(ptr_map *m, const void *key, int value)
{
    if (2 * (m->count + 1) > m->cap)
        FILO_TRY(map_grow(m));
    size_t h = ptr_hash(key, m->cap);
    while (m->keys[h] && m->keys[h] != key)
        h = (h + 1) & (m->cap - 1);
    if (!m->keys[h])
        m->count++;
    m->keys[h] = key;
    m->values[h] = value;
    return FILO_OK;
}

static void map_free(ptr_map *m)
{
    free(m->keys);
    free(m->values);
}

/* A gradient waiting for its node, with the stream it was computed on. */
typedef struct pending_grad {
    filo_tensor *grad;
    filo_stream *stream;
} pending_grad;

typedef struct run_state {
    filo_node **nodes;     /* reachable nodes, sorted by decreasing seq */
    int n_nodes;
    pending_grad **grads;  /* per node: n_outputs entries */
    ptr_map node_index;
    filo_var **leaves;
    int *leaf_pending;     /* edges from not-yet-run nodes into each leaf */
    int n_leaves;
    ptr_map leaf_index;
} run_state;

static int by_seq_desc(const void *a, const void *b)
{
    uint64_t x = (*(filo_node *const *)a)->seq, y = (*(filo_node *const *)b)->seq;
    return x < y ? 1 : x > y ? -1 : 0;
}

static filo_status push(void ***arr, int *n, int *cap, void *item)
{
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 32;
        void **grown = realloc(*arr, sizeof *grown * (size_t)c);
        if (!grown)
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory walking the graph");
        *arr = grown;
        *cap = c;
    }
    (*arr)[(*n)++] = item;
    return FILO_OK;
}

static filo_status add_leaf(run_state *st, filo_var *leaf, int *cap)
{
    int i = map_get(&st->leaf_index, leaf);
    if (i < 0) {
        FILO_TRY(push((void ***)&st->leaves, &st->n_leaves, cap, leaf));
        int *grown = realloc(st->leaf_pending, sizeof *grown * (size_t)*cap);
        if (!grown)
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory walking the graph");
        st->leaf_pending = grown;
        i = st->n_leaves - 1;
        st->leaf_pending[i] = 0;
        FILO_TRY(map_put(&st->leaf_index, leaf, i));
    }
    st->leaf_pending[i]++;
    return FILO_OK;
}

/* Depth-first collection of every node reachable from the roots, and of the leaves they feed. */
static filo_status collect(run_state *st, int n_roots, filo_node *const *roots)
{
    int cap = 0, leaf_cap = 0, stack_n = 0, stack_cap = 0;
    filo_node **stack = NULL;
    filo_status s = FILO_OK;
    for (int r = 0; r < n_roots && s == FILO_OK; r++) {
        if (!roots[r] || map_get(&st->node_index, roots[r]) >= 0)
            continue;
        s = map_put(&st->node_index, roots[r], 0);
        if (s == FILO_OK)
            s = push((void ***)&st->nodes, &st->n_nodes, &cap, roots[r]);
        if (s == FILO_OK)
            s = push((void ***)&stack, &stack_n, &stack_cap, roots[r]);
        while (s == FILO_OK && stack_n) {
            filo_node *n = stack[--stack_n];
            for (int i = 0; i < n->n_inputs && s == FILO_OK; i++) {
                filo_edge *e = &n->next[i];
                if (e->leaf) {
                    s = add_leaf(st, e->leaf, &leaf_cap);
                } else if (e->node && map_get(&st->node_index, e->node) < 0) {
                    s = map_put(&st->node_index, e->node, 0);
                    if (s == FILO_OK)
                        s = push((void ***)&st->nodes, &st->n_nodes, &cap, e->node);
                    if (s == FILO_OK)
                        s = push((void ***)&stack, &stack_n, &stack_cap, e->node);
                }
            }
        }
    }
    free(stack);
    FILO_TRY(s);
    qsort(st->nodes, (size_t)st->n_nodes, sizeof *st->nodes, by_seq_desc);
    st->grads = calloc((size_t)(st->n_nodes ? st->n_nodes : 1), sizeof *st->grads);
    if (!st->grads)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory walking the graph");
    for (int i = 0; i < st->n_nodes; i++) {
        FILO_TRY(map_put(&st->node_index, st->nodes[i], i));
        st->grads[i] = calloc((size_t)(st->nodes[i]->n_outputs ? st->nodes[i]->n_outputs : 1), sizeof(pending_grad));
        if (!st->grads[i])
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory walking the graph");
    }
    return FILO_OK;
}

static filo_stream *current_stream_of(filo_device device)
{
    filo_stream *s = NULL;
    if (device.type == FILO_DEVICE_CUDA && filo_stream_current(device, &s) != FILO_OK)
        return NULL;
    return s;
}

/* Makes g safe to use on `to` when it was computed on `from`: `to` waits for `from`'s work so far,
 * and the allocator keeps g's memory until `to` is done with it. */
static filo_status cross_stream(const filo_tensor *g, filo_stream *from, filo_stream *to)
{
    if (!from || !to || from == to)
        return FILO_OK;
    filo_event *ev;
    FILO_TRY(filo_event_create(g->device, &ev));
    filo_status s = filo_event_record(ev, from);
    if (s == FILO_OK)
        s = filo_stream_wait_event(to, ev);
    if (s == FILO_OK)
        s = filo_tensor_record_stream(g, to);
    filo_event_destroy(ev);
    return s;
}

/* Adds g (taken over) to a pending slot. */
static filo_status pending_add(pending_grad *p, filo_tensor *g, filo_stream *stream)
{
    if (!p->grad) {
        p->grad = g;
        p->stream = stream;
        return FILO_OK;
    }
    filo_status s = cross_stream(g, stream, p->stream);
    if (s == FILO_OK) {
        filo_stream *saved = current_stream_of(g->device);
        if (p->stream)
            s = filo_stream_set_current(g->device, p->stream);
        filo_tensor *sum = NULL;
        if (s == FILO_OK)
            s = filo_binary(FILO_BINARY_ADD, p->grad, g, &sum);
        if (p->stream)
            filo_stream_set_current(g->device, saved);
        if (s == FILO_OK) {
            filo_tensor_free(p->grad);
            p->grad = sum;
        }
    }
    filo_tensor_free(g);
    return s;
}

/* One edge into the leaf is done; the last one makes its gradient final and fires its hooks. */
static filo_status leaf_edge_done(run_state *st, filo_var *leaf)
{
    int i = map_get(&st->leaf_index, leaf);
    if (i >= 0 && --st->leaf_pending[i] == 0 && filo_var_grad(leaf))
        return filo_var_run_hooks(leaf);
    return FILO_OK;
}

/* A node none of whose outputs received a gradient: its leaves lose one pending edge each. */
static filo_status skip_node(run_state *st, filo_node *n)
{
    for (int i = 0; i < n->n_inputs; i++)
        if (n->next[i].leaf)
            FILO_TRY(leaf_edge_done(st, n->next[i].leaf));
    return FILO_OK;
}

static filo_status run_node(run_state *st, int idx, int retain_graph)
{
    filo_node *n = st->nodes[idx];
    pending_grad *in = st->grads[idx];
    int any = 0;
    for (int o = 0; o < n->n_outputs; o++)
        any |= in[o].grad != NULL;
    if (!any)
        return skip_node(st, n);
    if (n->released)
        return FILO_FAIL(FILO_ERR_STATE,
                         "the graph through '%s' was already freed by a backward; pass retain_graph=1 to the "
                         "first backward to run another one",
                         n->name);

    /* The forward's stream, whose device may differ from the outputs' (a copy between devices). */
    filo_device device = n->stream ? filo_stream_device(n->stream) : n->outputs[0].device;
    filo_stream *prev = current_stream_of(device);
    if (n->stream)
        FILO_TRY(filo_stream_set_current(device, n->stream));
    filo_tensor *grad_out[16], *grad_in[16];
    filo_tensor **gout = grad_out, **gin = grad_in;
    if (n->n_outputs > 16 || n->n_inputs > 16) {
        gout = calloc((size_t)n->n_outputs, sizeof *gout);
        gin = calloc((size_t)n->n_inputs, sizeof *gin);
    }
    filo_status s = gout && gin ? FILO_OK : FILO_FAIL(FILO_ERR_OOM, "out of host memory in backward");
    for (int o = 0; o < n->n_outputs && s == FILO_OK; o++) {
        if (in[o].grad) {
            s = cross_stream(in[o].grad, in[o].stream, n->stream);
            gout[o] = in[o].grad;
        } else {
            s = filo_grad_zeros(&n->outputs[o], &in[o].grad);
            gout[o] = in[o].grad;
        }
    }
    for (int i = 0; i < n->n_inputs && gin; i++)
        gin[i] = NULL;
    if (s == FILO_OK) {
        s = n->backward(n, gout, gin);
        if (s != FILO_OK)
            s = filo_error_wrap(s, n->name);
    }
    for (int i = 0; i < n->n_inputs && s == FILO_OK; i++) {
        filo_edge *e = &n->next[i];
        if (!gin[i]) {
            if (e->leaf)
                s = leaf_edge_done(st, e->leaf);
            continue;
        }
        if (e->leaf) {
            s = filo_var_accumulate_grad(e->leaf, gin[i]);
            if (s == FILO_OK)
                s = leaf_edge_done(st, e->leaf);
        } else if (e->node) {
            int k = map_get(&st->node_index, e->node);
            s = pending_add(&st->grads[k][e->slot], gin[i], n->stream);
            gin[i] = NULL;
        }
    }
    for (int i = 0; i < n->n_inputs && gin; i++)
        filo_tensor_free(gin[i]);
    for (int o = 0; o < n->n_outputs; o++) {
        filo_tensor_free(in[o].grad);
        in[o].grad = NULL;
    }
    if (gout != grad_out)
        free(gout);
    if (gin != grad_in)
        free(gin);
    if (n->stream)
        filo_stream_set_current(device, prev);
    if (s == FILO_OK && !retain_graph)
        filo_node_release_saved(n);
    return s;
}

static filo_status check_root(filo_var *root, const filo_tensor *g, int k)
{
    if (!root)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "root %d is NULL", k);
    if (!filo_var_requires_grad(root))
        return FILO_FAIL(FILO_ERR_STATE,
                         "root %d does not require a gradient: no input of the ops that made it requires one "
                         "(or it was computed with gradient recording off)",
                         k);
    const filo_tensor *v = filo_var_value(root);
    char a[96], b[96];
    if (!g) {
        if (filo_tensor_numel(v) != 1)
            return FILO_FAIL(FILO_ERR_SHAPE, "root %d is %s: a gradient for it is needed (only one-element roots "
                             "default to 1)", k, filo_tensor_describe(v, a, sizeof a));
        return FILO_OK;
    }
    if (g->dtype != v->dtype || !filo_device_equal(g->device, v->device) || g->ndim != v->ndim ||
        memcmp(g->shape, v->shape, sizeof(int64_t) * (size_t)g->ndim))
        return FILO_FAIL(FILO_ERR_SHAPE, "the gradient %s of root %d does not match it (%s)",
                         filo_tensor_describe(g, a, sizeof a), k, filo_tensor_describe(v, b, sizeof b));
    return FILO_OK;
}

filo_status filo_engine_run(int n, filo_var *const *roots, const filo_tensor *const *grad_roots, int retain_graph)
{
    if (n < 1 || !roots)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "backward needs at least one root");
    for (int k = 0; k < n; k++)
        FILO_TRY(check_root(roots[k], grad_roots ? grad_roots[k] : NULL, k));

    run_state st;
    memset(&st, 0, sizeof st);
    filo_node **root_nodes = calloc((size_t)n, sizeof *root_nodes);
    filo_status s = root_nodes ? FILO_OK : FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    for (int k = 0; k < n && s == FILO_OK; k++)
        root_nodes[k] = filo_var_grad_fn(roots[k], NULL);
    if (s == FILO_OK)
        s = collect(&st, n, root_nodes);
    int prev_mode = filo_grad_set_enabled(0);
    /* Seed: the roots' gradients, or ones. */
    for (int k = 0; k < n && s == FILO_OK; k++) {
        const filo_tensor *v = filo_var_value(roots[k]);
        filo_tensor *g = NULL;
        if (grad_roots && grad_roots[k])
            s = filo_tensor_alias(grad_roots[k], &g);
        else
            s = filo_tensor_full(v->device, v->dtype, v->ndim, v->shape, 1.0, &g);
        if (s != FILO_OK)
            break;
        int slot;
        filo_node *rn = filo_var_grad_fn(roots[k], &slot);
        if (!rn) {
            s = filo_var_accumulate_grad(roots[k], g);
            if (s == FILO_OK)
                s = filo_var_run_hooks(roots[k]);
            filo_tensor_free(g);
        } else {
            s = pending_add(&st.grads[map_get(&st.node_index, rn)][slot], g, current_stream_of(v->device));
        }
    }
    for (int i = 0; i < st.n_nodes && s == FILO_OK; i++)
        s = run_node(&st, i, retain_graph);
    filo_grad_set_enabled(prev_mode);

    for (int i = 0; i < st.n_nodes; i++) {
        for (int o = 0; st.grads && st.grads[i] && o < st.nodes[i]->n_outputs; o++)
            filo_tensor_free(st.grads[i][o].grad);
        if (st.grads)
            free(st.grads[i]);
    }
    free(st.grads);
    free(st.nodes);
    free(st.leaves);
    free(st.leaf_pending);
    map_free(&st.node_index);
    map_free(&st.leaf_index);
    free(root_nodes);
    return s;
}

filo_status filo_backward(filo_var *root, const filo_tensor *grad_root, int retain_graph)
{
    return filo_engine_run(1, &root, grad_root ? &grad_root : NULL, retain_graph);
}

filo_status filo_backward_many(int n, filo_var *const *roots, const filo_tensor *const *grad_roots, int retain_graph)
{
    return filo_engine_run(n, roots, grad_roots, retain_graph);
}
