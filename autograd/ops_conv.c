/* Differentiable 2-D convolution and max / average pooling over NCHW tensors; the backwards are
 * the op library's conv and pooling backward kernels. */
#include <string.h>

#include "error.h"
#include "filo/ag.h"
#include "filo/conv.h"
#include "filo/pool.h"
#include "node.h"

/* ---- conv2d ---- */

typedef struct conv2d_ctx {
    filo_conv2d_params p; /* all zeros (the defaults) for NULL params */
} conv2d_ctx;

/* Inputs x, w, bias (bias may be NULL); saved x and w: dx reads w, dw reads x, and the kernel
 * takes both for its shape checks. */
static filo_status conv2d_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const conv2d_ctx *c = n->ctx;
    return filo_conv2d_backward(grad_out[0], filo_node_saved(n, 0), filo_node_saved(n, 1), &c->p,
                                filo_node_needs_grad(n, 0) ? &grad_in[0] : NULL,
                                filo_node_needs_grad(n, 1) ? &grad_in[1] : NULL,
                                filo_node_needs_grad(n, 2) ? &grad_in[2] : NULL);
}

filo_status filo_ag_conv2d(filo_var *x, filo_var *w, filo_var *bias, const filo_conv2d_params *p, filo_var **y)
{
    if (!x || !w || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x, w and y must not be NULL");
    const filo_tensor *xv = filo_var_value(x), *wv = filo_var_value(w);
    filo_tensor *out;
    FILO_TRY(filo_conv2d_forward(xv, wv, bias ? filo_var_value(bias) : NULL, p, &out));
    filo_var *in[3] = {x, w, bias};
    filo_node *n;
    filo_status s = filo_node_begin("conv2d", conv2d_backward, 3, in, 1, sizeof(conv2d_ctx), &n);
    if (s == FILO_OK && n) {
        if (p)
            ((conv2d_ctx *)n->ctx)->p = *p;
        s = filo_node_save(n, xv);
        if (s == FILO_OK)
            s = filo_node_save(n, wv);
    }
    return filo_node_finish(n, s, 1, &out, y);
}

/* ---- pooling ---- */

typedef struct pool2d_ctx {
    filo_pool2d_params p;
    int64_t x_shape[4];
} pool2d_ctx;

static void pool2d_ctx_fill(filo_node *n, const filo_tensor *x, const filo_pool2d_params *p)
{
    pool2d_ctx *c = n->ctx;
    c->p = *p;
    memcpy(c->x_shape, x->shape, sizeof c->x_shape);
}

/* Saved: the forward's indices (the maximum of each window). */
static filo_status maxpool2d_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const pool2d_ctx *c = n->ctx;
    return filo_maxpool2d_backward(grad_out[0], filo_node_saved(n, 0), c->x_shape, &c->p, &grad_in[0]);
}

filo_status filo_ag_maxpool2d(filo_var *x, const filo_pool2d_params *p, filo_var **y)
{
    if (!x || !p || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x, p and y must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *out, *indices;
    FILO_TRY(filo_maxpool2d_forward(xv, p, &out, &indices));
    filo_node *n;
    filo_status s = filo_node_begin("maxpool2d", maxpool2d_backward, 1, &x, 1, sizeof(pool2d_ctx), &n);
    if (s == FILO_OK && n) {
        pool2d_ctx_fill(n, xv, p);
        s = filo_node_save(n, indices);
    }
    filo_tensor_free(indices);
    return filo_node_finish(n, s, 1, &out, y);
}

static filo_status avgpool2d_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const pool2d_ctx *c = n->ctx;
    return filo_avgpool2d_backward(grad_out[0], c->x_shape, &c->p, &grad_in[0]);
}

filo_status filo_ag_avgpool2d(filo_var *x, const filo_pool2d_params *p, filo_var **y)
{
    if (!x || !p || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x, p and y must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *out;
    FILO_TRY(filo_avgpool2d_forward(xv, p, &out));
    filo_node *n;
    filo_status s = filo_node_begin("avgpool2d", avgpool2d_backward, 1, &x, 1, sizeof(pool2d_ctx), &n);
    if (s == FILO_OK && n)
        pool2d_ctx_fill(n, xv, p);
    return filo_node_finish(n, s, 1, &out, y);
}
