/* Differentiable indexing ops: index_select, gather, scatter_add, embedding lookup and
 * masked_fill. Indices, ids and masks are plain tensors the nodes keep alive; the backwards are
 * the op library's deterministic accumulating kernels (index_add, scatter_add,
 * embedding_backward) or a gather / masked_fill of the gradient. */
#include <string.h>

#include "error.h"
#include "filo/ag.h"
#include "filo/indexing.h"
#include "filo/layout.h"
#include "node.h"

/* Shared by index_select, gather and scatter_add: the dim (normalized) and the shape of the
 * input the gradient goes back to. */
typedef struct index_ctx {
    int dim;
    int ndim;
    int64_t shape[FILO_MAX_DIMS];
} index_ctx;

static void fill_index_ctx(filo_node *n, const filo_tensor *x, int dim)
{
    index_ctx *c = n->ctx;
    c->dim = dim < 0 ? dim + x->ndim : dim; /* the forward checked it */
    c->ndim = x->ndim;
    memcpy(c->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
}

/* ---- index_select ---- */

static filo_status index_select_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const index_ctx *c = n->ctx;
    return filo_index_add(grad_out[0], c->dim, filo_node_saved(n, 0), c->shape[c->dim], &grad_in[0]);
}

/* index_select and gather: the same forward (x, dim, index), another kernel and backward. */
typedef filo_status (*index_kernel)(const filo_tensor *x, int dim, const filo_tensor *index, filo_tensor **out);

static filo_status record_indexed(const char *name, index_kernel kernel, filo_backward_fn backward, filo_var *x,
                                  int dim, const filo_tensor *index, filo_var **out)
{
    if (!x || !index || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x, index and out must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *y;
    FILO_TRY(kernel(xv, dim, index, &y));
    filo_node *n;
    filo_status s = filo_node_begin(name, backward, 1, &x, 1, sizeof(index_ctx), &n);
    if (s == FILO_OK && n) {
        fill_index_ctx(n, xv, dim);
        s = filo_node_save(n, index);
    }
    return filo_node_finish(n, s, 1, &y, out);
}

filo_status filo_ag_index_select(filo_var *x, int dim, const filo_tensor *index, filo_var **out)
{
    return record_indexed("index_select", filo_index_select, index_select_backward, x, dim, index, out);
}

/* ---- gather ---- */

/* dx = scatter_add(zeros like x, dim, index, g) */
static filo_status gather_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const index_ctx *c = n->ctx;
    const filo_tensor *g = grad_out[0];
    filo_tensor *z;
    FILO_TRY(filo_tensor_zeros(g->device, g->dtype, c->ndim, c->shape, &z));
    filo_status s = filo_scatter_add(z, c->dim, filo_node_saved(n, 0), g, &grad_in[0]);
    filo_tensor_free(z);
    return s;
}

filo_status filo_ag_gather(filo_var *x, int dim, const filo_tensor *index, filo_var **out)
{
    return record_indexed("gather", filo_gather, gather_backward, x, dim, index, out);
}

/* ---- scatter_add ---- */

/* self's gradient is g itself. src's is gather(g, dim, index), which has index's shape: where
 * index is smaller than src, the src elements it never reads get zero (padding on the high side
 * of each dim). The ctx holds src's shape. */
static filo_status scatter_add_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const index_ctx *c = n->ctx;
    const filo_tensor *g = grad_out[0], *index = filo_node_saved(n, 0);
    if (filo_node_needs_grad(n, 0))
        FILO_TRY(filo_tensor_alias(g, &grad_in[0]));
    if (!filo_node_needs_grad(n, 1))
        return FILO_OK;
    int64_t pads[2 * FILO_MAX_DIMS];
    int short_dims = 0;
    for (int d = 0; d < c->ndim; d++) {
        int pair = c->ndim - 1 - d; /* pads start with the last dim */
        pads[2 * pair] = 0;
        pads[2 * pair + 1] = c->shape[d] - index->shape[d];
        short_dims += pads[2 * pair + 1] != 0;
    }
    if (!short_dims)
        return filo_gather(g, c->dim, index, &grad_in[1]);
    filo_tensor *picked;
    FILO_TRY(filo_gather(g, c->dim, index, &picked));
    filo_status s = filo_pad(picked, c->ndim, pads, 0.0, &grad_in[1]);
    filo_tensor_free(picked);
    return s;
}

filo_status filo_ag_scatter_add(filo_var *self, int dim, const filo_tensor *index, filo_var *src, filo_var **out)
{
    if (!self || !index || !src || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "self, index, src and out must not be NULL");
    const filo_tensor *sv = filo_var_value(src);
    filo_tensor *y;
    FILO_TRY(filo_scatter_add(filo_var_value(self), dim, index, sv, &y));
    filo_var *in[2] = {self, src};
    filo_node *n;
    filo_status s = filo_node_begin("scatter_add", scatter_add_backward, 2, in, 1, sizeof(index_ctx), &n);
    if (s == FILO_OK && n) {
        fill_index_ctx(n, sv, dim);
        s = filo_node_save(n, index);
    }
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- embedding ---- */

typedef struct embedding_ctx {
    int64_t num_weights;
    int64_t padding_idx;
} embedding_ctx;

static filo_status embedding_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const embedding_ctx *c = n->ctx;
    return filo_embedding_backward(grad_out[0], filo_node_saved(n, 0), c->num_weights, c->padding_idx, &grad_in[0]);
}

filo_status filo_ag_embedding(filo_var *weight, const filo_tensor *ids, int64_t padding_idx, filo_var **out)
{
    if (!weight || !ids || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "weight, ids and out must not be NULL");
    const filo_tensor *wv = filo_var_value(weight);
    filo_tensor *y;
    FILO_TRY(filo_embedding(wv, ids, &y));
    /* Checked here, where the caller passed it, rather than first in the backward. */
    int64_t rows = wv->shape[0];
    if (padding_idx < -1 || padding_idx >= rows) {
        filo_tensor_free(y);
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "padding_idx %lld is outside [0, %lld) (and not -1 for none)",
                         (long long)padding_idx, (long long)rows);
    }
    filo_node *n;
    filo_status s = filo_node_begin("embedding", embedding_backward, 1, &weight, 1, sizeof(embedding_ctx), &n);
    if (s == FILO_OK && n) {
        embedding_ctx *c = n->ctx;
        c->num_weights = rows;
        c->padding_idx = padding_idx;
        s = filo_node_save(n, ids);
    }
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- masked_fill ---- */

static filo_status masked_fill_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    return filo_masked_fill(grad_out[0], filo_node_saved(n, 0), 0.0, &grad_in[0]);
}

filo_status filo_ag_masked_fill(filo_var *x, const filo_tensor *mask, double value, filo_var **out)
{
    if (!x || !mask || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x, mask and out must not be NULL");
    filo_tensor *y;
    FILO_TRY(filo_masked_fill(filo_var_value(x), mask, value, &y));
    filo_node *n;
    filo_status s = filo_node_begin("masked_fill", masked_fill_backward, 1, &x, 1, 0, &n);
    if (s == FILO_OK && n)
        s = filo_node_save(n, mask);
    return filo_node_finish(n, s, 1, &y, out);
}
