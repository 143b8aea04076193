/* Differentiable dropout, bias + GELU and bias + dropout + residual (filo/ag.h): finite-difference
 * checks in float64 on the CPU and f32 gradient parity on every backend for each p (0, 0.3, 1),
 * with and without bias and residual and with constant inputs; a bf16/f16 x with an f32 bias
 * against float64 gradients; one bad argument per op. Each forward of a check draws its mask
 * from a fresh generator with the case's seed, so every forward drops the same elements. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"

#define SEED 0xd50bULL

static const double probs[] = {0.0, 0.3, 1.0};
#define N_PROBS ((int)(sizeof probs / sizeof *probs))

/* ---- dropout ---- */

typedef struct dropout_args {
    double p;
    int chained; /* dropout(dropout(x)): the second mask comes from the advanced generator */
} dropout_args;

static filo_status run_dropout(void *ctx, filo_var *const *in, filo_var **out)
{
    const dropout_args *a = ctx;
    filo_generator gen;
    filo_generator_init(&gen, SEED);
    if (!a->chained)
        return filo_ag_dropout(in[0], a->p, &gen, out);
    filo_var *mid = NULL;
    filo_status s = filo_ag_dropout(in[0], a->p, &gen, &mid);
    if (s == FILO_OK)
        s = filo_ag_dropout(mid, a->p, &gen, out);
    filo_var_free(mid);
    return s;
}

Test(ag_dropout, dropout)
{
    for (int k = 0; k < N_PROBS; k++) {
        for (int chained = 0; chained < 2; chained++) {
            dropout_args a = {probs[k], chained};
            gradcheck_case c = {.name = chained ? "dropout twice" : "dropout", .n_inputs = 1, .fn = run_dropout,
                                .ctx = &a};
            c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {3, 4, 5}, .lo = -2, .hi = 2};
            gradcheck_fd(&c);
            gradcheck_parity(&c, FILO_F32);
        }
    }
}

/* The backward regenerates the forward's mask: the gradient is zero exactly where y is, and
 * dropping with p = 0.3 leaves roughly that share of the elements. */
Test(ag_dropout, gradient_follows_the_mask)
{
    int64_t shape[2] = {16, 33};
    int64_t n = shape[0] * shape[1];
    double *v = malloc(sizeof *v * (size_t)n);
    filo_test_fill_random(v, n, 5, 0.5, 1.5);
    filo_tensor *t = filo_test_upload(filo_cpu(), FILO_F32, 2, shape, v);
    filo_var *x, *y;
    filo_generator gen;
    filo_generator_init(&gen, SEED);
    FILO_CHECK(filo_var_new(t, 1, &x));
    FILO_CHECK(filo_ag_dropout(x, 0.3, &gen, &y));
    filo_tensor *ones;
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_F32, 2, shape, 1.0, &ones));
    FILO_CHECK(filo_backward(y, ones, 0));
    double *yv = filo_test_download(filo_var_value(y)), *gv = filo_test_download(filo_var_grad(x));
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; i++) {
        cr_assert_eq(yv[i] == 0.0, gv[i] == 0.0, "element %lld: y %g, gradient %g", (long long)i, yv[i], gv[i]);
        dropped += yv[i] == 0.0;
    }
    cr_assert(dropped > n / 5 && dropped < n * 2 / 5, "%lld of %lld dropped with p = 0.3", (long long)dropped,
              (long long)n);
    free(yv);
    free(gv);
    free(v);
    filo_tensor_free(ones);
    filo_tensor_free(t);
    filo_var_free(y);
    filo_var_free(x);
    cr_assert_eq(filo_autograd_live_nodes(), 0);
}

Test(ag_dropout, dropout_bad_argument)
{
    int64_t shape = 3;
    filo_tensor *t;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 1, &shape, &t));
    filo_var *x, *y = NULL;
    FILO_CHECK(filo_var_new(t, 1, &x));
    FILO_CHECK_FAILS(filo_ag_dropout(NULL, 0.5, NULL, &y), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_ag_dropout(x, 0.5, NULL, &y), FILO_ERR_INVALID_ARG, "gen is NULL");
    cr_assert_null(y);
    filo_var_free(x);
    filo_tensor_free(t);
}

/* ---- bias + GELU ---- */

typedef struct bias_gelu_args {
    int approximate;
    int bias; /* in[1] is the bias */
} bias_gelu_args;

static filo_status run_bias_gelu(void *ctx, filo_var *const *in, filo_var **out)
{
    const bias_gelu_args *a = ctx;
    return filo_ag_bias_gelu(in[0], a->bias ? in[1] : NULL, a->approximate, out);
}

static gradcheck_case bias_gelu_case(bias_gelu_args *a)
{
    gradcheck_case c = {.name = a->approximate ? "bias_gelu tanh" : "bias_gelu", .n_inputs = 1 + a->bias,
                        .fn = run_bias_gelu, .ctx = a};
    c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {2, 3, 7}, .lo = -3, .hi = 3};
    c.inputs[1] = (gradcheck_input){.ndim = 1, .shape = {7}, .lo = -1, .hi = 1};
    return c;
}

Test(ag_dropout, bias_gelu)
{
    for (int approximate = 0; approximate < 2; approximate++) {
        for (int bias = 0; bias < 2; bias++) {
            bias_gelu_args a = {approximate, bias};
            gradcheck_case c = bias_gelu_case(&a);
            gradcheck_fd(&c);
            gradcheck_parity(&c, FILO_F32);
            if (bias) {
                /* Only one of x and bias needs a gradient: the kernel still makes both. */
                for (int constant = 0; constant < 2; constant++) {
                    c.inputs[0].no_grad = constant == 0;
                    c.inputs[1].no_grad = constant == 1;
                    gradcheck_fd(&c);
                    gradcheck_parity(&c, FILO_F32);
                }
            }
        }
    }
}

Test(ag_dropout, bias_gelu_bad_argument)
{
    FILO_CHECK_FAILS(filo_ag_bias_gelu(NULL, NULL, 0, NULL), FILO_ERR_INVALID_ARG, "must not be NULL");
}

/* ---- bias + dropout + residual ---- */

typedef struct bdr_args {
    double p;
    int bias, residual; /* which of in[1], in[2] are there, in that order */
} bdr_args;

static filo_status run_bdr(void *ctx, filo_var *const *in, filo_var **out)
{
    const bdr_args *a = ctx;
    filo_generator gen;
    filo_generator_init(&gen, SEED);
    filo_var *bias = a->bias ? in[1] : NULL, *residual = a->residual ? in[1 + a->bias] : NULL;
    return filo_ag_bias_dropout_residual(in[0], bias, residual, a->p, &gen, out);
}

static gradcheck_case bdr_case(bdr_args *a)
{
    gradcheck_case c = {.name = "bias_dropout_residual", .n_inputs = 1 + a->bias + a->residual, .fn = run_bdr,
                        .ctx = a};
    gradcheck_input x = {.ndim = 3, .shape = {2, 3, 7}, .lo = -2, .hi = 2};
    gradcheck_input b = {.ndim = 1, .shape = {7}, .lo = -1, .hi = 1};
    int k = 0;
    c.inputs[k++] = x;
    if (a->bias)
        c.inputs[k++] = b;
    if (a->residual)
        c.inputs[k++] = x;
    return c;
}

Test(ag_dropout, bias_dropout_residual)
{
    for (int k = 0; k < N_PROBS; k++) {
        for (int bias = 0; bias < 2; bias++) {
            for (int residual = 0; residual < 2; residual++) {
                bdr_args a = {probs[k], bias, residual};
                gradcheck_case c = bdr_case(&a);
                gradcheck_fd(&c);
                gradcheck_parity(&c, FILO_F32);
            }
        }
    }
}

/* Constant inputs: x alone constant (the kernel's dx is dropped, dbias kept), x and bias
 * constant (no kernel at all: d(residual) is the output gradient), bias alone constant. */
Test(ag_dropout, bias_dropout_residual_constant_inputs)
{
    static const int constant[3][3] = {{1, 0, 0}, {1, 1, 0}, {0, 1, 0}};
    for (int k = 0; k < 3; k++) {
        bdr_args a = {0.3, 1, 1};
        gradcheck_case c = bdr_case(&a);
        for (int i = 0; i < 3; i++)
            c.inputs[i].no_grad = constant[k][i];
        gradcheck_fd(&c);
        gradcheck_parity(&c, FILO_F32);
    }
}

Test(ag_dropout, bias_dropout_residual_bad_argument)
{
    FILO_CHECK_FAILS(filo_ag_bias_dropout_residual(NULL, NULL, NULL, 0.0, NULL, NULL), FILO_ERR_INVALID_ARG,
                     "must not be NULL");
}

/* ---- a bf16 / f16 x with an f32 bias ---- */

typedef struct mixed_run {
    double *grads[GRADCHECK_MAX_INPUTS];
} mixed_run;

/* Runs c->fn on `dev` with input i in dtypes[i]; backward from r (in the output's dtype);
 * returns the gradients as doubles. A leaf's gradient always has the leaf's dtype (the engine
 * casts into it), so a dbias of the wrong dtype shows only as lost precision: the f32 tolerance
 * of mixed_parity catches a bf16 dbias. */
static mixed_run mixed_gradients(const gradcheck_case *c, filo_device dev, const filo_dtype *dtypes,
                                 double *const *values, const double *r)
{
    filo_var *vars[GRADCHECK_MAX_INPUTS];
    for (int i = 0; i < c->n_inputs; i++) {
        filo_tensor *t = filo_test_upload(dev, dtypes[i], c->inputs[i].ndim, c->inputs[i].shape, values[i]);
        FILO_CHECK(filo_var_new(t, 1, &vars[i]));
        filo_tensor_free(t);
    }
    filo_var *out;
    FILO_CHECK(c->fn(c->ctx, vars, &out));
    const filo_tensor *y = filo_var_value(out);
    filo_tensor *gr = filo_test_upload(dev, y->dtype, y->ndim, y->shape, r);
    FILO_CHECK(filo_backward(out, gr, 0));
    mixed_run m = {{0}};
    for (int i = 0; i < c->n_inputs; i++) {
        const filo_tensor *g = filo_var_grad(vars[i]);
        cr_assert(g, "%s: input %d got no gradient", c->name, i);
        m.grads[i] = filo_test_download(g);
        filo_var_free(vars[i]);
    }
    filo_tensor_free(gr);
    filo_var_free(out);
    return m;
}

static int64_t numel_of(const gradcheck_input *in)
{
    int64_t n = 1;
    for (int d = 0; d < in->ndim; d++)
        n *= in->shape[d];
    return n;
}

/* Every backend's gradients against the float64 CPU gradients of the same (rounded) values. */
static void mixed_parity(const gradcheck_case *c, const filo_dtype *dtypes)
{
    double *values[GRADCHECK_MAX_INPUTS];
    for (int i = 0; i < c->n_inputs; i++) {
        int64_t n = numel_of(&c->inputs[i]);
        double *v = malloc(sizeof *v * (size_t)n);
        filo_test_fill_random(v, n, 31 + (uint64_t)i, c->inputs[i].lo, c->inputs[i].hi);
        filo_tensor *t = filo_test_upload(filo_cpu(), dtypes[i], 1, &n, v);
        values[i] = filo_test_download(t);
        filo_tensor_free(t);
        free(v);
    }
    /* The output has x's shape and dtype. */
    int64_t ny = numel_of(&c->inputs[0]);
    double *r0 = malloc(sizeof *r0 * (size_t)ny);
    filo_test_fill_random(r0, ny, 77, -1, 1);
    filo_tensor *rt = filo_test_upload(filo_cpu(), dtypes[0], 1, &ny, r0);
    double *r = filo_test_download(rt);
    filo_tensor_free(rt);
    free(r0);

    filo_dtype f64[GRADCHECK_MAX_INPUTS];
    for (int i = 0; i < c->n_inputs; i++)
        f64[i] = FILO_F64;
    mixed_run want = mixed_gradients(c, filo_cpu(), f64, values, r);
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int b = 0; b < nd; b++) {
        mixed_run got = mixed_gradients(c, devs[b], dtypes, values, r);
        for (int i = 0; i < c->n_inputs; i++) {
            /* An f32 gradient is summed in f32 from the half-precision values: f32-accurate. */
            double rtol = dtypes[i] == FILO_BF16 ? 5e-2 : dtypes[i] == FILO_F16 ? 2e-2 : 1e-4;
            int64_t n = numel_of(&c->inputs[i]);
            double scale = 0;
            for (int64_t k = 0; k < n; k++)
                scale = fmax(scale, fabs(want.grads[i][k]));
            double atol = rtol * fmax(scale, 1e-3);
            for (int64_t k = 0; k < n; k++)
                cr_assert(fabs(got.grads[i][k] - want.grads[i][k]) <= atol + rtol * fabs(want.grads[i][k]),
                          "%s (x %s, bias %s) on %s: gradient of input %d [%lld]: %.8g, float64 reference %.8g",
                          c->name, filo_dtype_name(dtypes[0]), filo_dtype_name(dtypes[1]),
                          filo_test_backend_name(devs[b]), i, (long long)k, got.grads[i][k], want.grads[i][k]);
            free(got.grads[i]);
        }
    }
    for (int i = 0; i < c->n_inputs; i++) {
        free(values[i]);
        free(want.grads[i]);
    }
    free(r);
}

static const filo_dtype half_dtypes[][3] = {
    {FILO_BF16, FILO_F32, FILO_BF16},
    {FILO_F16, FILO_F32, FILO_F16},
    {FILO_BF16, FILO_BF16, FILO_BF16},
};
#define N_HALF ((int)(sizeof half_dtypes / sizeof *half_dtypes))

Test(ag_dropout, bias_gelu_half_x)
{
    for (int k = 0; k < N_HALF; k++) {
        bias_gelu_args a = {0, 1};
        gradcheck_case c = bias_gelu_case(&a);
        mixed_parity(&c, half_dtypes[k]);
    }
}

/* dbias in f32 for an f32 bias (the kernel's with_bias = 2), in the half type for a half bias. */
Test(ag_dropout, bias_dropout_residual_half_x)
{
    for (int k = 0; k < N_HALF; k++) {
        bdr_args a = {0.3, 1, 1};
        gradcheck_case c = bdr_case(&a);
        mixed_parity(&c, half_dtypes[k]);
    }
}
