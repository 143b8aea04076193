/* Differentiable LayerNorm and RMSNorm (filo/ag.h): finite differences in float64 on the CPU and
 * f32 parity on every backend, with and without beta, with a fused residual, with its h output
 * (used alongside y, or alone), with constant inputs; bf16 x with f32 gamma and beta; bad
 * arguments. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"

#define EPS 1e-5
#define MAX_VARIANTS 16

/* What the output of a case is made of when the node has the h output. */
enum { USE_Y, USE_Y_TIMES_H, USE_H };

typedef struct norm_args {
    int rms;
    int beta;     /* LayerNorm with beta (the input after gamma) */
    int residual; /* the last input is the residual */
    int h_out;    /* request h; `use` says what the case returns */
    int use;
} norm_args;

static filo_status run_norm(void *ctx, filo_var *const *in, filo_var **out)
{
    const norm_args *a = ctx;
    int k = 2;
    filo_var *beta = a->beta ? in[k++] : NULL;
    filo_var *res = a->residual ? in[k++] : NULL;
    filo_var *y = NULL, *h = NULL;
    filo_status s = a->rms ? filo_ag_rmsnorm(in[0], res, in[1], EPS, &y, a->h_out ? &h : NULL)
                           : filo_ag_layernorm(in[0], res, in[1], beta, EPS, &y, a->h_out ? &h : NULL);
    if (s != FILO_OK || !a->h_out) {
        *out = y;
        return s;
    }
    if (a->use == USE_Y_TIMES_H) {
        s = filo_ag_mul(y, h, out);
    } else {
        *out = filo_var_retain(a->use == USE_H ? h : y);
    }
    filo_var_free(y);
    filo_var_free(h);
    return s;
}

static gradcheck_case norm_case(norm_args *a, int ndim, const int64_t *shape)
{
    gradcheck_case c = {.name = a->rms ? "rmsnorm" : "layernorm", .fn = run_norm, .ctx = a};
    gradcheck_input x = {.ndim = ndim, .lo = -1.5, .hi = 1.5};
    memcpy(x.shape, shape, sizeof(int64_t) * (size_t)ndim);
    c.inputs[c.n_inputs++] = x;
    c.inputs[c.n_inputs++] = (gradcheck_input){.ndim = 1, .shape = {shape[ndim - 1]}, .lo = 0.5, .hi = 1.5};
    if (a->beta)
        c.inputs[c.n_inputs++] = (gradcheck_input){.ndim = 1, .shape = {shape[ndim - 1]}, .lo = -0.5, .hi = 0.5};
    if (a->residual) {
        x.lo = -1.0;
        x.hi = 1.0;
        c.inputs[c.n_inputs++] = x;
    }
    return c;
}

/* Every option combination: LayerNorm with and without beta, RMSNorm; no residual, a residual,
 * a residual with h (y alone, y * h, h alone). */
static int variants(norm_args *out)
{
    int n = 0;
    for (int rms = 0; rms < 2; rms++)
        for (int beta = 0; beta < (rms ? 1 : 2); beta++) {
            out[n++] = (norm_args){rms, beta, 0, 0, USE_Y};
            out[n++] = (norm_args){rms, beta, 1, 0, USE_Y};
            out[n++] = (norm_args){rms, beta, 1, 1, USE_Y};
            out[n++] = (norm_args){rms, beta, 1, 1, USE_Y_TIMES_H};
            out[n++] = (norm_args){rms, beta, 1, 1, USE_H};
        }
    return n;
}

Test(ag_norm, finite_differences)
{
    norm_args v[MAX_VARIANTS];
    int n = variants(v);
    const int64_t shape2[2] = {3, 5}, shape3[3] = {2, 2, 5};
    for (int i = 0; i < n; i++) {
        gradcheck_case c = norm_case(&v[i], 2, shape2);
        gradcheck_fd(&c);
        c = norm_case(&v[i], 3, shape3);
        c.seed = 7;
        gradcheck_fd(&c);
    }
}

Test(ag_norm, parity)
{
    norm_args v[MAX_VARIANTS];
    int n = variants(v);
    const int64_t shape[2] = {6, 37};
    for (int i = 0; i < n; i++) {
        gradcheck_case c = norm_case(&v[i], 2, shape);
        gradcheck_parity(&c, FILO_F32);
        gradcheck_parity(&c, FILO_BF16);
    }
}

/* Constant inputs get no gradient and the others still get theirs: only gamma (and beta), only
 * x, only the residual. */
Test(ag_norm, constant_inputs)
{
    norm_args v[MAX_VARIANTS];
    int n = variants(v);
    const int64_t shape[2] = {3, 5};
    for (int i = 0; i < n; i++) {
        gradcheck_case c = norm_case(&v[i], 2, shape);
        for (int only = 0; only < c.n_inputs; only++) {
            for (int k = 0; k < c.n_inputs; k++)
                c.inputs[k].no_grad = k != only;
            gradcheck_fd(&c);
        }
        for (int k = 0; k < c.n_inputs; k++)
            c.inputs[k].no_grad = k == 0;
        gradcheck_parity(&c, FILO_F32);
    }
}

static double *bf16_rounded(int64_t n, const double *v)
{
    filo_tensor *t = filo_test_upload(filo_cpu(), FILO_BF16, 1, &n, v);
    double *r = filo_test_download(t);
    filo_tensor_free(t);
    return r;
}

/* bf16 x and residual with f32 gamma and beta (the kernels' mixed rule): dgamma and dbeta come
 * back in f32, dx and d(residual) in bf16, all close to the float64 gradients of the same
 * values. */
Test(ag_norm, bf16_with_f32_params)
{
    enum { R = 4, C = 24 };
    const int64_t xs[2] = {R, C}, ps = C;
    double x[R * C], res[R * C], gamma[C], beta[C], w[R * C];
    filo_test_fill_random(x, R * C, 1, -1.5, 1.5);
    filo_test_fill_random(res, R * C, 2, -1.0, 1.0);
    filo_test_fill_random(gamma, C, 3, 0.5, 1.5);
    filo_test_fill_random(beta, C, 4, -0.5, 0.5);
    filo_test_fill_random(w, R * C, 5, -1.0, 1.0);
    /* The reference sees the values the bf16 tensors hold. */
    double *xr = bf16_rounded(R * C, x), *rr = bf16_rounded(R * C, res), *wr = bf16_rounded(R * C, w);
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int rms = 0; rms < 2; rms++) {
        double *want[4] = {NULL};
        for (int b = -1; b < nd; b++) {
            filo_device dev = b < 0 ? filo_cpu() : devs[b];
            filo_dtype xd = b < 0 ? FILO_F64 : FILO_BF16, pd = b < 0 ? FILO_F64 : FILO_F32;
            filo_tensor *tx = filo_test_upload(dev, xd, 2, xs, xr), *tr = filo_test_upload(dev, xd, 2, xs, rr);
            filo_tensor *tg = filo_test_upload(dev, pd, 1, &ps, gamma), *tb = filo_test_upload(dev, pd, 1, &ps, beta);
            filo_tensor *tw = filo_test_upload(dev, xd, 2, xs, wr);
            filo_var *vx, *vr, *vg, *vb, *y, *h, *l;
            FILO_CHECK(filo_var_new(tx, 1, &vx));
            FILO_CHECK(filo_var_new(tr, 1, &vr));
            FILO_CHECK(filo_var_new(tg, 1, &vg));
            FILO_CHECK(filo_var_new(tb, 1, &vb));
            if (rms)
                FILO_CHECK(filo_ag_rmsnorm(vx, vr, vg, EPS, &y, &h));
            else
                FILO_CHECK(filo_ag_layernorm(vx, vr, vg, vb, EPS, &y, &h));
            FILO_CHECK(filo_ag_mul(y, h, &l));
            FILO_CHECK(filo_backward(l, tw, 0));
            filo_var *vars[4] = {vx, vr, vg, vb};
            int nv = rms ? 3 : 4;
            for (int i = 0; i < nv; i++) {
                const filo_tensor *g = filo_var_grad(vars[i]);
                cr_assert(g, "%s on %s: input %d got no gradient", rms ? "rmsnorm" : "layernorm",
                          filo_test_backend_name(dev), i);
                cr_assert_eq(g->dtype, b < 0 ? FILO_F64 : (i < 2 ? FILO_BF16 : FILO_F32));
                double *got = filo_test_download(g);
                int64_t ne = filo_tensor_numel(g);
                if (b < 0) {
                    want[i] = got;
                    continue;
                }
                double scale = 0;
                for (int64_t k = 0; k < ne; k++)
                    scale = fmax(scale, fabs(want[i][k]));
                double tol = (i < 2 ? 3e-2 : 2e-2) * scale;
                for (int64_t k = 0; k < ne; k++)
                    cr_assert(fabs(got[k] - want[i][k]) <= tol, "%s on %s: input %d [%lld]: %g, float64 %g",
                              rms ? "rmsnorm" : "layernorm", filo_test_backend_name(dev), i, (long long)k, got[k],
                              want[i][k]);
                free(got);
            }
            filo_var_free(l);
            filo_var_free(y);
            filo_var_free(h);
            for (int i = 0; i < 4; i++)
                filo_var_free(vars[i]);
            filo_tensor_free(tx);
            filo_tensor_free(tr);
            filo_tensor_free(tg);
            filo_tensor_free(tb);
            filo_tensor_free(tw);
        }
        for (int i = 0; i < 4; i++)
            free(want[i]);
    }
    free(xr);
    free(rr);
    free(wr);
}

Test(ag_norm, bad_arguments)
{
    const int64_t xs[2] = {2, 3}, ps = 3;
    filo_tensor *tx, *tg;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, xs, &tx));
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_F32, 1, &ps, 1.0, &tg));
    filo_var *x, *g, *y = NULL, *h = NULL;
    FILO_CHECK(filo_var_new(tx, 1, &x));
    FILO_CHECK(filo_var_new(tg, 1, &g));
    FILO_CHECK_FAILS(filo_ag_layernorm(x, NULL, g, NULL, EPS, &y, &h), FILO_ERR_INVALID_ARG, "needs a residual");
    FILO_CHECK_FAILS(filo_ag_rmsnorm(x, NULL, NULL, EPS, &y, NULL), FILO_ERR_INVALID_ARG, "must not be NULL");
    cr_assert(!y && !h);
    filo_var_free(x);
    filo_var_free(g);
    filo_tensor_free(tx);
    filo_tensor_free(tg);
}
