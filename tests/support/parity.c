#define _POSIX_C_SOURCE 200809L
#include "parity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double parity_default_rtol(filo_dtype dtype)
{
    switch (dtype) {
    case FILO_F64: return 1e-12;
    case FILO_F32: return 1e-5;
    case FILO_BF16: return 1e-2;
    case FILO_F16: return 2e-3;
    default: return 0;
    }
}

static int64_t numel_of(const parity_input *in)
{
    int64_t n = 1;
    for (int i = 0; i < in->ndim; i++)
        n *= in->shape[i];
    return n;
}

/* Random values rounded to the input dtype, so every backend and the reference see the same
 * exact numbers. */
static double *make_values(const parity_input *in, uint64_t seed)
{
    int64_t n = numel_of(in);
    double *v = malloc(sizeof(double) * (size_t)(n + 1));
    filo_test_fill_random(v, n, seed, in->lo, in->hi);
    if (in->dtype == FILO_I64 || in->dtype == FILO_I32 || in->dtype == FILO_U8)
        for (int64_t i = 0; i < n; i++)
            v[i] = floor(v[i]);
    void *tmp = malloc((size_t)(n + 1) * 8);
    FILO_CHECK(filo_convert(v, FILO_F64, tmp, in->dtype, (size_t)n));
    FILO_CHECK(filo_convert(tmp, in->dtype, v, FILO_F64, (size_t)n));
    free(tmp);
    return v;
}

static filo_tensor *upload(filo_device dev, const parity_input *in, filo_dtype dtype, const double *values)
{
    filo_tensor *plain = filo_test_upload(dev, dtype, in->ndim, in->shape, values);
    if (!in->transpose_last || in->ndim < 2)
        return plain;
    /* Store the transpose, then view it back: same values, non-contiguous strides. */
    int64_t tshape[FILO_MAX_DIMS];
    memcpy(tshape, in->shape, sizeof tshape);
    tshape[in->ndim - 1] = in->shape[in->ndim - 2];
    tshape[in->ndim - 2] = in->shape[in->ndim - 1];
    filo_tensor *stored, *view;
    FILO_CHECK(filo_tensor_empty(dev, dtype, in->ndim, tshape, &stored));
    FILO_CHECK(filo_tensor_transpose(stored, -1, -2, &view));
    FILO_CHECK(filo_tensor_copy(view, plain));
    filo_tensor_free(plain);
    filo_tensor_free(stored);
    return view;
}

static void compare(const char *what, const double *got, const double *want, int64_t n,
                    double rtol, double atol, double norm_tol)
{
    double err2 = 0, ref2 = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        if (isnan(w)) {
            cr_assert(isnan(g), "%s: element %lld is %.9g, want NaN", what, (long long)i, g);
            continue;
        }
        if (isinf(w)) {
            cr_assert_eq(g, w, "%s: element %lld is %.9g, want %g", what, (long long)i, g, w);
            continue;
        }
        cr_assert(fabs(g - w) <= atol + rtol * fabs(w), "%s: element %lld of %lld is %.9g, want %.9g (rtol %g, atol %g)",
                  what, (long long)i, (long long)n, g, w, rtol, atol);
        err2 += (g - w) * (g - w);
        ref2 += w * w;
    }
    if (ref2 > 0)
        cr_assert(sqrt(err2 / ref2) <= norm_tol, "%s: relative L2 error %.3g > %.3g", what, sqrt(err2 / ref2), norm_tol);
}

int parity_run(const parity_case *c)
{
    setenv("FILO_TENSOR_POISON", "1", 1);
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    filo_dtype low = FILO_F64;
    double *values[PARITY_MAX_TENSORS];
    for (int k = 0; k < c->n_inputs; k++) {
        values[k] = make_values(&c->inputs[k], c->seed + 101u * (uint64_t)k + 1);
        if (parity_default_rtol(c->inputs[k].dtype) > parity_default_rtol(low))
            low = c->inputs[k].dtype;
    }
    double rtol = c->rtol > 0 ? c->rtol : parity_default_rtol(low);
    double atol = c->atol > 0 ? c->atol : rtol * 1e-3;
    double norm_tol = c->norm_tol > 0 ? c->norm_tol : rtol;

    /* Reference: the test's own double math, or the op itself on float64 CPU tensors. */
    double *want[PARITY_MAX_TENSORS] = {0};
    int64_t want_n[PARITY_MAX_TENSORS] = {0};
    double *cpu_out[PARITY_MAX_TENSORS] = {0};
    for (int b = 0; b < nb; b++) {
        filo_tensor *in[PARITY_MAX_TENSORS], *out[PARITY_MAX_TENSORS] = {0};
        for (int k = 0; k < c->n_inputs; k++)
            in[k] = upload(devs[b], &c->inputs[k], c->inputs[k].dtype, values[k]);
        filo_status s = c->run(c->ctx, in, out);
        cr_assert_eq(s, FILO_OK, "%s on %s: %s", c->name, filo_test_backend_name(devs[b]), filo_last_error());
        for (int o = 0; o < c->n_outputs; o++) {
            double *got = filo_test_download(out[o]);
            int64_t n = filo_tensor_numel(out[o]);
            char what[256];
            if (b == 0) {
                cpu_out[o] = got;
                want_n[o] = n;
                want[o] = malloc(sizeof(double) * (size_t)(n + 1));
            } else {
                cr_assert_eq(n, want_n[o], "%s output %d on %s has %lld elements, cpu has %lld", c->name, o,
                             filo_test_backend_name(devs[b]), (long long)n, (long long)want_n[o]);
                snprintf(what, sizeof what, "%s output %d on %s vs cpu", c->name, o, filo_test_backend_name(devs[b]));
                compare(what, got, cpu_out[o], n, rtol, atol, norm_tol);
                free(got);
            }
        }
        if (b == 0) {
            if (c->reference) {
                c->reference(c->ctx, values, c->inputs, want);
            } else {
                filo_tensor *in64[PARITY_MAX_TENSORS], *out64[PARITY_MAX_TENSORS] = {0};
                for (int k = 0; k < c->n_inputs; k++) {
                    filo_dtype d = filo_dtype_is_float(c->inputs[k].dtype) ? FILO_F64 : c->inputs[k].dtype;
                    in64[k] = upload(filo_cpu(), &c->inputs[k], d, values[k]);
                }
                FILO_CHECK(c->run(c->ctx, in64, out64));
                for (int o = 0; o < c->n_outputs; o++) {
                    double *r = filo_test_download(out64[o]);
                    memcpy(want[o], r, sizeof(double) * (size_t)want_n[o]);
                    free(r);
                    filo_tensor_free(out64[o]);
                }
                for (int k = 0; k < c->n_inputs; k++)
                    filo_tensor_free(in64[k]);
            }
            for (int o = 0; o < c->n_outputs; o++) {
                char what[256];
                snprintf(what, sizeof what, "%s output %d on cpu vs float64 reference", c->name, o);
                compare(what, cpu_out[o], want[o], want_n[o], rtol, atol, norm_tol);
            }
        }
        cr_log_info("parity %s: %s ok", c->name, filo_test_backend_name(devs[b]));
        for (int k = 0; k < c->n_inputs; k++)
            filo_tensor_free(in[k]);
        for (int o = 0; o < c->n_outputs; o++)
            filo_tensor_free(out[o]);
    }
    for (int k = 0; k < c->n_inputs; k++)
        free(values[k]);
    for (int o = 0; o < c->n_outputs; o++) {
        free(want[o]);
        free(cpu_out[o]);
    }
    unsetenv("FILO_TENSOR_POISON");
    return nb;
}
