/* Differentiable matmul with its bias and bias + GELU epilogues. The gradient GEMMs are
 * filo_matmul calls whose trans flags read the saved operands in place (no transposed copies). */
#include <string.h>

#include "error.h"
#include "filo/ag.h"
#include "filo/bias_act.h"
#include "filo/reduce.h"
#include "node.h"

enum { IN_A, IN_B, IN_BIAS };

typedef struct matmul_ctx {
    int trans_a, trans_b;
    filo_matmul_epilogue ep;
    int a_ndim, b_ndim;
    int64_t a_shape[3], b_shape[3];
    int saved_a, saved_b, saved_gelu_input; /* indices into the saved tensors, -1: not saved */
} matmul_ctx;

/* d op(a) = g op(b)^T, written as the gradient of a itself: op(b) g^T when a was transposed.
 * A batched a with a shared b has no batched-b-on-the-left GEMM: its transposed gradient is the
 * transposed view of g op(b)^T. */
static filo_status grad_a(const matmul_ctx *c, const filo_tensor *g, const filo_tensor *b, filo_tensor **out)
{
    int tb = c->trans_b;
    if (!c->trans_a)
        return filo_matmul(g, b, 0, !tb, NULL, FILO_MATMUL_EPILOGUE_NONE, out, NULL);
    if (c->b_ndim == c->a_ndim)
        return filo_matmul(b, g, tb, 1, NULL, FILO_MATMUL_EPILOGUE_NONE, out, NULL);
    filo_tensor *t;
    FILO_TRY(filo_matmul(g, b, 0, !tb, NULL, FILO_MATMUL_EPILOGUE_NONE, &t, NULL));
    filo_status s = filo_tensor_transpose(t, 1, 2, out);
    filo_tensor_free(t);
    return s;
}

/* op(a)^T g (or its transpose g^T op(a) when b was transposed), for a b of a's rank. */
static filo_status grad_b_same_rank(const matmul_ctx *c, const filo_tensor *g, const filo_tensor *a,
                                    filo_tensor **out)
{
    if (!c->trans_b)
        return filo_matmul(a, g, !c->trans_a, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, out, NULL);
    return filo_matmul(g, a, 1, c->trans_a, NULL, FILO_MATMUL_EPILOGUE_NONE, out, NULL);
}

/* A b shared by every batch gets the sum over the batch. Without trans_a the batch folds into
 * the rows of one GEMM ([B*M, K]^T [B*M, N]); a transposed a does not fold without a copy, so its
 * per-batch products are summed instead. */
static filo_status grad_b_shared(const matmul_ctx *c, const filo_tensor *g, const filo_tensor *a, filo_tensor **out)
{
    filo_tensor *t = NULL, *a2 = NULL, *g2 = NULL;
    filo_status s;
    if (c->trans_a) {
        s = grad_b_same_rank(c, g, a, &t);
        if (s == FILO_OK)
            s = filo_reduce(FILO_REDUCE_SUM, t, 0, 0, out);
        filo_tensor_free(t);
        return s;
    }
    int64_t rows = c->a_shape[0] * c->a_shape[1];
    int64_t as[2] = {rows, c->a_shape[2]}, gs[2] = {rows, g->shape[2]};
    s = filo_tensor_reshape(a, 2, as, &a2);
    if (s == FILO_OK)
        s = filo_tensor_reshape(g, 2, gs, &g2);
    if (s == FILO_OK)
        s = c->trans_b ? filo_matmul(g2, a2, 1, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, out, NULL)
                       : filo_matmul(a2, g2, 1, 0, NULL, FILO_MATMUL_EPILOGUE_NONE, out, NULL);
    filo_tensor_free(a2);
    filo_tensor_free(g2);
    return s;
}

/* dbias: the column sums of the pre-epilogue gradient. */
static filo_status grad_bias(const filo_tensor *g, filo_tensor **out)
{
    int64_t N = g->shape[g->ndim - 1];
    int64_t shape[2] = {filo_tensor_numel(g) / N, N};
    filo_tensor *g2;
    FILO_TRY(filo_tensor_reshape(g, 2, shape, &g2));
    filo_status s = filo_reduce(FILO_REDUCE_SUM, g2, 0, 0, out);
    filo_tensor_free(g2);
    return s;
}

/* An empty output (M, N or B is 0) leaves the GEMMs without a contraction dim (filo_matmul
 * wants K >= 1): every gradient is zero then. */
static filo_status zero_grads(filo_node *n, const matmul_ctx *c, const filo_tensor *g, filo_tensor **grad_in)
{
    filo_status s = FILO_OK;
    if (filo_node_needs_grad(n, IN_A))
        s = filo_tensor_zeros(g->device, g->dtype, c->a_ndim, c->a_shape, &grad_in[IN_A]);
    if (s == FILO_OK && filo_node_needs_grad(n, IN_B))
        s = filo_tensor_zeros(g->device, g->dtype, c->b_ndim, c->b_shape, &grad_in[IN_B]);
    if (s == FILO_OK && filo_node_needs_grad(n, IN_BIAS))
        s = filo_tensor_zeros(g->device, g->dtype, 1, &g->shape[g->ndim - 1], &grad_in[IN_BIAS]);
    return s;
}

static filo_status matmul_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const matmul_ctx *c = n->ctx;
    if (filo_tensor_numel(grad_out[0]) == 0)
        return zero_grads(n, c, grad_out[0], grad_in);
    filo_tensor *g = NULL;
    filo_status s = c->ep == FILO_MATMUL_EPILOGUE_BIAS_GELU
                        ? filo_bias_gelu_backward(grad_out[0], filo_node_saved(n, c->saved_gelu_input), NULL, 0,
                                                  &g, NULL)
                        : filo_tensor_alias(grad_out[0], &g);
    if (s == FILO_OK && filo_node_needs_grad(n, IN_A))
        s = grad_a(c, g, filo_node_saved(n, c->saved_b), &grad_in[IN_A]);
    if (s == FILO_OK && filo_node_needs_grad(n, IN_B)) {
        const filo_tensor *a = filo_node_saved(n, c->saved_a);
        s = c->b_ndim < c->a_ndim ? grad_b_shared(c, g, a, &grad_in[IN_B]) : grad_b_same_rank(c, g, a, &grad_in[IN_B]);
    }
    if (s == FILO_OK && filo_node_needs_grad(n, IN_BIAS))
        s = grad_bias(g, &grad_in[IN_BIAS]);
    filo_tensor_free(g);
    return s;
}

filo_status filo_ag_matmul(filo_var *a, filo_var *b, int trans_a, int trans_b, filo_var *bias,
                           filo_matmul_epilogue ep, filo_var **out)
{
    if (!a || !b || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "a, b and out must not be NULL");
    const filo_tensor *av = filo_var_value(a), *bv = filo_var_value(b);
    int gelu = ep == FILO_MATMUL_EPILOGUE_BIAS_GELU;
    filo_tensor *y, *gelu_input = NULL;
    FILO_TRY(filo_matmul(av, bv, trans_a, trans_b, bias ? filo_var_value(bias) : NULL, ep, &y,
                         gelu ? &gelu_input : NULL));
    filo_var *in[3] = {a, b, bias};
    filo_node *n;
    filo_status s = filo_node_begin("matmul", matmul_backward, 3, in, 1, sizeof(matmul_ctx), &n);
    if (s == FILO_OK && n) {
        matmul_ctx *c = n->ctx;
        c->trans_a = trans_a != 0;
        c->trans_b = trans_b != 0;
        c->ep = ep;
        c->a_ndim = av->ndim;
        c->b_ndim = bv->ndim;
        memcpy(c->a_shape, av->shape, sizeof(int64_t) * (size_t)av->ndim);
        memcpy(c->b_shape, bv->shape, sizeof(int64_t) * (size_t)bv->ndim);
        c->saved_a = c->saved_b = c->saved_gelu_input = -1;
        /* a's gradient reads b and b's reads a. */
        if (filo_node_needs_grad(n, IN_B))
            s = filo_node_save_at(n, av, &c->saved_a);
        if (s == FILO_OK && filo_node_needs_grad(n, IN_A))
            s = filo_node_save_at(n, bv, &c->saved_b);
        if (s == FILO_OK && gelu)
            s = filo_node_save_at(n, gelu_input, &c->saved_gelu_input);
    }
    filo_tensor_free(gelu_input);
    return filo_node_finish(n, s, 1, &y, out);
}
