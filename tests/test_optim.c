/* Optimizer kernels (include/filo/optim.h) on every backend (filo_test_backends): the Adam and
 * AdamW step against a float64 reference of PyTorch's update over several steps, grads f32, bf16
 * and f16, the bf16/f16 copy, grad_scale and found_inf (a skipped step changes no bit), CPU vs
 * CUDA parity of the params, the global grad norm against float64 with its bitwise
 * reproducibility and non-finite flag, the clipping coefficient, found_inf, and bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/optim.h"
#include "filo_test.h"

#define NSTEPS 6
#define MAX_T 40
#define NO_COPY FILO_DTYPE_COUNT

static double round_to(filo_dtype t, double v)
{
    uint64_t buf;
    double r;
    cr_assert_eq(filo_convert(&v, FILO_F64, &buf, t, 1), FILO_OK);
    cr_assert_eq(filo_convert(&buf, t, &r, FILO_F64, 1), FILO_OK);
    return r;
}

static int64_t numel_of(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

static double scalar_of(const filo_tensor *t)
{
    cr_assert_eq(t->ndim, 0);
    cr_assert_eq(t->dtype, FILO_F32);
    double *v = filo_test_download(t), r = v[0];
    free(v);
    return r;
}

/* A grad holding `values` (row-major for `shape`); a 2-D grad is made a transposed view of a
 * [cols, rows] tensor, so the step also reads a non-contiguous grad. */
static filo_tensor *make_grad(filo_device dev, filo_dtype dt, int ndim, const int64_t *shape, const double *values)
{
    if (ndim != 2)
        return filo_test_upload(dev, dt, ndim, shape, values);
    int64_t r = shape[0], c = shape[1], tshape[2] = {c, r};
    double *tv = malloc(sizeof(double) * (size_t)(r * c));
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++)
            tv[j * r + i] = values[i * c + j];
    filo_tensor *base = filo_test_upload(dev, dt, 2, tshape, tv), *view;
    free(tv);
    FILO_CHECK(filo_tensor_transpose(base, 0, 1, &view));
    cr_assert(r == 1 || c == 1 || !filo_tensor_is_contiguous(view));
    filo_tensor_free(base);
    return view;
}

static void assert_close(const char *what, const char *ctx, int k, const double *got, const double *want, int64_t n,
                         double rtol, double atol)
{
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]), "%s: %s[%d][%lld] = %.9g, want %.9g", ctx,
                  what, k, (long long)i, got[i], want[i]);
}

/* ---- Adam / AdamW against a float64 reference ---- */

typedef struct adam_cfg {
    filo_dtype grad;
    filo_dtype copy; /* NO_COPY for none */
    int decoupled;
    double weight_decay;
    double scale;    /* 0: no grad_scale */
    int big;         /* add a 70001-element tensor (two chunks) */
} adam_cfg;

static const int64_t shapes[][2] = {{1, 0}, {7, 0}, {3, 11}, {129, 0}, {1000, 0}, {70001, 0}};

static int tensor_count(const adam_cfg *c) { return c->big ? 6 : 5; }
static int ndim_of(int k) { return shapes[k][1] ? 2 : 1; }

typedef struct adam_ref {
    double *p[MAX_T], *m[MAX_T], *v[MAX_T];
} adam_ref;

static void grad_values(const adam_cfg *c, int k, int step, int64_t n, double *g)
{
    filo_test_fill_random(g, n, 1000 + 37 * (uint64_t)k + 7919 * (uint64_t)step, -1.0, 1.0);
    for (int64_t i = 0; i < n; i++)
        g[i] = round_to(c->grad, g[i]);
}

/* PyTorch's Adam/AdamW step in double (the formulas of include/filo/optim.h). */
static void reference_step(const adam_cfg *c, const filo_adam_options *o, double *p, double *m, double *v,
                           const double *g_in, int64_t n)
{
    double bc1 = 1.0 - pow(o->beta1, (double)o->step), bc2 = 1.0 - pow(o->beta2, (double)o->step);
    double scale = c->scale != 0.0 ? round_to(FILO_F32, c->scale) : 1.0;
    for (int64_t i = 0; i < n; i++) {
        double g = g_in[i] * scale;
        if (o->decoupled)
            p[i] *= 1.0 - o->lr * o->weight_decay;
        else
            g += o->weight_decay * p[i];
        m[i] = o->beta1 * m[i] + (1.0 - o->beta1) * g;
        v[i] = o->beta2 * v[i] + (1.0 - o->beta2) * g * g;
        double denom = sqrt(v[i]) / sqrt(bc2) + o->eps;
        p[i] -= o->lr / bc1 * m[i] / denom;
    }
}

/* Runs NSTEPS steps on dev; returns the final params (host doubles) in out[k]. */
static void adam_run(const adam_cfg *c, filo_device dev, double **out)
{
    int nt = tensor_count(c);
    filo_tensor *p[MAX_T], *m[MAX_T], *v[MAX_T], *cp[MAX_T], *g[MAX_T];
    adam_ref ref;
    char ctx[160];
    snprintf(ctx, sizeof ctx, "%s %s grads %s copy %s wd %g scale %g", filo_test_backend_name(dev),
             c->decoupled ? "AdamW" : "Adam", filo_dtype_name(c->grad), c->copy == NO_COPY ? "none" : filo_dtype_name(c->copy),
             c->weight_decay, c->scale);
    for (int k = 0; k < nt; k++) {
        int nd = ndim_of(k);
        int64_t n = numel_of(nd, shapes[k]);
        ref.p[k] = malloc(sizeof(double) * (size_t)n);
        ref.m[k] = calloc((size_t)n, sizeof(double));
        ref.v[k] = calloc((size_t)n, sizeof(double));
        filo_test_fill_random(ref.p[k], n, 17 + (uint64_t)k, -1.0, 1.0);
        for (int64_t i = 0; i < n; i++)
            ref.p[k][i] = round_to(FILO_F32, ref.p[k][i]);
        p[k] = filo_test_upload(dev, FILO_F32, nd, shapes[k], ref.p[k]);
        FILO_CHECK(filo_tensor_zeros(dev, FILO_F32, nd, shapes[k], &m[k]));
        FILO_CHECK(filo_tensor_zeros(dev, FILO_F32, nd, shapes[k], &v[k]));
        cp[k] = NULL;
        /* Tensor 1 has no copy: copies may be given for some tensors only. */
        if (c->copy != NO_COPY && k != 1)
            FILO_CHECK(filo_tensor_full(dev, c->copy, nd, shapes[k], 1234.0, &cp[k]));
    }
    filo_tensor *scale = NULL;
    if (c->scale != 0.0)
        FILO_CHECK(filo_tensor_full(dev, FILO_F32, 0, NULL, c->scale, &scale));
    filo_adam_options o = filo_adam_defaults(c->decoupled);
    o.lr = 1e-2;
    o.beta1 = 0.8;
    o.beta2 = 0.99;
    o.weight_decay = c->weight_decay;
    o.eps = 1e-3; /* large enough that a misplaced eps shows in the params */
    o.grad_scale = scale;
    for (int step = 1; step <= NSTEPS; step++) {
        o.step = step;
        for (int k = 0; k < nt; k++) {
            int64_t n = numel_of(ndim_of(k), shapes[k]);
            double *gv = malloc(sizeof(double) * (size_t)n);
            grad_values(c, k, step, n, gv);
            g[k] = make_grad(dev, c->grad, ndim_of(k), shapes[k], gv);
            reference_step(c, &o, ref.p[k], ref.m[k], ref.v[k], gv, n);
            free(gv);
        }
        FILO_CHECK(filo_adam_step(nt, p, (const filo_tensor *const *)g, m, v, c->copy == NO_COPY ? NULL : cp, &o));
        for (int k = 0; k < nt; k++)
            filo_tensor_free(g[k]);
    }
    for (int k = 0; k < nt; k++) {
        int64_t n = numel_of(ndim_of(k), shapes[k]);
        double *gp = filo_test_download(p[k]), *gm = filo_test_download(m[k]), *gv = filo_test_download(v[k]);
        assert_close("param", ctx, k, gp, ref.p[k], n, 1e-5, 1e-6);
        assert_close("exp_avg", ctx, k, gm, ref.m[k], n, 1e-5, 1e-7);
        assert_close("exp_avg_sq", ctx, k, gv, ref.v[k], n, 1e-5, 1e-8);
        if (cp[k]) {
            double *gc = filo_test_download(cp[k]);
            for (int64_t i = 0; i < n; i++)
                cr_assert_eq(gc[i], round_to(c->copy, gp[i]), "%s: copy[%d][%lld] = %.9g, param %.9g", ctx, k,
                             (long long)i, gc[i], gp[i]);
            free(gc);
        }
        out[k] = gp;
        free(gm);
        free(gv);
        free(ref.p[k]);
        free(ref.m[k]);
        free(ref.v[k]);
        filo_tensor_free(p[k]);
        filo_tensor_free(m[k]);
        filo_tensor_free(v[k]);
        filo_tensor_free(cp[k]);
    }
    filo_tensor_free(scale);
}

/* Every backend against the reference, then the CUDA params against the CPU's. */
static void adam_sweep(const adam_cfg *c)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs), nt = tensor_count(c);
    double *cpu[MAX_T];
    adam_run(c, devs[0], cpu);
    for (int b = 1; b < nb; b++) {
        double *got[MAX_T];
        adam_run(c, devs[b], got);
        for (int k = 0; k < nt; k++) {
            int64_t n = numel_of(ndim_of(k), shapes[k]);
            /* A few f32 ulps: a real GPU may contract a multiply-add (bitwise under emulation). */
            for (int64_t i = 0; i < n; i++)
                cr_assert(fabs(got[k][i] - cpu[k][i]) <= 1e-9 + 1e-6 * fabs(cpu[k][i]),
                          "%s vs cpu: param[%d][%lld] %.9g vs %.9g", filo_test_backend_name(devs[b]), k, (long long)i,
                          got[k][i], cpu[k][i]);
            free(got[k]);
        }
    }
    for (int k = 0; k < nt; k++)
        free(cpu[k]);
}

Test(optim, adamw_f32_grads) { adam_sweep(&(adam_cfg){FILO_F32, NO_COPY, 1, 0.1, 0.0, 1}); }
Test(optim, adam_f32_grads_l2) { adam_sweep(&(adam_cfg){FILO_F32, NO_COPY, 0, 0.1, 0.0, 0}); }
Test(optim, adam_no_weight_decay) { adam_sweep(&(adam_cfg){FILO_F32, NO_COPY, 0, 0.0, 0.0, 0}); }
Test(optim, adamw_bf16_grads_bf16_copy) { adam_sweep(&(adam_cfg){FILO_BF16, FILO_BF16, 1, 0.01, 0.0, 0}); }
Test(optim, adam_bf16_grads_f16_copy) { adam_sweep(&(adam_cfg){FILO_BF16, FILO_F16, 0, 0.01, 0.0, 0}); }
Test(optim, adamw_f16_grads_f16_copy_scaled) { adam_sweep(&(adam_cfg){FILO_F16, FILO_F16, 1, 0.05, 0.37, 0}); }
Test(optim, adam_f16_grads_scaled) { adam_sweep(&(adam_cfg){FILO_F16, NO_COPY, 0, 0.05, 1.0 / 1024.0, 0}); }
Test(optim, adamw_f32_grads_bf16_copy_scaled_two_chunks) { adam_sweep(&(adam_cfg){FILO_F32, FILO_BF16, 1, 0.1, 0.5, 1}); }
Test(optim, adam_f32_grads_f16_copy) { adam_sweep(&(adam_cfg){FILO_F32, FILO_F16, 0, 0.01, 0.0, 0}); }

/* More tensors than one launch's table holds (FILO_OPTIM_MAX_TENSORS), with empty ones among
 * them: every one is stepped once, like a one-tensor step. */
Test(optim, many_tensors_and_empty)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    enum { NT = 30 };
    for (int b = 0; b < nb; b++) {
        filo_tensor *p[NT], *g[NT], *m[NT], *v[NT];
        double vals[NT][5], gv[NT][5];
        filo_adam_options o = filo_adam_defaults(1);
        for (int k = 0; k < NT; k++) {
            int64_t n = k % 7 == 3 ? 0 : 1 + k % 5;
            filo_test_fill_random(vals[k], 5, 300 + (uint64_t)k, -1, 1);
            filo_test_fill_random(gv[k], 5, 900 + (uint64_t)k, -1, 1);
            for (int i = 0; i < 5; i++) {
                vals[k][i] = round_to(FILO_F32, vals[k][i]);
                gv[k][i] = round_to(FILO_F32, gv[k][i]);
            }
            p[k] = filo_test_upload(devs[b], FILO_F32, 1, &n, vals[k]);
            g[k] = filo_test_upload(devs[b], FILO_F32, 1, &n, gv[k]);
            FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 1, &n, &m[k]));
            FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 1, &n, &v[k]));
        }
        FILO_CHECK(filo_adam_step(NT, p, (const filo_tensor *const *)g, m, v, NULL, &o));
        for (int k = 0; k < NT; k++) {
            int64_t n = filo_tensor_numel(p[k]);
            double *got = filo_test_download(p[k]);
            for (int64_t i = 0; i < n; i++) {
                /* Step 1: m_hat / sqrt(v_hat) = sign(g), so p = p (1 - lr wd) - lr sign(g) (+eps). */
                double want = vals[k][i] * (1.0 - o.lr * o.weight_decay) - o.lr * (gv[k][i] > 0 ? 1 : -1);
                cr_assert(fabs(got[i] - want) <= 1e-6, "%s: tensor %d elem %lld: %.9g want %.9g",
                          filo_test_backend_name(devs[b]), k, (long long)i, got[i], want);
            }
            free(got);
            filo_tensor_free(p[k]);
            filo_tensor_free(g[k]);
            filo_tensor_free(m[k]);
            filo_tensor_free(v[k]);
        }
    }
}

/* More chunks than one launch's table holds (FILO_OPTIM_MAX_BLOCKS of FILO_OPTIM_CHUNK): a small
 * tensor, then one whose chunks straddle two launches, with a different tail so that a chunk
 * handled by the wrong launch or a partial sum at the wrong index shows. */
#define BIG_N (320 * 65536 + 5)

static filo_tensor *full_with_tail(filo_device d, filo_dtype dt, int64_t n, double v, double tail)
{
    filo_tensor *t, *s;
    FILO_CHECK(filo_tensor_full(d, dt, 1, &n, v, &t));
    FILO_CHECK(filo_tensor_slice(t, 0, n - 5, n, 1, &s));
    FILO_CHECK(filo_tensor_fill(s, tail));
    filo_tensor_free(s);
    return t;
}

Test(optim, more_chunks_than_one_launch)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t n[2] = {7, BIG_N};
    for (int b = 0; b < nb; b++) {
        filo_device d = devs[b];
        filo_tensor *g[2], *p[2], *m[2], *v[2];
        for (int k = 0; k < 2; k++) {
            g[k] = full_with_tail(d, FILO_F32, n[k], 0.5, -3.0);
            FILO_CHECK(filo_tensor_zeros(d, FILO_F32, 1, &n[k], &p[k]));
            FILO_CHECK(filo_tensor_zeros(d, FILO_F32, 1, &n[k], &m[k]));
            FILO_CHECK(filo_tensor_zeros(d, FILO_F32, 1, &n[k], &v[k]));
        }
        filo_tensor *norm, *inf_norm;
        FILO_CHECK(filo_grad_norm((const filo_tensor *const *)g, 2, 2.0, &norm, NULL));
        FILO_CHECK(filo_grad_norm((const filo_tensor *const *)g, 2, INFINITY, &inf_norm, NULL));
        double want = sqrt(0.25 * (double)(n[0] + n[1] - 10) + 2 * 5 * 9.0);
        cr_assert(fabs(scalar_of(norm) - want) <= 1e-6 * want, "%s: %.9g want %.9g", filo_test_backend_name(d),
                  scalar_of(norm), want);
        cr_assert_eq(scalar_of(inf_norm), 3.0);
        filo_adam_options o = filo_adam_defaults(1);
        o.lr = 0.125;
        o.eps = 0.5;
        FILO_CHECK(filo_adam_step(2, p, (const filo_tensor *const *)g, m, v, NULL, &o));
        for (int k = 0; k < 2; k++) {
            float *got = malloc(sizeof(float) * (size_t)n[k]);
            FILO_CHECK(filo_tensor_to_host(p[k], got, sizeof(float) * (size_t)n[k]));
            /* step 1 from p = 0: -lr g / (|g| + eps) */
            double body = -o.lr * 0.5 / 1.0, tail = o.lr * 3.0 / 3.5;
            for (int64_t i = 0; i < n[k]; i++) {
                double w = i >= n[k] - 5 ? tail : body;
                if (fabs(got[i] - w) > 1e-6)
                    cr_assert_fail("%s: param[%d][%lld] = %.9g, want %.9g", filo_test_backend_name(d), k, (long long)i,
                                   got[i], w);
            }
            free(got);
            filo_tensor_free(g[k]);
            filo_tensor_free(p[k]);
            filo_tensor_free(m[k]);
            filo_tensor_free(v[k]);
        }
        filo_tensor_free(norm);
        filo_tensor_free(inf_norm);
    }
}

/* ---- found_inf: a skipped step changes nothing, bitwise ---- */

static unsigned char *bytes_of(const filo_tensor *t)
{
    size_t nb = filo_tensor_nbytes(t);
    unsigned char *b = malloc(nb + 1);
    FILO_CHECK(filo_tensor_to_host(t, b, nb));
    return b;
}

Test(optim, found_inf_skips_step_bitwise)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t n = 129;
    double pv[129], gv[129], mv[129], vv[129];
    filo_test_fill_random(pv, n, 5, -1, 1);
    filo_test_fill_random(gv, n, 6, -1, 1);
    filo_test_fill_random(mv, n, 7, -1, 1);
    filo_test_fill_random(vv, n, 8, 0.01, 1);
    gv[10] = INFINITY;
    gv[20] = NAN;
    for (int b = 0; b < nb; b++) {
        filo_device d = devs[b];
        filo_tensor *p = filo_test_upload(d, FILO_F32, 1, &n, pv), *m = filo_test_upload(d, FILO_F32, 1, &n, mv);
        filo_tensor *v = filo_test_upload(d, FILO_F32, 1, &n, vv), *g = filo_test_upload(d, FILO_F16, 1, &n, gv);
        filo_tensor *cp = filo_test_upload(d, FILO_BF16, 1, &n, pv);
        filo_tensor *state[4] = {p, m, v, cp};
        unsigned char *before[4];
        for (int i = 0; i < 4; i++)
            before[i] = bytes_of(state[i]);
        filo_tensor *flags[4];
        FILO_CHECK(filo_tensor_full(d, FILO_F32, 0, NULL, 1.0, &flags[0]));
        FILO_CHECK(filo_tensor_full(d, FILO_U8, 0, NULL, 1.0, &flags[1]));
        FILO_CHECK(filo_tensor_full(d, FILO_F32, 0, NULL, NAN, &flags[2]));
        FILO_CHECK(filo_found_inf((const filo_tensor *const *)&g, 1, &flags[3]));
        filo_tensor *scale;
        FILO_CHECK(filo_tensor_full(d, FILO_F32, 0, NULL, 0.25, &scale));
        for (int f = 0; f < 4; f++) {
            filo_adam_options o = filo_adam_defaults(f & 1);
            o.step = 3;
            o.found_inf = flags[f];
            o.grad_scale = f == 2 ? scale : NULL;
            FILO_CHECK(filo_adam_step(1, &p, (const filo_tensor *const *)&g, &m, &v, &cp, &o));
            for (int i = 0; i < 4; i++) {
                unsigned char *after = bytes_of(state[i]);
                cr_assert(memcmp(after, before[i], filo_tensor_nbytes(state[i])) == 0,
                          "%s: flag %d changed tensor %d of a skipped step", filo_test_backend_name(d), f, i);
                free(after);
            }
        }
        /* A zero flag (u8 and f32) lets the step run. */
        for (int f = 0; f < 2; f++) {
            filo_tensor *zero, *gf;
            double ok[129];
            memcpy(ok, gv, sizeof ok);
            ok[10] = ok[20] = 0.5;
            gf = filo_test_upload(d, FILO_F16, 1, &n, ok);
            FILO_CHECK(filo_tensor_full(d, f ? FILO_U8 : FILO_F32, 0, NULL, 0.0, &zero));
            filo_adam_options o = filo_adam_defaults(1);
            o.found_inf = zero;
            FILO_CHECK(filo_adam_step(1, &p, (const filo_tensor *const *)&gf, &m, &v, &cp, &o));
            unsigned char *after = bytes_of(p);
            cr_assert(memcmp(after, before[0], filo_tensor_nbytes(p)) != 0, "%s: a zero found_inf skipped the step",
                      filo_test_backend_name(d));
            double *pp = filo_test_download(p), *cc = filo_test_download(cp);
            for (int64_t i = 0; i < n; i++)
                cr_assert(isfinite(pp[i]) && cc[i] == round_to(FILO_BF16, pp[i]));
            free(pp);
            free(cc);
            free(after);
            filo_tensor_free(zero);
            filo_tensor_free(gf);
        }
        for (int i = 0; i < 4; i++) {
            free(before[i]);
            filo_tensor_free(flags[i]);
            filo_tensor_free(state[i]);
        }
        filo_tensor_free(scale);
        filo_tensor_free(g);
    }
}

/* A device step counter gives the same updates as the host's t, skips its increment with the
 * step when found_inf is set, and counts the steps taken. */
Test(optim, device_step_count)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t n = 333;
    double pv[333], gv[333];
    filo_test_fill_random(pv, n, 11, -1, 1);
    filo_test_fill_random(gv, n, 12, -1, 1);
    for (int b = 0; b < nb; b++) {
        filo_device d = devs[b];
        double *result[2];
        for (int on_device = 0; on_device < 2; on_device++) {
            filo_tensor *p = filo_test_upload(d, FILO_F32, 1, &n, pv), *g = filo_test_upload(d, FILO_F32, 1, &n, gv);
            filo_tensor *m, *v, *count, *skip, *go;
            FILO_CHECK(filo_tensor_zeros(d, FILO_F32, 1, &n, &m));
            FILO_CHECK(filo_tensor_zeros(d, FILO_F32, 1, &n, &v));
            FILO_CHECK(filo_tensor_zeros(d, FILO_F32, 0, NULL, &count));
            FILO_CHECK(filo_tensor_full(d, FILO_F32, 0, NULL, 1.0, &skip));
            FILO_CHECK(filo_tensor_zeros(d, FILO_F32, 0, NULL, &go));
            int64_t t = 0;
            for (int step = 0; step < 5; step++) {
                int skipped = step == 2;
                filo_adam_options o = filo_adam_defaults(1);
                o.lr = 0.05;
                o.found_inf = skipped ? skip : go;
                if (on_device)
                    o.step_count = count;
                else
                    o.step = t + 1;
                FILO_CHECK(filo_adam_step(1, &p, (const filo_tensor *const *)&g, &m, &v, NULL, &o));
                if (!skipped)
                    t++;
            }
            if (on_device)
                cr_assert_eq(scalar_of(count), 4.0, "%s: the counter holds %g after 4 steps and a skip",
                             filo_test_backend_name(d), scalar_of(count));
            result[on_device] = filo_test_download(p);
            filo_tensor *all[7] = {p, g, m, v, count, skip, go};
            for (int i = 0; i < 7; i++)
                filo_tensor_free(all[i]);
        }
        for (int64_t i = 0; i < n; i++)
            cr_assert(fabs(result[0][i] - result[1][i]) <= 1e-7 * fabs(result[0][i]),
                      "%s: param %lld: host t %.9g, device t %.9g", filo_test_backend_name(d), (long long)i,
                      result[0][i], result[1][i]);
        free(result[0]);
        free(result[1]);
    }
}

/* ---- global grad norm ---- */

static const int64_t norm_sizes[] = {1, 7, 33, 129, 1000, 70001};
#define NORM_T 6

static void norm_sweep(filo_dtype dt)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    double *vals[NORM_T];
    for (int k = 0; k < NORM_T; k++) {
        vals[k] = malloc(sizeof(double) * (size_t)norm_sizes[k]);
        filo_test_fill_random(vals[k], norm_sizes[k], 50 + (uint64_t)k, -2, 2);
        for (int64_t i = 0; i < norm_sizes[k]; i++)
            vals[k][i] = round_to(dt, vals[k][i]);
    }
    const double types[3] = {2.0, 1.0, INFINITY};
    double want[3] = {0, 0, 0};
    for (int k = 0; k < NORM_T; k++)
        for (int64_t i = 0; i < norm_sizes[k]; i++) {
            double a = fabs(vals[k][i]);
            want[0] += a * a;
            want[1] += a;
            want[2] = a > want[2] ? a : want[2];
        }
    want[0] = sqrt(want[0]);
    for (int b = 0; b < nb; b++) {
        filo_tensor *g[NORM_T];
        for (int k = 0; k < NORM_T; k++) {
            g[k] = filo_test_upload(devs[b], dt, 1, &norm_sizes[k], vals[k]);
        }
        for (int ty = 0; ty < 3; ty++) {
            filo_tensor *norm, *flag, *again;
            FILO_CHECK(filo_grad_norm((const filo_tensor *const *)g, NORM_T, types[ty], &norm, &flag));
            FILO_CHECK(filo_grad_norm((const filo_tensor *const *)g, NORM_T, types[ty], &again, NULL));
            double got = scalar_of(norm), got2 = scalar_of(again);
            cr_assert(fabs(got - want[ty]) <= 1e-5 * want[ty], "%s %s norm %g: %.9g want %.9g",
                      filo_test_backend_name(devs[b]), filo_dtype_name(dt), types[ty], got, want[ty]);
            cr_assert(memcmp(&got, &got2, sizeof got) == 0, "%s: norm not bitwise reproducible: %.9g vs %.9g",
                      filo_test_backend_name(devs[b]), got, got2);
            cr_assert_eq(scalar_of(flag), 0.0);
            filo_tensor_free(norm);
            filo_tensor_free(flag);
            filo_tensor_free(again);
        }
        for (int k = 0; k < NORM_T; k++)
            filo_tensor_free(g[k]);
    }
    for (int k = 0; k < NORM_T; k++)
        free(vals[k]);
}

Test(optim, grad_norm_f32) { norm_sweep(FILO_F32); }
Test(optim, grad_norm_bf16) { norm_sweep(FILO_BF16); }
Test(optim, grad_norm_f16) { norm_sweep(FILO_F16); }

/* Non-finite grads raise the flag (of grad_norm and of found_inf); NaN gives a NaN norm, inf an
 * inf norm, as torch's vector_norm. Strided grads and more tensors than a launch table holds. */
Test(optim, grad_norm_nonfinite_strided_many)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    enum { NT = 30 };
    for (int b = 0; b < nb; b++) {
        filo_device d = devs[b];
        filo_tensor *g[NT];
        double want = 0;
        for (int k = 0; k < NT; k++) {
            int64_t shape[2] = {3, 1 + k % 4};
            double v[12];
            filo_test_fill_random(v, 12, 70 + (uint64_t)k, -1, 1);
            for (int i = 0; i < 12; i++) {
                v[i] = round_to(FILO_F32, v[i]);
                if (i < shape[0] * shape[1])
                    want += v[i] * v[i];
            }
            g[k] = make_grad(d, FILO_F32, 2, shape, v);
        }
        want = sqrt(want);
        filo_tensor *norm, *flag, *fi;
        FILO_CHECK(filo_grad_norm((const filo_tensor *const *)g, NT, 2.0, &norm, &flag));
        cr_assert(fabs(scalar_of(norm) - want) <= 1e-5 * want, "%s: %.9g want %.9g", filo_test_backend_name(d),
                  scalar_of(norm), want);
        cr_assert_eq(scalar_of(flag), 0.0);
        FILO_CHECK(filo_found_inf((const filo_tensor *const *)g, NT, &fi));
        cr_assert_eq(scalar_of(fi), 0.0);
        filo_tensor_free(norm);
        filo_tensor_free(flag);
        filo_tensor_free(fi);
        for (int k = 0; k < NT; k++)
            filo_tensor_free(g[k]);

        for (int bad = 0; bad < 2; bad++) {
            int64_t n = 1000;
            double v[1001];
            filo_test_fill_random(v, n + 1, 3, -1, 1);
            v[777] = bad ? NAN : -INFINITY;
            filo_tensor *h[2];
            h[0] = filo_test_upload(d, FILO_BF16, 1, &n, v);
            h[1] = filo_test_upload(d, FILO_BF16, 1, &n, v + 1);
            for (int ty = 0; ty < 3; ty++) {
                double type = ty == 0 ? 2.0 : ty == 1 ? 1.0 : INFINITY;
                FILO_CHECK(filo_grad_norm((const filo_tensor *const *)h, 2, type, &norm, &flag));
                double got = scalar_of(norm);
                cr_assert(bad ? isnan(got) : isinf(got), "%s: norm %g of grads with %s: %g",
                          filo_test_backend_name(d), type, bad ? "NaN" : "inf", got);
                cr_assert_eq(scalar_of(flag), 1.0);
                filo_tensor_free(norm);
                filo_tensor_free(flag);
            }
            FILO_CHECK(filo_found_inf((const filo_tensor *const *)h, 2, &fi));
            cr_assert_eq(scalar_of(fi), 1.0);
            filo_tensor_free(fi);
            filo_tensor_free(h[0]);
            filo_tensor_free(h[1]);
        }
    }
}

/* Empty grads only: the norm is 0 and the flag 0; a step over empty tensors is a no-op. */
Test(optim, empty_tensors)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t shape[2] = {0, 3};
    for (int b = 0; b < nb; b++) {
        filo_tensor *g[2], *p[2], *m[2], *v[2], *norm, *flag;
        for (int k = 0; k < 2; k++) {
            FILO_CHECK(filo_tensor_zeros(devs[b], FILO_BF16, 2, shape, &g[k]));
            FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 2, shape, &p[k]));
            FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 2, shape, &m[k]));
            FILO_CHECK(filo_tensor_zeros(devs[b], FILO_F32, 2, shape, &v[k]));
        }
        FILO_CHECK(filo_grad_norm((const filo_tensor *const *)g, 2, 2.0, &norm, &flag));
        cr_assert_eq(scalar_of(norm), 0.0);
        cr_assert_eq(scalar_of(flag), 0.0);
        filo_adam_options o = filo_adam_defaults(1);
        FILO_CHECK(filo_adam_step(2, p, (const filo_tensor *const *)g, m, v, NULL, &o));
        filo_tensor_free(norm);
        filo_tensor_free(flag);
        for (int k = 0; k < 2; k++) {
            filo_tensor_free(g[k]);
            filo_tensor_free(p[k]);
            filo_tensor_free(m[k]);
            filo_tensor_free(v[k]);
        }
    }
}

Test(optim, clip_coef)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const double norms[] = {0.0, 0.5, 1.0, 3.0, 1e30, INFINITY, NAN};
    for (int b = 0; b < nb; b++)
        for (size_t i = 0; i < sizeof norms / sizeof norms[0]; i++) {
            filo_tensor *norm, *coef;
            FILO_CHECK(filo_tensor_full(devs[b], FILO_F32, 0, NULL, norms[i], &norm));
            FILO_CHECK(filo_clip_coef(norm, 1.0, &coef));
            float c = 1.0f / ((float)norms[i] + 1e-6f);
            double want = isnan(c) ? NAN : (c > 1.0f ? 1.0 : (double)c);
            double got = scalar_of(coef);
            cr_assert(isnan(want) ? isnan(got) : got == want, "%s: clip_coef(%g) = %.9g, want %.9g",
                      filo_test_backend_name(devs[b]), norms[i], got, want);
            filo_tensor_free(norm);
            filo_tensor_free(coef);
        }
}

/* Global-norm clipping end to end, device scalars only: norm -> coef -> grad_scale. */
Test(optim, clip_then_step)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t n = 33;
    double gv[33], pv[33];
    filo_test_fill_random(gv, n, 11, -4, 4);
    filo_test_fill_random(pv, n, 12, -1, 1);
    double sq = 0;
    for (int i = 0; i < n; i++) {
        gv[i] = round_to(FILO_F32, gv[i]);
        pv[i] = round_to(FILO_F32, pv[i]);
        sq += gv[i] * gv[i];
    }
    double coef = 0.5 / (sqrt(sq) + 1e-6);
    for (int b = 0; b < nb; b++) {
        filo_device d = devs[b];
        filo_tensor *g = filo_test_upload(d, FILO_F32, 1, &n, gv), *p = filo_test_upload(d, FILO_F32, 1, &n, pv);
        filo_tensor *m, *v, *norm, *c;
        FILO_CHECK(filo_tensor_zeros(d, FILO_F32, 1, &n, &m));
        FILO_CHECK(filo_tensor_zeros(d, FILO_F32, 1, &n, &v));
        FILO_CHECK(filo_grad_norm((const filo_tensor *const *)&g, 1, 2.0, &norm, NULL));
        FILO_CHECK(filo_clip_coef(norm, 0.5, &c));
        cr_assert(fabs(scalar_of(c) - coef) <= 1e-6 * coef);
        filo_adam_options o = filo_adam_defaults(0);
        o.grad_scale = c;
        FILO_CHECK(filo_adam_step(1, &p, (const filo_tensor *const *)&g, &m, &v, NULL, &o));
        double *gm = filo_test_download(m);
        for (int i = 0; i < n; i++)
            cr_assert(fabs(gm[i] - 0.1 * gv[i] * coef) <= 1e-6 * fabs(0.1 * gv[i] * coef) + 1e-9,
                      "%s: exp_avg[%d] %.9g want %.9g", filo_test_backend_name(d), i, gm[i], 0.1 * gv[i] * coef);
        free(gm);
        filo_tensor *all[6] = {g, p, m, v, norm, c};
        for (int i = 0; i < 6; i++)
            filo_tensor_free(all[i]);
    }
}

/* The emulator's counters (tests/cuda_emu/filo_emu.h), present only in the emu build. */
unsigned long long filo_emu_host_sync_count(void) __attribute__((weak));
unsigned long long filo_emu_implicit_sync_count(void) __attribute__((weak));
unsigned long long filo_emu_launch_count(void) __attribute__((weak));

/* A whole clipped, loss-scaled step (found_inf, grad norm, clip coef, Adam step) on the device:
 * no host synchronization, explicit or implicit, and one launch for the five tensors' step. */
Test(optim, training_step_never_syncs)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    if (nb < 2 || !filo_emu_host_sync_count || !filo_emu_implicit_sync_count || !filo_emu_launch_count) {
        cr_log_info("no emulated CUDA device: sync counts not checked");
        return;
    }
    filo_device d = devs[1];
    filo_tensor *p[5], *g[5], *m[5], *v[5], *c[5];
    for (int k = 0; k < 5; k++) {
        int64_t n = numel_of(1, shapes[k]);
        FILO_CHECK(filo_tensor_full(d, FILO_F32, 1, &n, 0.5, &p[k]));
        FILO_CHECK(filo_tensor_full(d, FILO_BF16, 1, &n, 0.25, &g[k]));
        FILO_CHECK(filo_tensor_zeros(d, FILO_F32, 1, &n, &m[k]));
        FILO_CHECK(filo_tensor_zeros(d, FILO_F32, 1, &n, &v[k]));
        FILO_CHECK(filo_tensor_zeros(d, FILO_BF16, 1, &n, &c[k]));
    }
    FILO_CHECK(filo_device_synchronize(d));
    unsigned long long syncs = filo_emu_host_sync_count(), implicit = filo_emu_implicit_sync_count();
    for (int step = 1; step <= 3; step++) {
        filo_tensor *fi, *norm, *coef;
        FILO_CHECK(filo_found_inf((const filo_tensor *const *)g, 5, &fi));
        FILO_CHECK(filo_grad_norm((const filo_tensor *const *)g, 5, 2.0, &norm, NULL));
        FILO_CHECK(filo_clip_coef(norm, 1.0, &coef));
        filo_adam_options o = filo_adam_defaults(1);
        o.step = step;
        o.grad_scale = coef;
        o.found_inf = fi;
        unsigned long long launches = filo_emu_launch_count();
        FILO_CHECK(filo_adam_step(5, p, (const filo_tensor *const *)g, m, v, c, &o));
        cr_assert_eq(filo_emu_launch_count() - launches, 1, "the step of 5 tensors took %llu launches",
                     filo_emu_launch_count() - launches);
        filo_tensor_free(fi);
        filo_tensor_free(norm);
        filo_tensor_free(coef);
    }
    cr_assert_eq(filo_emu_host_sync_count(), syncs, "a training step synchronized the host");
    cr_assert_eq(filo_emu_implicit_sync_count(), implicit, "a training step synchronized implicitly");
    double *got = filo_test_download(p[4]);
    cr_assert(got[0] < 0.5, "the step did not run: %g", got[0]);
    free(got);
    for (int k = 0; k < 5; k++) {
        filo_tensor *all[5] = {p[k], g[k], m[k], v[k], c[k]};
        for (int i = 0; i < 5; i++)
            filo_tensor_free(all[i]);
    }
}

/* ---- bad input ---- */

Test(optim, bad_inputs)
{
    filo_device cpu = filo_cpu();
    int64_t s4[1] = {4}, s5[1] = {5}, s23[2] = {2, 3};
    filo_tensor *p, *g, *m, *v, *g5, *p16, *g64, *m16, *p2, *pt, *c32, *gi;
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 1, s4, &p));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 1, s4, &g));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 1, s4, &m));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 1, s4, &v));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 1, s5, &g5));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F16, 1, s4, &p16));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F64, 1, s4, &g64));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_BF16, 1, s4, &m16));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 1, s4, &c32));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_I32, 1, s4, &gi));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 2, s23, &p2));
    FILO_CHECK(filo_tensor_transpose(p2, 0, 1, &pt));
    filo_adam_options o = filo_adam_defaults(1);
    filo_tensor *P[2] = {p, p2}, *M[2] = {m, m}, *V[2] = {v, v};
    const filo_tensor *G[2] = {g, g};

    /* shapes, naming the index and both shapes */
    FILO_CHECK_FAILS(filo_adam_step(1, &p, (const filo_tensor *const *)&g5, &m, &v, NULL, &o), FILO_ERR_SHAPE,
                     "grads[0] f32[5] cpu must have the shape of params[0] f32[4] cpu");
    FILO_CHECK_FAILS(filo_adam_step(2, P, G, M, V, NULL, &o), FILO_ERR_SHAPE, "grads[1] f32[4] cpu must have the shape of params[1] f32[2, 3]");
    FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &g5, &v, NULL, &o), FILO_ERR_SHAPE, "exp_avgs[0] f32[5]");
    FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &m, &g5, NULL, &o), FILO_ERR_SHAPE, "exp_avg_sqs[0] f32[5]");
    /* dtypes */
    FILO_CHECK_FAILS(filo_adam_step(1, &p16, G, &m, &v, NULL, &o), FILO_ERR_DTYPE, "params[0] f16[4] cpu must be f32");
    FILO_CHECK_FAILS(filo_adam_step(1, &p, (const filo_tensor *const *)&g64, &m, &v, NULL, &o), FILO_ERR_DTYPE,
                     "grads[0] f64[4]");
    FILO_CHECK_FAILS(filo_adam_step(1, &p, (const filo_tensor *const *)&gi, &m, &v, NULL, &o), FILO_ERR_DTYPE,
                     "grads[0] i32[4]");
    FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &m16, &v, NULL, &o), FILO_ERR_DTYPE, "exp_avgs[0] bf16[4]");
    FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &m, &m16, NULL, &o), FILO_ERR_DTYPE, "exp_avg_sqs[0] bf16[4]");
    FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &m, &v, &c32, &o), FILO_ERR_DTYPE, "copies[0] f32[4] cpu must be bf16 or f16");
    {
        filo_tensor *p3[2] = {p, p}, *g3[2] = {g, m16};
        FILO_CHECK_FAILS(filo_adam_step(2, p3, (const filo_tensor *const *)g3, M, V, NULL, &o), FILO_ERR_DTYPE,
                         "grads[1] bf16[4] cpu must have the dtype of grads[0]");
    }
    /* in place needs contiguous params and states */
    {
        filo_tensor *pc, *gt;
        FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 2, (int64_t[]){3, 2}, &pc));
        FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 2, (int64_t[]){3, 2}, &gt));
        FILO_CHECK_FAILS(filo_adam_step(1, &pt, (const filo_tensor *const *)&gt, &pc, &pc, NULL, &o), FILO_ERR_SHAPE,
                         "params[0] f32[3, 2] cpu is updated in place and must be contiguous");
        FILO_CHECK_FAILS(filo_adam_step(1, &pc, (const filo_tensor *const *)&gt, &pt, &gt, NULL, &o), FILO_ERR_SHAPE,
                         "exp_avgs[0] f32[3, 2] cpu is updated in place and must be contiguous");
        FILO_CHECK_FAILS(filo_adam_step(1, &pc, (const filo_tensor *const *)&gt, &pc, &gt, NULL, &o),
                         FILO_ERR_INVALID_ARG, "must be distinct");
        filo_tensor_free(pc);
        filo_tensor_free(gt);
    }
    /* NULLs */
    FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &m, &v, NULL, NULL), FILO_ERR_INVALID_ARG, "options is NULL");
    FILO_CHECK_FAILS(filo_adam_step(1, NULL, G, &m, &v, NULL, &o), FILO_ERR_INVALID_ARG, "is NULL");
    {
        filo_tensor *np = NULL;
        const filo_tensor *ng = NULL;
        FILO_CHECK_FAILS(filo_adam_step(1, &np, G, &m, &v, NULL, &o), FILO_ERR_INVALID_ARG, "params[0] is NULL");
        FILO_CHECK_FAILS(filo_adam_step(1, &p, &ng, &m, &v, NULL, &o), FILO_ERR_INVALID_ARG, "grads[0] is NULL");
    }
    FILO_CHECK_FAILS(filo_adam_step(-1, &p, G, &m, &v, NULL, &o), FILO_ERR_INVALID_ARG, "n must be >= 0");
    FILO_CHECK(filo_adam_step(0, NULL, NULL, NULL, NULL, NULL, &o));
    /* hyperparameters */
    struct {
        double lr, b1, b2, eps, wd;
        int64_t step;
        const char *msg;
    } hp[] = {
        {-1e-3, 0.9, 0.999, 1e-8, 0, 1, "lr must be finite and >= 0, got -0.001"},
        {NAN, 0.9, 0.999, 1e-8, 0, 1, "lr must be finite"},
        {1e-3, 1.0, 0.999, 1e-8, 0, 1, "beta1 must be in [0, 1), got 1"},
        {1e-3, -0.1, 0.999, 1e-8, 0, 1, "beta1 must be in [0, 1)"},
        {1e-3, 0.9, 1.5, 1e-8, 0, 1, "beta2 must be in [0, 1), got 1.5"},
        {1e-3, 0.9, 0.999, 0.0, 0, 1, "eps must be finite and > 0, got 0"},
        {1e-3, 0.9, 0.999, -1e-8, 0, 1, "eps must be finite and > 0"},
        {1e-3, 0.9, 0.999, 1e-8, -0.1, 1, "weight_decay must be finite and >= 0"},
        {1e-3, 0.9, 0.999, 1e-8, 0, 0, "step must be >= 1"},
    };
    for (size_t i = 0; i < sizeof hp / sizeof hp[0]; i++) {
        filo_adam_options b = filo_adam_defaults(0);
        b.lr = hp[i].lr;
        b.beta1 = hp[i].b1;
        b.beta2 = hp[i].b2;
        b.eps = hp[i].eps;
        b.weight_decay = hp[i].wd;
        b.step = hp[i].step;
        FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &m, &v, NULL, &b), FILO_ERR_INVALID_ARG, hp[i].msg);
    }
    /* device scalars */
    {
        filo_tensor *s1, *su8, *si;
        FILO_CHECK(filo_tensor_full(cpu, FILO_F32, 1, (int64_t[]){1}, 1.0, &s1));
        FILO_CHECK(filo_tensor_full(cpu, FILO_U8, 0, NULL, 1.0, &su8));
        FILO_CHECK(filo_tensor_full(cpu, FILO_I32, 0, NULL, 1.0, &si));
        filo_adam_options b = o;
        b.grad_scale = s1;
        FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &m, &v, NULL, &b), FILO_ERR_SHAPE,
                         "grad_scale must be a 0-dim tensor, got f32[1] cpu");
        b.grad_scale = su8;
        FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &m, &v, NULL, &b), FILO_ERR_DTYPE, "grad_scale must be f32, got u8");
        b.grad_scale = NULL;
        b.found_inf = si;
        FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &m, &v, NULL, &b), FILO_ERR_DTYPE,
                         "found_inf must be f32 or u8, got i32");
        FILO_CHECK_FAILS(filo_clip_coef(s1, 1.0, &si), FILO_ERR_SHAPE, "norm must be a 0-dim tensor");
        filo_tensor_free(s1);
        filo_tensor_free(su8);
        filo_tensor_free(si);
    }
    /* norms */
    {
        filo_tensor *out = NULL, *n0;
        FILO_CHECK_FAILS(filo_grad_norm(G, 1, 3.0, &out, NULL), FILO_ERR_UNSUPPORTED, "norm_type must be 2.0, 1.0");
        FILO_CHECK_FAILS(filo_grad_norm(G, 0, 2.0, &out, NULL), FILO_ERR_INVALID_ARG, "n must be >= 1");
        FILO_CHECK_FAILS(filo_grad_norm((const filo_tensor *const *)&g64, 1, 2.0, &out, NULL), FILO_ERR_DTYPE,
                         "grads[0] f64[4] cpu must be f32, bf16 or f16");
        FILO_CHECK_FAILS(filo_grad_norm(G, 1, 2.0, NULL, NULL), FILO_ERR_INVALID_ARG, "norm is NULL");
        FILO_CHECK_FAILS(filo_found_inf((const filo_tensor *const *)&gi, 1, &out), FILO_ERR_DTYPE, "grads[0] i32[4]");
        FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 0, NULL, &n0));
        FILO_CHECK_FAILS(filo_clip_coef(n0, -1.0, &out), FILO_ERR_INVALID_ARG, "max_norm must be finite and >= 0");
        FILO_CHECK_FAILS(filo_clip_coef(NULL, 1.0, &out), FILO_ERR_INVALID_ARG, "norm is NULL");
        filo_tensor_free(n0);
    }
    /* mixed devices, when a CUDA device exists (the emulator in the emu build) */
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    if (filo_test_backends(devs) > 1) {
        filo_tensor *gc, *sc, *out = NULL;
        FILO_CHECK(filo_tensor_zeros(devs[1], FILO_F32, 1, s4, &gc));
        FILO_CHECK(filo_tensor_zeros(devs[1], FILO_F32, 0, NULL, &sc));
        FILO_CHECK_FAILS(filo_adam_step(1, &p, (const filo_tensor *const *)&gc, &m, &v, NULL, &o), FILO_ERR_DEVICE,
                         "grads[0] f32[4] cuda:0 is not on cpu");
        FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &m, &gc, NULL, &o), FILO_ERR_DEVICE, "exp_avg_sqs[0] f32[4] cuda:0");
        filo_adam_options b = o;
        b.found_inf = sc;
        FILO_CHECK_FAILS(filo_adam_step(1, &p, G, &m, &v, NULL, &b), FILO_ERR_DEVICE, "found_inf f32[] cuda:0");
        const filo_tensor *mixed[2] = {g, gc};
        FILO_CHECK_FAILS(filo_grad_norm(mixed, 2, 2.0, &out, NULL), FILO_ERR_DEVICE, "grads[1] f32[4] cuda:0 is not on cpu");
        filo_tensor_free(gc);
        filo_tensor_free(sc);
    }
    /* nothing was touched by the failed calls */
    double *pv = filo_test_download(p);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pv[i], 0.0);
    free(pv);
    filo_tensor *all[] = {p, g, m, v, g5, p16, g64, m16, p2, pt, c32, gi};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}
