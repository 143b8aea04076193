/* Differentiable elementwise ops (filo/ag.h): finite-difference checks in float64 on the CPU for
 * every unary op, pow, each arithmetic binary op with broadcasting, the scalar forms and where;
 * gradient parity in f32 on every backend against the float64 gradients. */
#include <math.h>
#include <string.h>

#include "gradcheck.h"

static filo_status run_unary(void *ctx, filo_var *const *in, filo_var **out)
{
    return filo_ag_unary(*(filo_unary_op *)ctx, in[0], out);
}

/* Inputs away from each op's kinks and domain edges (0 for abs/relu, x > 0 for log/sqrt). */
static gradcheck_case unary_case(filo_unary_op *op)
{
    int positive = *op == FILO_UNARY_LOG || *op == FILO_UNARY_SQRT || *op == FILO_UNARY_RSQRT;
    gradcheck_case c = {.name = filo_unary_op_name(*op), .n_inputs = 1, .fn = run_unary, .ctx = op};
    c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {3, 7}, .lo = positive ? 0.3 : -2.5, .hi = 2.5};
    return c;
}

Test(ag_elementwise, unary_finite_differences)
{
    for (int k = 0; k < FILO_UNARY_OP_COUNT; k++) {
        filo_unary_op op = (filo_unary_op)k;
        gradcheck_case c = unary_case(&op);
        gradcheck_fd(&c);
    }
}

Test(ag_elementwise, unary_parity)
{
    for (int k = 0; k < FILO_UNARY_OP_COUNT; k++) {
        filo_unary_op op = (filo_unary_op)k;
        gradcheck_case c = unary_case(&op);
        c.inputs[0].shape[1] = 33;
        gradcheck_parity(&c, FILO_F32);
    }
}

/* softplus past its threshold passes the gradient through unchanged. */
Test(ag_elementwise, softplus_threshold)
{
    double v[3] = {21.0, 30.0, -3.0};
    filo_unary_op op = FILO_UNARY_SOFTPLUS;
    gradcheck_case c = {.name = "softplus", .n_inputs = 1, .fn = run_unary, .ctx = &op};
    c.inputs[0] = (gradcheck_input){.ndim = 1, .shape = {3}, .values = v};
    gradcheck_fd(&c);
}

static filo_status run_pow(void *ctx, filo_var *const *in, filo_var **out)
{
    return filo_ag_pow_scalar(in[0], *(double *)ctx, out);
}

Test(ag_elementwise, pow)
{
    double ps[] = {2.0, 3.0, 0.5, -1.5, 0.0};
    for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
        gradcheck_case c = {.name = "pow", .n_inputs = 1, .fn = run_pow, .ctx = &ps[k]};
        c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {4, 5}, .lo = 0.4, .hi = 2.0};
        gradcheck_fd(&c);
        gradcheck_parity(&c, FILO_F32);
    }
}

static filo_status run_binary(void *ctx, filo_var *const *in, filo_var **out)
{
    return filo_ag_binary(*(filo_binary_op *)ctx, in[0], in[1], out);
}

/* a [4, 1, 5] with b [3, 1]: both sides broadcast. */
Test(ag_elementwise, binary_broadcast)
{
    for (int k = FILO_BINARY_ADD; k <= FILO_BINARY_MIN; k++) {
        filo_binary_op op = (filo_binary_op)k;
        gradcheck_case c = {.name = filo_binary_op_name(op), .n_inputs = 2, .fn = run_binary, .ctx = &op};
        c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {4, 1, 5}, .lo = 0.5, .hi = 2.0};
        c.inputs[1] = (gradcheck_input){.ndim = 2, .shape = {3, 1}, .lo = 0.5, .hi = 2.0};
        gradcheck_fd(&c);
        gradcheck_parity(&c, FILO_F32);
        c.inputs[1].no_grad = 1; /* a constant operand gets no gradient, the other still does */
        gradcheck_fd(&c);
    }
}

/* maximum/minimum split the gradient between equal operands, as PyTorch does. */
Test(ag_elementwise, max_min_ties)
{
    double a[4] = {1, 2, 3, 4}, b[4] = {1, 5, 3, 0};
    const filo_binary_op ops[2] = {FILO_BINARY_MAX, FILO_BINARY_MIN};
    const double want_a[2][4] = {{0.5, 0, 0.5, 1}, {0.5, 1, 0.5, 0}};
    for (int k = 0; k < 2; k++) {
        int64_t shape = 4;
        filo_tensor *ta = filo_test_upload(filo_cpu(), FILO_F64, 1, &shape, a);
        filo_tensor *tb = filo_test_upload(filo_cpu(), FILO_F64, 1, &shape, b);
        filo_var *va, *vb, *y, *l;
        FILO_CHECK(filo_var_new(ta, 1, &va));
        FILO_CHECK(filo_var_new(tb, 1, &vb));
        FILO_CHECK(filo_ag_binary(ops[k], va, vb, &y));
        FILO_CHECK(filo_ag_sum(y, FILO_ALL_DIMS, 0, &l));
        FILO_CHECK(filo_backward(l, NULL, 0));
        double *ga = filo_test_download(filo_var_grad(va)), *gb = filo_test_download(filo_var_grad(vb));
        for (int i = 0; i < 4; i++) {
            cr_assert_eq(ga[i], want_a[k][i], "%s: d/da[%d] = %g", filo_binary_op_name(ops[k]), i, ga[i]);
            cr_assert_eq(ga[i] + gb[i], 1.0);
        }
        free(ga);
        free(gb);
        filo_var_free(l);
        filo_var_free(y);
        filo_var_free(va);
        filo_var_free(vb);
        filo_tensor_free(ta);
        filo_tensor_free(tb);
    }
}

typedef struct scalar_args {
    filo_binary_op op;
    double s;
    int reversed;
} scalar_args;

static filo_status run_scalar(void *ctx, filo_var *const *in, filo_var **out)
{
    scalar_args *a = ctx;
    return filo_ag_binary_scalar(a->op, in[0], a->s, a->reversed, out);
}

Test(ag_elementwise, scalar_ops)
{
    for (int k = FILO_BINARY_ADD; k <= FILO_BINARY_MIN; k++) {
        for (int rev = 0; rev < 2; rev++) {
            scalar_args a = {(filo_binary_op)k, 1.25, rev};
            gradcheck_case c = {.name = filo_binary_op_name(a.op), .n_inputs = 1, .fn = run_scalar, .ctx = &a};
            c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {5, 3}, .lo = 0.5, .hi = 2.0};
            gradcheck_fd(&c);
            gradcheck_parity(&c, FILO_F32);
        }
    }
}

static filo_status run_where(void *ctx, filo_var *const *in, filo_var **out)
{
    return filo_ag_where(ctx, in[0], in[1], out);
}

Test(ag_elementwise, where_broadcast)
{
    int64_t shape[2] = {3, 4};
    double m[12];
    for (int i = 0; i < 12; i++)
        m[i] = (i * 7) % 3 == 0;
    filo_tensor *cond = filo_test_upload(filo_cpu(), FILO_U8, 2, shape, m);
    gradcheck_case c = {.name = "where", .n_inputs = 2, .fn = run_where, .ctx = cond};
    c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {3, 4}, .lo = -1, .hi = 1};
    c.inputs[1] = (gradcheck_input){.ndim = 1, .shape = {4}, .lo = -1, .hi = 1};
    gradcheck_fd(&c);
    filo_tensor_free(cond);
}

Test(ag_elementwise, comparisons_have_no_gradient)
{
    int64_t shape = 2;
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 1, &shape, &t));
    filo_var *v, *y = NULL;
    FILO_CHECK(filo_var_new(t, 1, &v));
    FILO_CHECK_FAILS(filo_ag_binary(FILO_BINARY_LT, v, v, &y), FILO_ERR_INVALID_ARG, "no gradient");
    filo_var_free(v);
    filo_tensor_free(t);
}
