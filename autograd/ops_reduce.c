/* Differentiable reductions (sum, mean, max, min, var) and softmax / log-softmax. */
#include <string.h>

#include "error.h"
#include "filo/ag.h"
#include "filo/layout.h"
#include "node.h"

typedef struct reduce_ctx {
    filo_reduce_op op;
    int dim;        /* normalized, or FILO_ALL_DIMS */
    int keepdim;
    int correction; /* var */
    int ndim;
    int64_t shape[FILO_MAX_DIMS];
} reduce_ctx;

/* A reduced tensor (g, or the reduction's output) viewed with the input's shape: the reduced
 * dims become size 1 and are expanded (stride 0), nothing is copied. */
static filo_status expand_back(const reduce_ctx *c, const filo_tensor *g, filo_tensor **out)
{
    int64_t kept[FILO_MAX_DIMS];
    for (int d = 0; d < c->ndim; d++)
        kept[d] = (c->dim == FILO_ALL_DIMS || d == c->dim) ? 1 : c->shape[d];
    filo_tensor *k;
    FILO_TRY(filo_tensor_reshape(g, c->ndim, kept, &k));
    filo_status s = filo_tensor_expand(k, c->ndim, c->shape, out);
    filo_tensor_free(k);
    return s;
}

static int64_t reduced_count(const reduce_ctx *c)
{
    int64_t n = 1;
    for (int d = 0; d < c->ndim; d++)
        if (c->dim == FILO_ALL_DIMS || d == c->dim)
            n *= c->shape[d];
    return n;
}

static filo_status reduce_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const reduce_ctx *c = n->ctx;
    filo_tensor *ge = NULL, *a = NULL, *b = NULL, *m = NULL, *cnt = NULL;
    filo_status s = expand_back(c, grad_out[0], &ge);
    if (s != FILO_OK)
        return s;
    switch (c->op) {
    case FILO_REDUCE_SUM:
        grad_in[0] = ge;
        return FILO_OK;
    case FILO_REDUCE_MEAN:
        s = filo_binary_scalar(FILO_BINARY_DIV, ge, (double)reduced_count(c), 0, &grad_in[0]);
        break;
    case FILO_REDUCE_MAX:
    case FILO_REDUCE_MIN: {
        /* Evenly between the elements equal to the extreme (amax/amin's gradient). */
        const filo_tensor *x = filo_node_saved(n, 0);
        int rd = c->dim == FILO_ALL_DIMS ? FILO_ALL_DIMS : c->dim;
        s = expand_back(c, filo_node_saved(n, 1), &a);
        if (s == FILO_OK)
            s = filo_binary(FILO_BINARY_EQ, x, a, &m);
        if (s == FILO_OK)
            s = filo_cast(m, x->dtype, &b);
        if (s == FILO_OK)
            s = filo_reduce(FILO_REDUCE_SUM, b, rd, 1, &cnt);
        filo_tensor_free(a);
        a = NULL;
        if (s == FILO_OK)
            s = filo_binary(FILO_BINARY_DIV, ge, cnt, &a); /* cnt broadcasts over the reduced dims */
        filo_tensor_free(b);
        b = NULL;
        if (s == FILO_OK)
            s = filo_tensor_zeros(x->device, x->dtype, 0, NULL, &b);
        if (s == FILO_OK)
            s = filo_where(m, a, b, &grad_in[0]);
        break;
    }
    }
    filo_tensor_free(ge);
    filo_tensor_free(a);
    filo_tensor_free(b);
    filo_tensor_free(m);
    filo_tensor_free(cnt);
    return s;
}

static filo_status normalize_dim(const filo_tensor *x, int dim, int *out)
{
    if (dim == FILO_ALL_DIMS) {
        *out = dim;
        return FILO_OK;
    }
    int nd = x->ndim ? x->ndim : 1;
    if (dim < -nd || dim >= nd)
        return FILO_FAIL(FILO_ERR_SHAPE, "dim %d is out of range for %d dims", dim, x->ndim);
    *out = x->ndim == 0 ? FILO_ALL_DIMS : (dim + nd) % nd;
    return FILO_OK;
}

static void fill_ctx(reduce_ctx *c, const filo_tensor *x, filo_reduce_op op, int dim, int keepdim)
{
    c->op = op;
    c->dim = dim;
    c->keepdim = keepdim;
    c->ndim = x->ndim;
    memcpy(c->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
}

filo_status filo_ag_reduce(filo_reduce_op op, filo_var *x, int dim, int keepdim, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *y;
    FILO_TRY(filo_reduce(op, xv, dim, keepdim, &y));
    static const char *names[] = {"sum", "mean", "max", "min"};
    filo_node *n;
    filo_status s = filo_node_begin(names[op], reduce_backward, 1, &x, 1, sizeof(reduce_ctx), &n);
    if (s == FILO_OK && n) {
        reduce_ctx *c = n->ctx;
        s = normalize_dim(xv, dim, &dim);
        fill_ctx(c, xv, op, dim, keepdim);
        if (s == FILO_OK && (op == FILO_REDUCE_MAX || op == FILO_REDUCE_MIN)) {
            s = filo_node_save(n, xv);
            if (s == FILO_OK)
                s = filo_node_save(n, y);
        }
    }
    return filo_node_finish(n, s, 1, &y, out);
}

filo_status filo_ag_sum(filo_var *x, int dim, int keepdim, filo_var **out)
{
    return filo_ag_reduce(FILO_REDUCE_SUM, x, dim, keepdim, out);
}

filo_status filo_ag_mean(filo_var *x, int dim, int keepdim, filo_var **out)
{
    return filo_ag_reduce(FILO_REDUCE_MEAN, x, dim, keepdim, out);
}

/* dvar/dx = 2 (x - mean) / (N - correction) */
static filo_status var_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    const reduce_ctx *c = n->ctx;
    const filo_tensor *x = filo_node_saved(n, 0);
    filo_tensor *ge = NULL, *mean = NULL, *d = NULL, *t = NULL;
    int rd = c->dim;
    filo_status s = expand_back(c, grad_out[0], &ge);
    if (s == FILO_OK)
        s = filo_reduce(FILO_REDUCE_MEAN, x, rd, 1, &mean);
    if (s == FILO_OK)
        s = filo_binary(FILO_BINARY_SUB, x, mean, &d);
    if (s == FILO_OK)
        s = filo_binary(FILO_BINARY_MUL, ge, d, &t);
    if (s == FILO_OK)
        s = filo_binary_scalar(FILO_BINARY_MUL, t, 2.0 / (double)(reduced_count(c) - c->correction), 0, &grad_in[0]);
    filo_tensor_free(ge);
    filo_tensor_free(mean);
    filo_tensor_free(d);
    filo_tensor_free(t);
    return s;
}

filo_status filo_ag_var(filo_var *x, int dim, int correction, int keepdim, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    const filo_tensor *xv = filo_var_value(x);
    filo_tensor *y;
    FILO_TRY(filo_variance(xv, dim, correction, keepdim, &y));
    filo_node *n;
    filo_status s = filo_node_begin("var", var_backward, 1, &x, 1, sizeof(reduce_ctx), &n);
    if (s == FILO_OK && n) {
        reduce_ctx *c = n->ctx;
        s = normalize_dim(xv, dim, &dim);
        fill_ctx(c, xv, FILO_REDUCE_SUM, dim, keepdim);
        c->correction = correction;
        if (s == FILO_OK)
            s = filo_node_save(n, xv);
    }
    return filo_node_finish(n, s, 1, &y, out);
}

/* softmax: dx = y * (g - sum(g * y));  log_softmax: dx = g - exp(y) * sum(g), sums over the last dim. */
static filo_status softmax_backward(filo_node *n, filo_tensor *const *grad_out, filo_tensor **grad_in)
{
    int log_form = *(const int *)n->ctx;
    const filo_tensor *y = filo_node_saved(n, 0), *g = grad_out[0];
    filo_tensor *t = NULL, *sum = NULL, *u = NULL;
    int last = y->ndim ? -1 : FILO_ALL_DIMS;
    filo_status s;
    if (log_form) {
        s = filo_reduce(FILO_REDUCE_SUM, g, last, 1, &sum);
        if (s == FILO_OK)
            s = filo_unary(FILO_UNARY_EXP, y, &t);
        if (s == FILO_OK)
            s = filo_binary(FILO_BINARY_MUL, t, sum, &u);
        if (s == FILO_OK)
            s = filo_binary(FILO_BINARY_SUB, g, u, &grad_in[0]);
    } else {
        s = filo_binary(FILO_BINARY_MUL, g, y, &t);
        if (s == FILO_OK)
            s = filo_reduce(FILO_REDUCE_SUM, t, last, 1, &sum);
        if (s == FILO_OK)
            s = filo_binary(FILO_BINARY_SUB, g, sum, &u);
        if (s == FILO_OK)
            s = filo_binary(FILO_BINARY_MUL, y, u, &grad_in[0]);
    }
    filo_tensor_free(t);
    filo_tensor_free(sum);
    filo_tensor_free(u);
    return s;
}

static filo_status softmax_any(filo_var *x, int log_form, filo_var **out)
{
    if (!x || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and out must not be NULL");
    filo_tensor *y;
    FILO_TRY(log_form ? filo_log_softmax(filo_var_value(x), &y) : filo_softmax(filo_var_value(x), &y));
    filo_node *n;
    filo_status s = filo_node_begin(log_form ? "log_softmax" : "softmax", softmax_backward, 1, &x, 1, sizeof(int), &n);
    if (s == FILO_OK && n) {
        *(int *)n->ctx = log_form;
        s = filo_node_save(n, y);
    }
    return filo_node_finish(n, s, 1, &y, out);
}

filo_status filo_ag_softmax(filo_var *x, filo_var **out) { return softmax_any(x, 0, out); }
filo_status filo_ag_log_softmax(filo_var *x, filo_var **out) { return softmax_any(x, 1, out); }
