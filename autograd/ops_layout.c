/* Differentiable layout ops: dtype casts, concatenation, splitting and constant padding. Each
 * backward is the op library's inverse movement: cast back, split, concatenate, crop. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "filo/ag.h"
#include "filo/layout.h"
#include "node.h"

/* ---- cast ---- */

static filo_status cast_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    filo_dtype dtype = *(const filo_dtype *)n->ctx;
    if (grad_out[0]->dtype == dtype)
        return filo_tensor_alias(grad_out[0], &grad_in[0]);
    return filo_cast(grad_out[0], dtype, &grad_in[0]);
}

filo_status filo_ag_cast(filo_var *x, filo_dtype dtype, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *y;
    FILO_TRY(filo_cast(xv, dtype, &y));
    /* An integer result cannot carry a gradient: it leaves the graph, as in PyTorch. */
    if (!filo_dtype_is_float(dtype))
        return filo_node_finish(NULL, FILO_OK, 1, &y, out);
    filo_node *n;
    filo_status s = filo_node_begin("cast", cast_backward, 1, &x, 1, sizeof(filo_dtype), &n);
    if (s == FILO_OK && n)
        *(filo_dtype *)n->ctx = xv->dtype;
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- concat ---- */

typedef struct concat_ctx {
    int dim;
    int n;
    int64_t sizes[]; /* n: each input's size along dim */
} concat_ctx;

static filo_status concat_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const concat_ctx *c = n->ctx;
    filo_tensor **parts = calloc((size_t)c->n, sizeof *parts);
    if (!parts)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory splitting the gradient of concat");
    filo_status s = filo_split(grad_out[0], c->dim, c->sizes, c->n, parts);
    for (int i = 0; i < c->n && s == FILO_OK; i++) {
        if (filo_node_needs_grad(n, i))
            grad_in[i] = parts[i];
        else
            filo_tensor_free(parts[i]);
    }
    free(parts);
    return s;
}

filo_status filo_ag_concat(filo_var *const *xs, int n, int dim, filo_var **out)
{
    if (!xs || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "xs and out must not be NULL");
    if (n < 1)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "concat needs at least one input, got n = %d", n);
    for (int i = 0; i < n; i++)
        if (!xs[i])
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "xs[%d] is NULL", i);
    const filo_tensor **values = malloc(sizeof *values * (size_t)n);
    if (!values)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for %d concat inputs", n);
    for (int i = 0; i < n; i++)
        values[i] = filo_var_value(xs[i]);
    filo_tensor *y;
    filo_status s = filo_concat(values, n, dim, &y);
    if (s != FILO_OK) {
        free(values);
        return s;
    }
    filo_node *nd;
    s = filo_node_begin("concat", concat_backward, n, xs, 1, sizeof(concat_ctx) + sizeof(int64_t) * (size_t)n, &nd);
    if (s == FILO_OK && nd) {
        concat_ctx *c = nd->ctx;
        int d = dim < 0 ? dim + y->ndim : dim; /* the forward checked it */
        c->dim = d;
        c->n = n;
        for (int i = 0; i < n; i++)
            c->sizes[i] = values[i]->shape[d];
    }
    free(values);
    return filo_node_finish(nd, s, 1, &y, out);
}

/* ---- split ---- */

/* Outputs no gradient reached arrive zero-filled from the engine, so all n can be joined. */
static filo_status split_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    return filo_concat((const filo_tensor *const *)grad_out, n->n_outputs, *(const int *)n->ctx, &grad_in[0]);
}

filo_status filo_ag_split(filo_var *x, int dim, const int64_t *sizes, int n, filo_var **outs)
{
    if (!x || !sizes || !outs)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x, sizes and outs must not be NULL");
    if (n < 1)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "split needs at least one part, got n = %d", n);
    filo_tensor **values = calloc((size_t)n, sizeof *values);
    if (!values)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for %d split outputs", n);
    filo_status s = filo_split(filo_var_value(x), dim, sizes, n, values);
    if (s != FILO_OK) {
        free(values);
        return s;
    }
    filo_node *nd;
    s = filo_node_begin("split", split_backward, 1, &x, n, sizeof(int), &nd);
    if (s == FILO_OK && nd)
        *(int *)nd->ctx = dim;
    s = filo_node_finish(nd, s, n, values, outs);
    free(values);
    return s;
}

/* ---- pad ---- */

typedef struct pad_ctx {
    int npairs;
    int64_t pads[2 * FILO_MAX_DIMS];
} pad_ctx;

static filo_status pad_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const pad_ctx *c = n->ctx;
    return filo_pad_backward(grad_out[0], c->npairs, c->pads, &grad_in[0]);
}

filo_status filo_ag_pad(filo_var *x, int npairs, const int64_t *pads, double value, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    filo_tensor *y;
    FILO_TRY(filo_pad(filo_var_value(x), npairs, pads, value, &y));
    filo_node *n;
    filo_status s = filo_node_begin("pad", pad_backward, 1, &x, 1, sizeof(pad_ctx), &n);
    if (s == FILO_OK && n) {
        /* The forward accepted npairs, so it is within 1..ndim. */
        pad_ctx *c = n->ctx;
        c->npairs = npairs;
        memcpy(c->pads, pads, sizeof(int64_t) * 2 * (size_t)npairs);
    }
    return filo_node_finish(n, s, 1, &y, out);
}
