/* Internal: the tape's node and the recording API the differentiable ops (autograd/ops_*.c)
 * are written against.
 *
 * An op records itself like this:
 *
 *     filo_tensor *y;
 *     FILO_TRY(filo_unary(op, filo_var_value(x), &y));      // the kernel, on values
 *     filo_node *n = NULL;
 *     filo_status s = filo_node_begin("exp", exp_backward, 1, &x, 1, sizeof(ctx), &n);
 *     if (s == FILO_OK && n) s = filo_node_save(n, y);      // what backward needs
 *     return filo_node_finish(n, s, 1, &y, out);             // wraps y, takes it over
 *
 * filo_node_begin gives n == NULL (and FILO_OK) when nothing needs a gradient (recording off or
 * no input requires one): saves are then skipped and filo_node_finish just wraps the outputs.
 * filo_node_finish takes over the output tensors in every case (frees them on failure).
 *
 * The backward receives every output's gradient (the engine fills a zero tensor for an output
 * that no gradient reached) and fills grad_in[i] with a new tensor for each input i with
 * filo_node_needs_grad(n, i); it may leave the others NULL. A gradient may be any strided view
 * of the input's shape and dtype, and may alias a grad_out tensor (use filo_tensor_alias). */
#ifndef FILO_AUTOGRAD_NODE_H
#define FILO_AUTOGRAD_NODE_H

#include "filo/autograd.h"
#include "filo/device.h"

typedef struct filo_node filo_node;

typedef filo_status (*filo_backward_fn)(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in);
/* Frees whatever an op's context owns besides saved tensors (optional). */
typedef void (*filo_ctx_free_fn)(void *ctx);

/* Where gradient i of a node goes: the node that made input i (and which of its outputs), or a
 * leaf to accumulate into, or nowhere (an input that needs no gradient). */
typedef struct filo_edge {
    filo_node *node;
    int slot;
    filo_var *leaf;
} filo_edge;

/* Shape, dtype and device of one output, for zero-filling and the DOT export. */
typedef struct filo_output_meta {
    filo_dtype dtype;
    filo_device device;
    int ndim;
    int64_t shape[FILO_MAX_DIMS];
} filo_output_meta;

#define FILO_NODE_MAX_SAVED 16

struct filo_node {
    const char *name;
    filo_backward_fn backward;
    filo_ctx_free_fn ctx_free;
    int refcount;
    uint64_t seq;               /* creation order: backward runs in decreasing seq */
    int n_inputs, n_outputs;
    filo_edge *next;            /* n_inputs */
    filo_output_meta *outputs;  /* n_outputs */
    filo_tensor *saved[FILO_NODE_MAX_SAVED];
    int n_saved;
    int released;               /* saved tensors freed by a backward without retain_graph */
    filo_stream *stream;        /* current stream when the forward ran (NULL on the CPU) */
    void *ctx;                  /* op-specific, ctx_bytes zeroed bytes */
};

filo_status filo_node_begin(const char *name, filo_backward_fn backward, int n_inputs, filo_var *const *inputs,
                            int n_outputs, size_t ctx_bytes, filo_node **out);
/* Keeps `t` (aliased) for the backward; returns its index through *index when index != NULL. */
filo_status filo_node_save(filo_node *n, const filo_tensor *t);
filo_status filo_node_save_at(filo_node *n, const filo_tensor *t, int *index);
const filo_tensor *filo_node_saved(const filo_node *n, int index);
int filo_node_needs_grad(const filo_node *n, int input);
/* status: the op's status so far; on failure everything is freed and status returned. */
filo_status filo_node_finish(filo_node *n, filo_status status, int n_outputs, filo_tensor **values, filo_var **outs);

filo_node *filo_node_retain(filo_node *n);
void filo_node_release(filo_node *n);
/* Frees the saved tensors (after a backward without retain_graph). */
void filo_node_release_saved(filo_node *n);

/* Internal accessors of a variable for the engine. */
filo_node *filo_var_grad_fn(const filo_var *v, int *slot);
/* Adds g into the leaf's gradient (copying it on first use, so the leaf owns its gradient). */
filo_status filo_var_accumulate_grad(filo_var *leaf, const filo_tensor *g);
/* Runs the leaf's hooks. */
filo_status filo_var_run_hooks(filo_var *leaf);

/* The backward of a node that a checkpoint recorded calls this (nested backward). */
filo_status filo_engine_run(int n, filo_var *const *roots, const filo_tensor *const *grad_roots, int retain_graph);

/* Gradient helpers the ops share (autograd/grad_util.c). */
/* Sums g (broadcast from `shape`) back to `shape` (ndim dims): reduces the extra leading dims
 * and the dims where shape has 1. Returns an alias of g when nothing needs summing. */
filo_status filo_grad_sum_to(const filo_tensor *g, int ndim, const int64_t *shape, filo_tensor **out);
/* A zero tensor like the given meta. */
filo_status filo_grad_zeros(const filo_output_meta *m, filo_tensor **out);

#endif
