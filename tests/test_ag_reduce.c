/* Differentiable reductions (filo/ag.h): sum, mean, max and min over one dim (positive or
 * negative, keepdim 0 or 1) or all dims, variance with correction 0 and 1, softmax and
 * log-softmax. Finite differences in float64 on the CPU and f32 parity on every backend; max/min
 * ties checked with exact values on every backend; one bad argument per op. */
#include <math.h>
#include <string.h>

#include "gradcheck.h"

static void check_both(const gradcheck_case *c)
{
    gradcheck_fd(c);
    gradcheck_parity(c, FILO_F32);
}

typedef struct reduce_args {
    filo_reduce_op op;
    int dim;
    int keepdim;
    int correction;
} reduce_args;

static const char *const op_names[4] = {"sum", "mean", "max", "min"};

static filo_status run_reduce(void *ctx, filo_var *const *in, filo_var **out)
{
    const reduce_args *a = ctx;
    return filo_ag_reduce(a->op, in[0], a->dim, a->keepdim, out);
}

Test(ag_reduce, reductions)
{
    const int dims[] = {0, 1, -1, -2, FILO_ALL_DIMS};
    for (int op = FILO_REDUCE_SUM; op <= FILO_REDUCE_MIN; op++) {
        for (size_t d = 0; d < sizeof dims / sizeof *dims; d++) {
            for (int keepdim = 0; keepdim < 2; keepdim++) {
                reduce_args a = {(filo_reduce_op)op, dims[d], keepdim, 0};
                gradcheck_case c = {.name = op_names[op], .n_inputs = 1, .fn = run_reduce, .ctx = &a};
                c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {3, 4, 5}, .lo = -2, .hi = 2};
                check_both(&c);
            }
        }
    }
}

/* The named wrappers and a 0-d input (dim 0 and -1 name its only "axis"). */
static filo_status run_sum(void *ctx, filo_var *const *in, filo_var **out)
{
    const reduce_args *a = ctx;
    return filo_ag_sum(in[0], a->dim, a->keepdim, out);
}

static filo_status run_mean(void *ctx, filo_var *const *in, filo_var **out)
{
    const reduce_args *a = ctx;
    return filo_ag_mean(in[0], a->dim, a->keepdim, out);
}

Test(ag_reduce, wrappers_and_scalars)
{
    reduce_args a = {.dim = 1, .keepdim = 1};
    gradcheck_case c = {.name = "sum", .n_inputs = 1, .fn = run_sum, .ctx = &a};
    c.inputs[0] = (gradcheck_input){.ndim = 2, .shape = {3, 4}, .lo = -2, .hi = 2};
    check_both(&c);
    c.name = "mean";
    c.fn = run_mean;
    check_both(&c);
    const int dims[] = {0, -1, FILO_ALL_DIMS};
    for (int op = FILO_REDUCE_SUM; op <= FILO_REDUCE_MIN; op++) {
        for (size_t d = 0; d < 3; d++) {
            reduce_args s = {(filo_reduce_op)op, dims[d], (int)d & 1, 0};
            gradcheck_case sc = {.name = op_names[op], .n_inputs = 1, .fn = run_reduce, .ctx = &s};
            sc.inputs[0] = (gradcheck_input){.ndim = 0, .lo = -2, .hi = 2};
            check_both(&sc);
        }
    }
}

static filo_status run_var(void *ctx, filo_var *const *in, filo_var **out)
{
    const reduce_args *a = ctx;
    return filo_ag_var(in[0], a->dim, a->correction, a->keepdim, out);
}

Test(ag_reduce, variance)
{
    const int dims[] = {1, -1, 0, FILO_ALL_DIMS};
    for (int correction = 0; correction < 2; correction++) {
        for (size_t d = 0; d < sizeof dims / sizeof *dims; d++) {
            for (int keepdim = 0; keepdim < 2; keepdim++) {
                reduce_args a = {.dim = dims[d], .keepdim = keepdim, .correction = correction};
                gradcheck_case c = {.name = "var", .n_inputs = 1, .fn = run_var, .ctx = &a};
                c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {3, 4, 5}, .lo = -2, .hi = 2};
                check_both(&c);
            }
        }
    }
}

static filo_status run_softmax(void *ctx, filo_var *const *in, filo_var **out)
{
    return *(const int *)ctx ? filo_ag_log_softmax(in[0], out) : filo_ag_softmax(in[0], out);
}

Test(ag_reduce, softmax_and_log_softmax)
{
    const struct {
        int ndim;
        int64_t shape[3];
    } shapes[] = {{1, {7}}, {2, {3, 5}}, {3, {2, 3, 4}}, {0, {0}}};
    for (int log_form = 0; log_form < 2; log_form++) {
        for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
            gradcheck_case c = {.name = log_form ? "log_softmax" : "softmax", .n_inputs = 1, .fn = run_softmax,
                                .ctx = &log_form};
            c.inputs[0] = (gradcheck_input){.ndim = shapes[k].ndim, .lo = -3, .hi = 3};
            memcpy(c.inputs[0].shape, shapes[k].shape, sizeof shapes[k].shape);
            check_both(&c);
        }
    }
}

/* max/min give each of the tied extremes an equal share of the gradient (amax/amin's rule), on
 * every backend. */
Test(ag_reduce, max_min_ties)
{
    const double x[6] = {1, 3, 3, 2, 2, 2}, y[6] = {1, 3, 1, 2, 1, 5}, z[6] = {1, 3, 2, 1, 2, 2};
    const struct {
        filo_reduce_op op;
        int dim, keepdim;
        const double *values;
        double want[6];
    } cases[] = {
        {FILO_REDUCE_MAX, 1, 0, x, {0, 0.5, 0.5, 1.0 / 3, 1.0 / 3, 1.0 / 3}},
        {FILO_REDUCE_MAX, -2, 1, x, {0, 1, 1, 1, 0, 0}},
        {FILO_REDUCE_MAX, FILO_ALL_DIMS, 0, x, {0, 0.5, 0.5, 0, 0, 0}},
        {FILO_REDUCE_MIN, FILO_ALL_DIMS, 1, y, {1.0 / 3, 0, 1.0 / 3, 0, 1.0 / 3, 0}},
        {FILO_REDUCE_MIN, 0, 0, z, {0.5, 0, 0.5, 0.5, 1, 0.5}},
        {FILO_REDUCE_MIN, -1, 0, x, {1, 0, 0, 1.0 / 3, 1.0 / 3, 1.0 / 3}},
    };
    int64_t shape[2] = {2, 3};
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int b = 0; b < nd; b++) {
        for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
            filo_tensor *t = filo_test_upload(devs[b], FILO_F32, 2, shape, cases[k].values);
            filo_var *v, *r, *l;
            FILO_CHECK(filo_var_new(t, 1, &v));
            FILO_CHECK(filo_ag_reduce(cases[k].op, v, cases[k].dim, cases[k].keepdim, &r));
            FILO_CHECK(filo_ag_sum(r, FILO_ALL_DIMS, 0, &l));
            FILO_CHECK(filo_backward(l, NULL, 0));
            double *g = filo_test_download(filo_var_grad(v));
            for (int i = 0; i < 6; i++)
                cr_assert(fabs(g[i] - cases[k].want[i]) <= 1e-7, "%s case %zu on %s: dx[%d] = %.9g, want %.9g",
                          op_names[cases[k].op], k, filo_test_backend_name(devs[b]), i, g[i], cases[k].want[i]);
            free(g);
            filo_var_free(l);
            filo_var_free(r);
            filo_var_free(v);
            filo_tensor_free(t);
        }
    }
}

Test(ag_reduce, bad_arguments)
{
    int64_t shape[2] = {2, 3};
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, shape, &t));
    filo_var *x, *y = NULL;
    FILO_CHECK(filo_var_new(t, 1, &x));
    FILO_CHECK_FAILS(filo_ag_reduce(FILO_REDUCE_MAX, NULL, 0, 0, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_sum(x, 0, 0, NULL), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_mean(NULL, 0, 0, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_var(NULL, 0, 1, 0, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_softmax(NULL, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_log_softmax(x, NULL), FILO_ERR_INVALID_ARG, "must not be NULL");
    /* The kernels' checks come through, and nothing is recorded. */
    int64_t live = filo_autograd_live_nodes();
    FILO_CHECK_FAILS(filo_ag_reduce(FILO_REDUCE_SUM, x, 2, 0, &y), FILO_ERR_SHAPE, "");
    FILO_CHECK_FAILS(filo_ag_var(x, -3, 1, 0, &y), FILO_ERR_SHAPE, "");
    FILO_CHECK_FAILS(filo_ag_var(x, 0, -1, 0, &y), FILO_ERR_INVALID_ARG, "correction");
    cr_assert_eq(y, NULL);
    cr_assert_eq(filo_autograd_live_nodes(), live);
    filo_var_free(x);
    filo_tensor_free(t);
}
