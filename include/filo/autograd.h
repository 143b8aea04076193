/* Reverse-mode automatic differentiation: variables, the define-by-run tape, backward, grad
 * mode, hooks, gradient checkpointing and Graphviz export.
 *
 * A variable (filo_var) holds a value tensor, a gradient (NULL until a backward reaches it),
 * requires_grad, and, when an op made it while gradients were being recorded, that op's node
 * (grad_fn) with what the op saved for its backward. The differentiable ops (filo/ag.h) run
 * their kernel on the values and append a node; filo_backward walks the nodes reachable from
 * the loss in reverse creation order (a reverse topological order, since an op's inputs always
 * exist before it), calls each node's backward once all of its output gradients are in,
 * accumulates into the leaves and frees each node's saved tensors right after its backward.
 *
 * Leaves are variables made with filo_var_new (or detached): their gradients accumulate across
 * backward calls until filo_var_zero_grad. Non-leaf variables get no .grad.
 *
 * Streams: a node remembers the stream that was current when its forward ran and its backward
 * is enqueued on that stream, so work a user placed on side streams in the forward runs on the
 * same side streams in the backward. A gradient that crosses streams is ordered by an event and
 * its memory is marked as used by the consuming stream (the allocator then delays its reuse).
 * No step of a backward waits on the host.
 *
 * Ownership: variables are reference counted; every filo_var returned through an out-parameter
 * holds one reference the caller releases with filo_var_free. Nodes keep their inputs' nodes
 * (and leaves) alive, so freeing intermediate variables does not cut the graph. */
#ifndef FILO_AUTOGRAD_H
#define FILO_AUTOGRAD_H

#include <stddef.h>
#include <stdint.h>

#include "filo/rng.h"
#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct filo_var filo_var;

/* A leaf over `value` (aliased: the variable takes its own handle on the same storage; the
 * caller keeps theirs). requires_grad 1 makes it a trainable leaf; it needs a float dtype. */
filo_status filo_var_new(const filo_tensor *value, int requires_grad, filo_var **out);
/* Another reference to the same variable. */
filo_var *filo_var_retain(filo_var *v);
/* Drops one reference (NULL is a no-op). */
void filo_var_free(filo_var *v);

/* The value and gradient tensors belong to the variable: read or update them in place, do not
 * free them. The gradient is NULL until a backward reaches the leaf (or after zero_grad). */
filo_tensor *filo_var_value(const filo_var *v);
filo_tensor *filo_var_grad(const filo_var *v);
int filo_var_requires_grad(const filo_var *v);
/* 1 for leaves (no grad_fn). */
int filo_var_is_leaf(const filo_var *v);
/* The name of the op that made v ("matmul", ...), or NULL for a leaf. */
const char *filo_var_op_name(const filo_var *v);
/* Sets requires_grad on a leaf (FILO_ERR_STATE on a non-leaf: its flag follows its inputs). */
filo_status filo_var_set_requires_grad(filo_var *v, int requires_grad);
/* Drops the gradient (PyTorch's zero_grad(set_to_none=True)): the next backward allocates it. */
void filo_var_zero_grad(filo_var *v);
/* Replaces the gradient by `grad` (aliased; v's shape, dtype and device), or drops it (NULL). */
filo_status filo_var_set_grad(filo_var *v, const filo_tensor *grad);
/* A new leaf sharing v's value, without requires_grad and outside any graph. */
filo_status filo_var_detach(const filo_var *v, filo_var **out);
/* An optional label for messages and the DOT export (copied; NULL clears it). */
filo_status filo_var_set_name(filo_var *v, const char *name);
const char *filo_var_name(const filo_var *v);

/* Gradient recording is on by default, per thread. filo_grad_set_enabled returns the previous
 * setting, so scopes nest:  int prev = filo_grad_set_enabled(0); ...; filo_grad_set_enabled(prev); */
int filo_grad_enabled(void);
int filo_grad_set_enabled(int enabled);

/* Computes the gradients of `root` with respect to the leaves it depends on and adds them into
 * their .grad. grad_root: the gradient of root (root's shape, dtype and device), or NULL when
 * root has one element (then 1 is used). retain_graph 0 frees every saved tensor as soon as its
 * node's backward has run and releases the graph: a second backward through it then fails with
 * FILO_ERR_STATE. Runs with gradient recording off (no graph is built of the backward). */
filo_status filo_backward(filo_var *root, const filo_tensor *grad_root, int retain_graph);
/* The same for several roots at once (a node reachable from two roots runs once). */
filo_status filo_backward_many(int n, filo_var *const *roots, const filo_tensor *const *grad_roots,
                               int retain_graph);

/* Leaf hooks: `fn` runs during a backward as soon as the leaf's gradient is final for that
 * backward (every node that feeds it has run), with the accumulated gradient on the stream of
 * the last node that fed it. This is where data-parallel training starts all-reducing a bucket
 * while the rest of the backward goes on. A hook that fails stops the backward with its status. */
typedef filo_status (*filo_grad_hook)(filo_var *leaf, filo_tensor *grad, void *user);
filo_status filo_var_add_hook(filo_var *leaf, filo_grad_hook fn, void *user);
void filo_var_clear_hooks(filo_var *leaf);

/* Gradient checkpointing: runs fn(user, inputs, outputs) without recording a graph and records
 * one node for it instead, which saves only the inputs; its backward runs fn again with
 * recording on and backpropagates through that recomputed graph. Memory inside fn is thus freed
 * after the forward, at the price of a second forward.
 *   fn must fill outputs[0..n_outputs) with new variables (it owns nothing else afterwards) and
 *   be a pure function of its inputs, the parameters it closes over and the generator.
 *   gen: NULL, or the generator fn draws from (dropout): its state is saved before the forward
 *   and restored for the recompute, so the recompute draws the same masks; after the backward
 *   the generator is where the forward left it.
 * Gradients of the parameters fn closes over reach their leaves through the recomputed graph,
 * in a nested backward: their hooks fire when that nested backward is done with them, so a
 * parameter used both inside and outside fn has its hooks called once for each. */
typedef filo_status (*filo_checkpoint_fn)(void *user, filo_var *const *inputs, filo_var **outputs);
filo_status filo_checkpoint(filo_checkpoint_fn fn, void *user, filo_generator *gen, int n_inputs,
                            filo_var *const *inputs, int n_outputs, filo_var **outputs);

/* Writes the graph that leads to the roots as Graphviz DOT: one box per op node (its name and
 * output shapes and dtypes), one ellipse per leaf (name, shape, dtype), edges in the direction
 * of the forward. Written to `path` through a temporary file and a rename. */
filo_status filo_graph_write_dot(int n, filo_var *const *roots, const char *path);

/* Live-object counters, for leak tests: variables and nodes currently allocated. */
int64_t filo_autograd_live_vars(void);
int64_t filo_autograd_live_nodes(void);

#ifdef __cplusplus
}
#endif
#endif
