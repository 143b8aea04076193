/* Differentiable elementwise ops: unary math and activations, pow, binary arithmetic with
 * broadcasting, tensor-scalar arithmetic, where. Backwards are compositions of the elementwise
 * kernels; GELU reuses the fused bias-GELU backward. */
#include <math.h>

#include "error.h"
#include "filo/ag.h"
#include "filo/bias_act.h"
#include "filo/layout.h"
#include "node.h"

/* Tiny composition helpers: each returns a new tensor through *o. */
static filo_status mul(const filo_tensor *a, const filo_tensor *b, filo_tensor **o)
{
    return filo_binary(FILO_BINARY_MUL, a, b, o);
}

static filo_status scale(const filo_tensor *a, double s, filo_tensor **o)
{
    return filo_binary_scalar(FILO_BINARY_MUL, a, s, 0, o);
}

static filo_status zero_like_scalar(const filo_tensor *t, filo_tensor **o)
{
    return filo_tensor_zeros(t->device, t->dtype, 0, NULL, o);
}

/* u8 mask of (x rel s) for a scalar s. */
static filo_status compare_scalar(filo_binary_op rel, const filo_tensor *x, double s, filo_tensor **mask)
{
    filo_tensor *c;
    FILO_TRY(filo_tensor_full(x->device, x->dtype, 0, NULL, s, &c));
    filo_status st = filo_binary(rel, x, c, mask);
    filo_tensor_free(c);
    return st;
}

/* where(mask, g, 0) */
static filo_status keep_where(const filo_tensor *mask, const filo_tensor *g, filo_tensor **o)
{
    filo_tensor *z;
    FILO_TRY(zero_like_scalar(g, &z));
    filo_status s = filo_where(mask, g, z, o);
    filo_tensor_free(z);
    return s;
}

/* The gradient share of a max/min operand: g where it wins (`win` mask), g/2 at ties, else 0. */
static filo_status tie_split(const filo_tensor *win, const filo_tensor *tie, const filo_tensor *g, filo_tensor **o)
{
    filo_tensor *half = NULL, *tied = NULL;
    filo_status s = scale(g, 0.5, &half);
    if (s == FILO_OK)
        s = keep_where(tie, half, &tied);
    if (s == FILO_OK)
        s = filo_where(win, g, tied, o);
    filo_tensor_free(half);
    filo_tensor_free(tied);
    return s;
}

/* ---- unary ---- */

typedef struct unary_ctx {
    filo_unary_op op;
} unary_ctx;

/* Whether the backward of op needs the output (else it needs the input). */
static int unary_saves_output(filo_unary_op op)
{
    return op == FILO_UNARY_EXP || op == FILO_UNARY_SQRT || op == FILO_UNARY_RSQRT || op == FILO_UNARY_TANH ||
           op == FILO_UNARY_SIGMOID || op == FILO_UNARY_RELU;
}

static filo_status unary_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const unary_ctx *c = n->ctx;
    const filo_tensor *g = grad_out[0];
    const filo_tensor *t = filo_node_saved(n, 0); /* y or x, see unary_saves_output */
    filo_tensor *a = NULL, *b = NULL, *m = NULL;
    filo_status s = FILO_OK;
    switch (c->op) {
    case FILO_UNARY_NEG:
        return filo_unary(FILO_UNARY_NEG, g, &grad_in[0]);
    case FILO_UNARY_ABS: /* g * sign(x), 0 at 0 */
        s = compare_scalar(FILO_BINARY_GT, t, 0.0, &m);
        if (s == FILO_OK)
            s = compare_scalar(FILO_BINARY_LT, t, 0.0, &a);
        if (s == FILO_OK)
            s = filo_unary(FILO_UNARY_NEG, g, &b);
        if (s == FILO_OK) {
            filo_tensor *neg_part = NULL;
            s = keep_where(a, b, &neg_part);
            if (s == FILO_OK)
                s = filo_where(m, g, neg_part, &grad_in[0]);
            filo_tensor_free(neg_part);
        }
        break;
    case FILO_UNARY_EXP:
        return mul(g, t, &grad_in[0]);
    case FILO_UNARY_LOG:
        return filo_binary(FILO_BINARY_DIV, g, t, &grad_in[0]);
    case FILO_UNARY_SQRT: /* g / (2 y) */
        s = filo_binary(FILO_BINARY_DIV, g, t, &a);
        if (s == FILO_OK)
            s = scale(a, 0.5, &grad_in[0]);
        break;
    case FILO_UNARY_RSQRT: /* -0.5 g y^3 */
        s = filo_pow_scalar(t, 3.0, &a);
        if (s == FILO_OK)
            s = mul(g, a, &b);
        if (s == FILO_OK)
            s = scale(b, -0.5, &grad_in[0]);
        break;
    case FILO_UNARY_TANH: /* g (1 - y^2) */
        s = mul(t, t, &a);
        if (s == FILO_OK)
            s = filo_binary_scalar(FILO_BINARY_SUB, a, 1.0, 1, &b);
        if (s == FILO_OK)
            s = mul(g, b, &grad_in[0]);
        break;
    case FILO_UNARY_SIGMOID: /* g y (1 - y) */
        s = filo_binary_scalar(FILO_BINARY_SUB, t, 1.0, 1, &a);
        if (s == FILO_OK)
            s = mul(t, a, &b);
        if (s == FILO_OK)
            s = mul(g, b, &grad_in[0]);
        break;
    case FILO_UNARY_RELU:
        s = compare_scalar(FILO_BINARY_GT, t, 0.0, &m);
        if (s == FILO_OK)
            s = keep_where(m, g, &grad_in[0]);
        break;
    case FILO_UNARY_GELU:
    case FILO_UNARY_GELU_TANH: {
        /* The fused bias-GELU backward wants a row layout: a 0-dim tensor becomes one element. */
        int64_t one = 1;
        filo_tensor *g1 = NULL, *x1 = NULL, *d1 = NULL;
        int flat = t->ndim == 0;
        s = flat ? filo_tensor_reshape(g, 1, &one, &g1) : filo_tensor_alias(g, &g1);
        if (s == FILO_OK)
            s = flat ? filo_tensor_reshape(t, 1, &one, &x1) : filo_tensor_alias(t, &x1);
        if (s == FILO_OK)
            s = filo_bias_gelu_backward(g1, x1, NULL, c->op == FILO_UNARY_GELU_TANH, &d1, NULL);
        if (s == FILO_OK)
            s = flat ? filo_tensor_reshape(d1, 0, NULL, &grad_in[0]) : filo_tensor_alias(d1, &grad_in[0]);
        filo_tensor_free(g1);
        filo_tensor_free(x1);
        filo_tensor_free(d1);
        break;
    }
    case FILO_UNARY_SILU: /* g s (1 + x (1 - s)) */
        s = filo_unary(FILO_UNARY_SIGMOID, t, &a);
        if (s == FILO_OK)
            s = filo_binary_scalar(FILO_BINARY_SUB, a, 1.0, 1, &b);
        if (s == FILO_OK) {
            filo_tensor *xb = NULL, *one_plus = NULL, *sg = NULL;
            s = mul(t, b, &xb);
            if (s == FILO_OK)
                s = filo_binary_scalar(FILO_BINARY_ADD, xb, 1.0, 0, &one_plus);
            if (s == FILO_OK)
                s = mul(a, one_plus, &sg);
            if (s == FILO_OK)
                s = mul(g, sg, &grad_in[0]);
            filo_tensor_free(xb);
            filo_tensor_free(one_plus);
            filo_tensor_free(sg);
        }
        break;
    case FILO_UNARY_SOFTPLUS: /* g sigmoid(x), and g itself where x > 20 (the forward's threshold) */
        s = filo_unary(FILO_UNARY_SIGMOID, t, &a);
        if (s == FILO_OK)
            s = mul(g, a, &b);
        if (s == FILO_OK)
            s = compare_scalar(FILO_BINARY_GT, t, 20.0, &m);
        if (s == FILO_OK)
            s = filo_where(m, g, b, &grad_in[0]);
        break;
    default:
        s = FILO_FAIL(FILO_ERR_INTERNAL, "no backward for unary op %d", (int)c->op);
    }
    filo_tensor_free(a);
    filo_tensor_free(b);
    filo_tensor_free(m);
    return s;
}

filo_status filo_ag_unary(filo_unary_op op, filo_var *x, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    filo_tensor *y;
    FILO_TRY(filo_unary(op, filo_var_value(x), &y));
    filo_node *n;
    filo_status s = filo_node_begin(filo_unary_op_name(op), unary_backward, 1, &x, 1, sizeof(unary_ctx), &n);
    if (s == FILO_OK && n) {
        ((unary_ctx *)n->ctx)->op = op;
        if (op != FILO_UNARY_NEG)
            s = filo_node_save(n, unary_saves_output(op) ? y : filo_var_value(x));
    }
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- pow ---- */

typedef struct pow_ctx {
    double p;
} pow_ctx;

static filo_status pow_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    double p = ((const pow_ctx *)n->ctx)->p;
    const filo_tensor *x = filo_node_saved(n, 0);
    if (p == 0.0) {
        filo_tensor *z;
        FILO_TRY(zero_like_scalar(grad_out[0], &z));
        filo_status s = mul(grad_out[0], z, &grad_in[0]);
        filo_tensor_free(z);
        return s;
    }
    filo_tensor *a = NULL, *b = NULL;
    filo_status s = filo_pow_scalar(x, p - 1.0, &a);
    if (s == FILO_OK)
        s = scale(a, p, &b);
    if (s == FILO_OK)
        s = mul(grad_out[0], b, &grad_in[0]);
    filo_tensor_free(a);
    filo_tensor_free(b);
    return s;
}

filo_status filo_ag_pow_scalar(filo_var *x, double p, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    filo_tensor *y;
    FILO_TRY(filo_pow_scalar(filo_var_value(x), p, &y));
    filo_node *n;
    filo_status s = filo_node_begin("pow", pow_backward, 1, &x, 1, sizeof(pow_ctx), &n);
    if (s == FILO_OK && n) {
        ((pow_ctx *)n->ctx)->p = p;
        s = filo_node_save(n, filo_var_value(x));
    }
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- binary ---- */

typedef struct binary_ctx {
    filo_binary_op op;
    int a_ndim, b_ndim;
    int64_t a_shape[FILO_MAX_DIMS], b_shape[FILO_MAX_DIMS];
} binary_ctx;

/* The full-shape gradients of a and b (before summing back over broadcast dims). */
static filo_status binary_grads(const binary_ctx *c, const filo_tensor *g, const filo_tensor *a,
                                const filo_tensor *b, filo_tensor **ga, filo_tensor **gb)
{
    filo_tensor *t = NULL, *u = NULL, *w = NULL;
    filo_status s = FILO_OK;
    switch (c->op) {
    case FILO_BINARY_ADD:
        s = filo_tensor_alias(g, ga);
        if (s == FILO_OK)
            s = filo_tensor_alias(g, gb);
        break;
    case FILO_BINARY_SUB:
        s = filo_tensor_alias(g, ga);
        if (s == FILO_OK)
            s = filo_unary(FILO_UNARY_NEG, g, gb);
        break;
    case FILO_BINARY_MUL:
        s = mul(g, b, ga);
        if (s == FILO_OK)
            s = mul(g, a, gb);
        break;
    case FILO_BINARY_DIV: /* ga = g / b, gb = -(g / b) * a / b */
        s = filo_binary(FILO_BINARY_DIV, g, b, ga);
        if (s == FILO_OK)
            s = mul(*ga, a, &t);
        if (s == FILO_OK)
            s = filo_binary(FILO_BINARY_DIV, t, b, &u);
        if (s == FILO_OK)
            s = filo_unary(FILO_UNARY_NEG, u, gb);
        break;
    case FILO_BINARY_MAX:
    case FILO_BINARY_MIN: {
        filo_binary_op win = c->op == FILO_BINARY_MAX ? FILO_BINARY_GT : FILO_BINARY_LT;
        s = filo_binary(win, a, b, &t);
        if (s == FILO_OK)
            s = filo_binary(win, b, a, &u);
        if (s == FILO_OK)
            s = filo_binary(FILO_BINARY_EQ, a, b, &w);
        if (s == FILO_OK)
            s = tie_split(t, w, g, ga);
        if (s == FILO_OK)
            s = tie_split(u, w, g, gb);
        break;
    }
    default:
        s = FILO_FAIL(FILO_ERR_INTERNAL, "no backward for binary op %d", (int)c->op);
    }
    filo_tensor_free(t);
    filo_tensor_free(u);
    filo_tensor_free(w);
    return s;
}

static filo_status binary_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const binary_ctx *c = n->ctx;
    filo_tensor *ga = NULL, *gb = NULL;
    filo_status s = binary_grads(c, grad_out[0], filo_node_saved(n, 0), filo_node_saved(n, 1), &ga, &gb);
    if (s == FILO_OK && filo_node_needs_grad(n, 0))
        s = filo_grad_sum_to(ga, c->a_ndim, c->a_shape, &grad_in[0]);
    if (s == FILO_OK && filo_node_needs_grad(n, 1))
        s = filo_grad_sum_to(gb, c->b_ndim, c->b_shape, &grad_in[1]);
    filo_tensor_free(ga);
    filo_tensor_free(gb);
    return s;
}

static int is_arithmetic(filo_binary_op op) { return op >= FILO_BINARY_ADD && op <= FILO_BINARY_MIN; }

filo_status filo_ag_binary(filo_binary_op op, filo_var *a, filo_var *b, filo_var **out)
{
    if (!a || !b || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "a, b and out must not be NULL");
    if (!is_arithmetic(op))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "'%s' has no gradient: compare the values with filo_binary",
                         filo_binary_op_name(op));
    const filo_tensor *av = filo_var_value(a), *bv = filo_var_value(b);
    filo_tensor *y;
    FILO_TRY(filo_binary(op, av, bv, &y));
    filo_var *in[2] = {a, b};
    filo_node *n;
    filo_status s = filo_node_begin(filo_binary_op_name(op), binary_backward, 2, in, 1, sizeof(binary_ctx), &n);
    if (s == FILO_OK && n) {
        binary_ctx *c = n->ctx;
        c->op = op;
        c->a_ndim = av->ndim;
        c->b_ndim = bv->ndim;
        for (int d = 0; d < av->ndim; d++)
            c->a_shape[d] = av->shape[d];
        for (int d = 0; d < bv->ndim; d++)
            c->b_shape[d] = bv->shape[d];
        /* add and sub need neither operand: save them only where the backward reads them. */
        if (op != FILO_BINARY_ADD && op != FILO_BINARY_SUB) {
            s = filo_node_save(n, av);
            if (s == FILO_OK)
                s = filo_node_save(n, bv);
        }
    }
    return filo_node_finish(n, s, 1, &y, out);
}

filo_status filo_ag_add(filo_var *a, filo_var *b, filo_var **out) { return filo_ag_binary(FILO_BINARY_ADD, a, b, out); }
filo_status filo_ag_sub(filo_var *a, filo_var *b, filo_var **out) { return filo_ag_binary(FILO_BINARY_SUB, a, b, out); }
filo_status filo_ag_mul(filo_var *a, filo_var *b, filo_var **out) { return filo_ag_binary(FILO_BINARY_MUL, a, b, out); }
filo_status filo_ag_div(filo_var *a, filo_var *b, filo_var **out) { return filo_ag_binary(FILO_BINARY_DIV, a, b, out); }

/* ---- tensor-scalar ---- */

typedef struct scalar_ctx {
    filo_binary_op op;
    double s;
    int reversed;
} scalar_ctx;

static filo_status scalar_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const scalar_ctx *c = n->ctx;
    const filo_tensor *g = grad_out[0];
    filo_tensor *t = NULL, *u = NULL;
    filo_status s = FILO_OK;
    switch (c->op) {
    case FILO_BINARY_ADD:
        return filo_tensor_alias(g, &grad_in[0]);
    case FILO_BINARY_SUB:
        return c->reversed ? filo_unary(FILO_UNARY_NEG, g, &grad_in[0]) : filo_tensor_alias(g, &grad_in[0]);
    case FILO_BINARY_MUL:
        return scale(g, c->s, &grad_in[0]);
    case FILO_BINARY_DIV:
        if (!c->reversed)
            return filo_binary_scalar(FILO_BINARY_DIV, g, c->s, 0, &grad_in[0]);
        /* d(s / x) = -g y / x, with y = s / x and x saved in that order */
        s = mul(g, filo_node_saved(n, 1), &t);
        if (s == FILO_OK)
            s = filo_binary(FILO_BINARY_DIV, t, filo_node_saved(n, 0), &u);
        if (s == FILO_OK)
            s = filo_unary(FILO_UNARY_NEG, u, &grad_in[0]);
        break;
    case FILO_BINARY_MAX:
    case FILO_BINARY_MIN: {
        const filo_tensor *x = filo_node_saved(n, 0);
        s = compare_scalar(c->op == FILO_BINARY_MAX ? FILO_BINARY_GT : FILO_BINARY_LT, x, c->s, &t);
        if (s == FILO_OK)
            s = compare_scalar(FILO_BINARY_EQ, x, c->s, &u);
        if (s == FILO_OK)
            s = tie_split(t, u, g, &grad_in[0]);
        break;
    }
    default:
        s = FILO_FAIL(FILO_ERR_INTERNAL, "no backward for scalar op %d", (int)c->op);
    }
    filo_tensor_free(t);
    filo_tensor_free(u);
    return s;
}

filo_status filo_ag_binary_scalar(filo_binary_op op, filo_var *x, double sc, int reversed, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    filo_tensor *y;
    FILO_TRY(filo_binary_scalar(op, filo_var_value(x), sc, reversed, &y));
    filo_node *n;
    filo_status s = filo_node_begin(filo_binary_op_name(op), scalar_backward, 1, &x, 1, sizeof(scalar_ctx), &n);
    if (s == FILO_OK && n) {
        scalar_ctx *c = n->ctx;
        c->op = op;
        c->s = sc;
        c->reversed = reversed != 0;
        if (op == FILO_BINARY_MAX || op == FILO_BINARY_MIN || (op == FILO_BINARY_DIV && reversed))
            s = filo_node_save(n, filo_var_value(x));
        if (s == FILO_OK && op == FILO_BINARY_DIV && reversed)
            s = filo_node_save(n, y);
    }
    return filo_node_finish(n, s, 1, &y, out);
}

/* ---- where ---- */

typedef struct where_ctx {
    int a_ndim, b_ndim;
    int64_t a_shape[FILO_MAX_DIMS], b_shape[FILO_MAX_DIMS];
} where_ctx;

static filo_status where_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const where_ctx *c = n->ctx;
    const filo_tensor *cond = filo_node_saved(n, 0), *g = grad_out[0];
    filo_tensor *z, *full = NULL;
    FILO_TRY(zero_like_scalar(g, &z));
    filo_status s = FILO_OK;
    if (filo_node_needs_grad(n, 0)) {
        s = filo_where(cond, g, z, &full);
        if (s == FILO_OK)
            s = filo_grad_sum_to(full, c->a_ndim, c->a_shape, &grad_in[0]);
        filo_tensor_free(full);
        full = NULL;
    }
    if (s == FILO_OK && filo_node_needs_grad(n, 1)) {
        s = filo_where(cond, z, g, &full);
        if (s == FILO_OK)
            s = filo_grad_sum_to(full, c->b_ndim, c->b_shape, &grad_in[1]);
        filo_tensor_free(full);
    }
    filo_tensor_free(z);
    return s;
}

filo_status filo_ag_where(const filo_tensor *cond, filo_var *a, filo_var *b, filo_var **out)
{
    if (!cond || !a || !b || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "cond, a, b and out must not be NULL");
    const filo_tensor *av = filo_var_value(a), *bv = filo_var_value(b);
    filo_tensor *y;
    FILO_TRY(filo_where(cond, av, bv, &y));
    filo_var *in[2] = {a, b};
    filo_node *n;
    filo_status s = filo_node_begin("where", where_backward, 2, in, 1, sizeof(where_ctx), &n);
    if (s == FILO_OK && n) {
        where_ctx *c = n->ctx;
        c->a_ndim = av->ndim;
        c->b_ndim = bv->ndim;
        for (int d = 0; d < av->ndim; d++)
            c->a_shape[d] = av->shape[d];
        for (int d = 0; d < bv->ndim; d++)
            c->b_shape[d] = bv->shape[d];
        s = filo_node_save(n, cond);
    }
    return filo_node_finish(n, s, 1, &y, out);
}
