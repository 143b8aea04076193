#define _POSIX_C_SOURCE 200809L
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/ag.h"

static int64_t count(const gradcheck_input *in)
{
    int64_t n = 1;
    for (int d = 0; d < in->ndim; d++)
        n *= in->shape[d];
    return n;
}

static double *input_values(const gradcheck_case *c, int i)
{
    const gradcheck_input *in = &c->inputs[i];
    int64_t n = count(in);
    double *v = malloc(sizeof *v * (size_t)(n ? n : 1));
    cr_assert(v);
    if (in->values)
        memcpy(v, in->values, sizeof *v * (size_t)n);
    else
        filo_test_fill_random(v, n, (c->seed ? c->seed : 0x9a11) + 101 * (uint64_t)i, in->lo, in->hi);
    return v;
}

/* Runs fn on variables made from the values; returns the output variable (owned). */
static filo_var *forward(const gradcheck_case *c, filo_device dev, filo_dtype dtype, double *const *values,
                         filo_var **vars)
{
    for (int i = 0; i < c->n_inputs; i++) {
        const gradcheck_input *in = &c->inputs[i];
        filo_tensor *t = filo_test_upload(dev, dtype, in->ndim, in->shape, values[i]);
        FILO_CHECK(filo_var_new(t, !in->no_grad, &vars[i]));
        filo_tensor_free(t);
    }
    filo_var *out = NULL;
    filo_status s = c->fn(c->ctx, vars, &out);
    cr_assert_eq(s, FILO_OK, "%s on %s: %s", c->name, filo_test_backend_name(dev), filo_last_error());
    return out;
}

/* L = sum(out * R) in double, from the output's values. */
static double project(const filo_var *out, const double *r)
{
    double *y = filo_test_download(filo_var_value(out));
    int64_t n = filo_tensor_numel(filo_var_value(out));
    double l = 0;
    for (int64_t k = 0; k < n; k++)
        l += y[k] * r[k];
    free(y);
    return l;
}

static double *weights_for(const filo_var *out, uint64_t seed)
{
    int64_t n = filo_tensor_numel(filo_var_value(out));
    double *r = malloc(sizeof *r * (size_t)(n ? n : 1));
    cr_assert(r);
    filo_test_fill_random(r, n, seed ^ 0x77, -1.0, 1.0);
    return r;
}

/* Backward from R; returns each input's gradient as doubles (NULL for no_grad inputs). */
static void analytic(const gradcheck_case *c, filo_device dev, filo_dtype dtype, double *const *values,
                     double **grads, double **r_out)
{
    filo_var *vars[GRADCHECK_MAX_INPUTS] = {0};
    filo_var *out = forward(c, dev, dtype, values, vars);
    const filo_tensor *y = filo_var_value(out);
    double *r = *r_out ? *r_out : weights_for(out, c->seed);
    *r_out = r;
    filo_tensor *gr = filo_test_upload(dev, y->dtype, y->ndim, y->shape, r);
    cr_assert(filo_var_requires_grad(out), "%s: the output does not require a gradient", c->name);
    FILO_CHECK(filo_backward(out, gr, 0));
    filo_tensor_free(gr);
    for (int i = 0; i < c->n_inputs; i++) {
        grads[i] = NULL;
        if (c->inputs[i].no_grad)
            continue;
        const filo_tensor *g = filo_var_grad(vars[i]);
        cr_assert(g, "%s on %s: input %d got no gradient", c->name, filo_test_backend_name(dev), i);
        grads[i] = filo_test_download(g);
    }
    filo_var_free(out);
    for (int i = 0; i < c->n_inputs; i++)
        filo_var_free(vars[i]);
}

void gradcheck_fd(const gradcheck_case *c)
{
    double *values[GRADCHECK_MAX_INPUTS], *grads[GRADCHECK_MAX_INPUTS];
    for (int i = 0; i < c->n_inputs; i++)
        values[i] = input_values(c, i);
    double *r = NULL;
    analytic(c, filo_cpu(), FILO_F64, values, grads, &r);
    double h = c->h > 0 ? c->h : 1e-6, rtol = c->rtol > 0 ? c->rtol : 1e-5, atol = c->atol > 0 ? c->atol : 1e-6;
    for (int i = 0; i < c->n_inputs; i++) {
        if (c->inputs[i].no_grad)
            continue;
        int64_t n = count(&c->inputs[i]);
        for (int64_t k = 0; k < n; k++) {
            double keep = values[i][k], lp, lm;
            filo_var *vars[GRADCHECK_MAX_INPUTS] = {0};
            values[i][k] = keep + h;
            filo_var *out = forward(c, filo_cpu(), FILO_F64, values, vars);
            lp = project(out, r);
            filo_var_free(out);
            for (int j = 0; j < c->n_inputs; j++)
                filo_var_free(vars[j]);
            values[i][k] = keep - h;
            out = forward(c, filo_cpu(), FILO_F64, values, vars);
            lm = project(out, r);
            filo_var_free(out);
            for (int j = 0; j < c->n_inputs; j++)
                filo_var_free(vars[j]);
            values[i][k] = keep;
            double numeric = (lp - lm) / (2 * h);
            cr_assert(fabs(grads[i][k] - numeric) <= atol + rtol * fabs(numeric),
                      "%s: d/d input %d [%lld]: analytic %.10g, finite difference %.10g", c->name, i, (long long)k,
                      grads[i][k], numeric);
        }
    }
    for (int i = 0; i < c->n_inputs; i++) {
        free(values[i]);
        free(grads[i]);
    }
    free(r);
}

static double dtype_rtol(filo_dtype t)
{
    switch (t) {
    case FILO_F64:
        return 1e-10;
    case FILO_F32:
        return 2e-4;
    case FILO_F16:
        return 2e-2;
    default:
        return 5e-2;
    }
}

int gradcheck_parity(const gradcheck_case *c, filo_dtype dtype)
{
    double *values[GRADCHECK_MAX_INPUTS], *want[GRADCHECK_MAX_INPUTS];
    for (int i = 0; i < c->n_inputs; i++) {
        values[i] = input_values(c, i);
        /* The reference sees the values the low-precision inputs really hold. */
        if (dtype != FILO_F64) {
            int64_t shape = count(&c->inputs[i]);
            filo_tensor *t = filo_test_upload(filo_cpu(), dtype, 1, &shape, values[i]);
            free(values[i]);
            values[i] = filo_test_download(t);
            filo_tensor_free(t);
        }
    }
    double *r = NULL;
    analytic(c, filo_cpu(), FILO_F64, values, want, &r);
    double rtol = c->rtol > 0 ? c->rtol : dtype_rtol(dtype);
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    setenv("FILO_TENSOR_POISON", "1", 1);
    for (int b = 0; b < nd; b++) {
        double *got[GRADCHECK_MAX_INPUTS];
        analytic(c, devs[b], dtype, values, got, &r);
        for (int i = 0; i < c->n_inputs; i++) {
            if (c->inputs[i].no_grad)
                continue;
            int64_t n = count(&c->inputs[i]);
            double scale = 0;
            for (int64_t k = 0; k < n; k++)
                scale = fmax(scale, fabs(want[i][k]));
            double atol = c->atol > 0 ? c->atol : rtol * fmax(scale, 1e-3);
            for (int64_t k = 0; k < n; k++)
                cr_assert(fabs(got[i][k] - want[i][k]) <= atol + rtol * fabs(want[i][k]),
                          "%s (%s) on %s: gradient of input %d [%lld]: %.8g, float64 reference %.8g", c->name,
                          filo_dtype_name(dtype), filo_test_backend_name(devs[b]), i, (long long)k, got[i][k],
                          want[i][k]);
            free(got[i]);
        }
    }
    unsetenv("FILO_TENSOR_POISON");
    for (int i = 0; i < c->n_inputs; i++) {
        free(values[i]);
        free(want[i]);
    }
    free(r);
    return nd;
}
