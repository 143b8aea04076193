/* Differentiable views and copies: reshape, transpose, permute, slice, expand, squeeze,
 * unsqueeze, contiguous and device moves. The forwards are the tensor functions (views where they
 * give views); the backwards map the gradient back through the inverse view, or sum it over the
 * broadcast dims for expand. */
#include <string.h>

#include "error.h"
#include "filo/ag.h"
#include "node.h"

/* The input's shape, which reshape and expand need to give the gradient back its form. */
typedef struct shape_ctx {
    int ndim;
    int64_t shape[FILO_MAX_DIMS];
} shape_ctx;

static void copy_shape(shape_ctx *c, const filo_tensor *x)
{
    c->ndim = x->ndim;
    memcpy(c->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
}

/* ---- reshape ---- */

static filo_status reshape_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const shape_ctx *c = n->ctx;
    return filo_tensor_reshape(grad_out[0], c->ndim, c->shape, &grad_in[0]);
}

filo_status filo_ag_reshape(filo_var *x, int ndim, const int64_t *shape, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *y;
    FILO_TRY(filo_tensor_reshape(xv, ndim, shape, &y));
    filo_node *n;
    filo_status s = filo_node_begin("reshape", reshape_backward, 1, &x, 1, sizeof(shape_ctx), &n);
    if (s == FILO_OK && n)
        copy_shape(n->ctx, xv);
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- transpose, permute ---- */

typedef struct transpose_ctx {
    int dim0, dim1;
} transpose_ctx;

/* A transpose is its own inverse. */
static filo_status transpose_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const transpose_ctx *c = n->ctx;
    return filo_tensor_transpose(grad_out[0], c->dim0, c->dim1, &grad_in[0]);
}

filo_status filo_ag_transpose(filo_var *x, int dim0, int dim1, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    filo_tensor *y;
    FILO_TRY(filo_tensor_transpose(filo_var_value(x), dim0, dim1, &y));
    filo_node *n;
    filo_status s = filo_node_begin("transpose", transpose_backward, 1, &x, 1, sizeof(transpose_ctx), &n);
    if (s == FILO_OK && n) {
        transpose_ctx *c = n->ctx;
        c->dim0 = dim0;
        c->dim1 = dim1;
    }
    return filo_node_finish(n, s, 1, &y, out);
}

typedef struct permute_ctx {
    int inverse[FILO_MAX_DIMS];
} permute_ctx;

static filo_status permute_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const permute_ctx *c = n->ctx;
    return filo_tensor_permute(grad_out[0], c->inverse, &grad_in[0]);
}

filo_status filo_ag_permute(filo_var *x, const int *dims, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *y;
    FILO_TRY(filo_tensor_permute(xv, dims, &y));
    filo_node *n;
    filo_status s = filo_node_begin("permute", permute_backward, 1, &x, 1, sizeof(permute_ctx), &n);
    if (s == FILO_OK && n) {
        /* The forward accepted dims, so they are a permutation (negative ones count from the end). */
        permute_ctx *c = n->ctx;
        for (int i = 0; i < xv->ndim; i++)
            c->inverse[dims[i] < 0 ? dims[i] + xv->ndim : dims[i]] = i;
    }
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- slice ---- */

typedef struct slice_ctx {
    shape_ctx in;
    int dim;
    int64_t start, end, step;
} slice_ctx;

/* Zeros of the input's shape with the gradient written into the same slice of them. */
static filo_status slice_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const slice_ctx *c = n->ctx;
    const filo_tensor *g = grad_out[0];
    filo_tensor *dx, *part = NULL;
    FILO_TRY(filo_tensor_zeros(g->device, g->dtype, c->in.ndim, c->in.shape, &dx));
    filo_status s = filo_tensor_slice(dx, c->dim, c->start, c->end, c->step, &part);
    if (s == FILO_OK)
        s = filo_tensor_copy(part, g);
    filo_tensor_free(part);
    if (s != FILO_OK) {
        filo_tensor_free(dx);
        return s;
    }
    grad_in[0] = dx;
    return FILO_OK;
}

filo_status filo_ag_slice(filo_var *x, int dim, int64_t start, int64_t end, int64_t step, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *y;
    FILO_TRY(filo_tensor_slice(xv, dim, start, end, step, &y));
    filo_node *n;
    filo_status s = filo_node_begin("slice", slice_backward, 1, &x, 1, sizeof(slice_ctx), &n);
    if (s == FILO_OK && n) {
        slice_ctx *c = n->ctx;
        copy_shape(&c->in, xv);
        c->dim = dim;
        c->start = start;
        c->end = end;
        c->step = step;
    }
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- expand ---- */

static filo_status expand_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const shape_ctx *c = n->ctx;
    return filo_grad_sum_to(grad_out[0], c->ndim, c->shape, &grad_in[0]);
}

filo_status filo_ag_expand(filo_var *x, int ndim, const int64_t *shape, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *y;
    FILO_TRY(filo_tensor_expand(xv, ndim, shape, &y));
    filo_node *n;
    filo_status s = filo_node_begin("expand", expand_backward, 1, &x, 1, sizeof(shape_ctx), &n);
    if (s == FILO_OK && n)
        copy_shape(n->ctx, xv);
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- squeeze, unsqueeze ---- */

/* A negative dim names the same place in the squeezed and the unsqueezed tensor (it counts from
 * the end of the one with the extra dim), so the user's dim undoes the op as given. */
static filo_status squeeze_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    return filo_tensor_unsqueeze(grad_out[0], *(const int *)n->ctx, &grad_in[0]);
}

static filo_status unsqueeze_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    return filo_tensor_squeeze(grad_out[0], *(const int *)n->ctx, &grad_in[0]);
}

static filo_status squeeze_any(filo_var *x, int dim, int unsqueeze, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *y;
    FILO_TRY(unsqueeze ? filo_tensor_unsqueeze(xv, dim, &y) : filo_tensor_squeeze(xv, dim, &y));
    filo_node *n;
    filo_status s = filo_node_begin(unsqueeze ? "unsqueeze" : "squeeze",
                                    unsqueeze ? unsqueeze_backward : squeeze_backward, 1, &x, 1, sizeof(int), &n);
    if (s == FILO_OK && n)
        *(int *)n->ctx = dim;
    return filo_node_finish(n, s, 1, &y, out);
}

filo_status filo_ag_squeeze(filo_var *x, int dim, filo_var **out) { return squeeze_any(x, dim, 0, out); }
filo_status filo_ag_unsqueeze(filo_var *x, int dim, filo_var **out) { return squeeze_any(x, dim, 1, out); }

/* ---- contiguous, to ---- */

static filo_status alias_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    (void)n;
    return filo_tensor_alias(grad_out[0], &grad_in[0]);
}

filo_status filo_ag_contiguous(filo_var *x, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    filo_tensor *y;
    FILO_TRY(filo_tensor_contiguous(filo_var_value(x), &y));
    filo_node *n;
    filo_status s = filo_node_begin("contiguous", alias_backward, 1, &x, 1, 0, &n);
    return filo_node_finish(n, s, 1, &y, out);
}

static filo_status to_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    filo_device device = *(const filo_device *)n->ctx;
    if (filo_device_equal(grad_out[0]->device, device))
        return filo_tensor_alias(grad_out[0], &grad_in[0]);
    return filo_tensor_to(grad_out[0], device, &grad_in[0]);
}

filo_status filo_ag_to(filo_var *x, filo_device device, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *y;
    FILO_TRY(filo_tensor_to(xv, device, &y));
    filo_node *n;
    filo_status s = filo_node_begin("to", to_backward, 1, &x, 1, sizeof(filo_device), &n);
    if (s == FILO_OK && n)
        *(filo_device *)n->ctx = xv->device;
    return filo_node_finish(n, s, 1, &y, out);
}
