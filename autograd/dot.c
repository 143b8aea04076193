/* Graphviz export of a recorded graph. */
#include <stdlib.h>
#include <string.h>

#include "atomic_file.h"
#include "error.h"
#include "node.h"

typedef struct seen_set {
    const void **items;
    int n, cap;
} seen_set;

/* 1 when p was already there; adds it otherwise (-1 on allocation failure). */
static int seen_add(seen_set *s, const void *p)
{
    for (int i = 0; i < s->n; i++)
        if (s->items[i] == p)
            return 1;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        const void **grown = realloc(s->items, sizeof *grown * (size_t)cap);
        if (!grown)
            return -1;
        s->items = grown;
        s->cap = cap;
    }
    s->items[s->n++] = p;
    return 0;
}

static void write_leaf(FILE *fp, const filo_var *leaf)
{
    const filo_tensor *v = filo_var_value(leaf);
    char dims[96];
    fprintf(fp, "  v%p [shape=ellipse, label=\"%s\\n%s%s\"];\n", (const void *)leaf,
            filo_var_name(leaf) ? filo_var_name(leaf) : "leaf", filo_dtype_name(v->dtype),
            filo_dims_format(v->ndim, v->shape, dims, sizeof dims));
}

static void write_node(FILE *fp, const filo_node *n)
{
    fprintf(fp, "  n%p [shape=box, label=\"%s", (const void *)n, n->name);
    for (int o = 0; o < n->n_outputs; o++) {
        char dims[96];
        fprintf(fp, "\\n%s%s", filo_dtype_name(n->outputs[o].dtype),
                filo_dims_format(n->outputs[o].ndim, n->outputs[o].shape, dims, sizeof dims));
    }
    fprintf(fp, "\"];\n");
}

static filo_status walk(FILE *fp, const filo_node *root, seen_set *seen)
{
    const filo_node **stack = NULL;
    int depth = 0, cap = 0;
    filo_status s = FILO_OK;
    if (seen_add(seen, root) == 0) {
        write_node(fp, root);
        stack = malloc(sizeof *stack * 64);
        cap = 64;
        if (!stack)
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
        stack[depth++] = root;
    }
    while (depth && s == FILO_OK) {
        const filo_node *n = stack[--depth];
        for (int i = 0; i < n->n_inputs && s == FILO_OK; i++) {
            const filo_edge *e = &n->next[i];
            if (e->leaf) {
                int was = seen_add(seen, e->leaf);
                if (was < 0)
                    s = FILO_FAIL(FILO_ERR_OOM, "out of host memory");
                else if (!was)
                    write_leaf(fp, e->leaf);
                fprintf(fp, "  v%p -> n%p;\n", (const void *)e->leaf, (const void *)n);
            } else if (e->node) {
                int was = seen_add(seen, e->node);
                if (was < 0) {
                    s = FILO_FAIL(FILO_ERR_OOM, "out of host memory");
                    break;
                }
                if (!was) {
                    write_node(fp, e->node);
                    if (depth == cap) {
                        cap *= 2;
                        const filo_node **grown = realloc(stack, sizeof *grown * (size_t)cap);
                        if (!grown) {
                            s = FILO_FAIL(FILO_ERR_OOM, "out of host memory");
                            break;
                        }
                        stack = grown;
                    }
                    stack[depth++] = e->node;
                }
                fprintf(fp, "  n%p -> n%p;\n", (const void *)e->node, (const void *)n);
            }
        }
    }
    free(stack);
    return s;
}

filo_status filo_graph_write_dot(int n, filo_var *const *roots, const char *path)
{
    if (n < 1 || !roots || !path)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "roots and a path are required");
    for (int r = 0; r < n; r++)
        if (!roots[r])
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "root %d is NULL", r);
    filo_atomic_file f;
    FILO_TRY(filo_atomic_file_open(path, &f));
    seen_set seen = {0};
    filo_status s = FILO_OK;
    fprintf(f.fp, "digraph filo {\n  rankdir=BT;\n  node [fontname=\"monospace\", fontsize=10];\n");
    for (int r = 0; r < n && s == FILO_OK; r++) {
        filo_node *node = filo_var_grad_fn(roots[r], NULL);
        if (node) {
            s = walk(f.fp, node, &seen);
        } else if (seen_add(&seen, roots[r]) == 0) {
            write_leaf(f.fp, roots[r]);
        }
    }
    fprintf(f.fp, "}\n");
    free(seen.items);
    if (s != FILO_OK) {
        filo_atomic_file_abort(&f);
        return s;
    }
    return filo_atomic_file_commit(&f);
}
