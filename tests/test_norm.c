/* LayerNorm and RMSNorm (include/filo/norm.h): forward and backward parity on every backend
 * against float64 references written here, a finite-difference gradient check in f64, the
 * bitwise determinism of the CUDA backward, and every bad-input error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/norm.h"
#include "parity.h"

#define EPS 1e-5
/* More rows than the CUDA backward has blocks (512), so blocks sum several rows each. */
#define MANY_ROWS 600

typedef struct dtype_pair {
    filo_dtype x, param;
} dtype_pair;

static const dtype_pair all_pairs[] = {
    {FILO_F32, FILO_F32}, {FILO_F64, FILO_F64}, {FILO_BF16, FILO_BF16},
    {FILO_BF16, FILO_F32}, {FILO_F16, FILO_F16}, {FILO_F16, FILO_F32},
};
static const int64_t odd_cols[] = {1, 7, 33, 129, 768, 1023};

typedef struct norm_ctx {
    int rms;
    int residual;
    int beta;
} norm_ctx;

static filo_dtype stat_dtype(filo_dtype t) { return t == FILO_F64 ? FILO_F64 : FILO_F32; }

static double round_to(filo_dtype t, double v)
{
    uint64_t buf;
    double r;
    cr_assert_eq(filo_convert(&v, FILO_F64, &buf, t, 1), FILO_OK);
    cr_assert_eq(filo_convert(&buf, t, &r, FILO_F64, 1), FILO_OK);
    return r;
}

static void rows_cols(const parity_input *x, int64_t *rows, int64_t *cols)
{
    *cols = x->shape[x->ndim - 1];
    *rows = 1;
    for (int i = 0; i < x->ndim - 1; i++)
        *rows *= x->shape[i];
}

/* ---- forward ---- */

static filo_status run_forward(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const norm_ctx *c = ctx;
    const filo_tensor *x = in[0], *res = c->residual ? in[1] : NULL;
    const filo_tensor *gamma = in[1 + c->residual];
    const filo_tensor *beta = !c->rms && c->beta ? in[2 + c->residual] : NULL;
    filo_tensor *y = NULL, *h = NULL, *mean = NULL, *rstd = NULL;
    filo_status s = c->rms ? filo_rmsnorm_forward(x, res, gamma, EPS, &y, res ? &h : NULL, &rstd)
                           : filo_layernorm_forward(x, res, gamma, beta, EPS, &y, res ? &h : NULL, &mean, &rstd);
    if (s != FILO_OK)
        return s;
    int k = 0;
    out[k++] = y;
    if (res)
        out[k++] = h;
    if (!c->rms)
        out[k++] = mean;
    out[k++] = rstd;
    return FILO_OK;
}

static void reference_forward(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    const norm_ctx *c = ctx;
    filo_dtype t = shapes[0].dtype;
    int64_t rows, C;
    rows_cols(&shapes[0], &rows, &C);
    const double *x = in[0], *res = c->residual ? in[1] : NULL, *gamma = in[1 + c->residual];
    const double *beta = !c->rms && c->beta ? in[2 + c->residual] : NULL;
    int k = 0;
    double *y = want[k++], *h = res ? want[k++] : NULL, *mean = c->rms ? NULL : want[k++], *rstd = want[k++];
    double *row = malloc(sizeof(double) * (size_t)C);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < C; j++) {
            double v = x[r * C + j];
            if (res) {
                /* h is stored in x's dtype (added in f32 for bf16/f16) and normalized as stored. */
                double s = t == FILO_F64 ? v + res[r * C + j] : (double)((float)v + (float)res[r * C + j]);
                v = round_to(t, s);
                h[r * C + j] = v;
            }
            row[j] = v;
        }
        double m = 0, var = 0;
        if (!c->rms) {
            for (int64_t j = 0; j < C; j++)
                m += row[j];
            m /= (double)C;
            mean[r] = m;
        }
        for (int64_t j = 0; j < C; j++)
            var += (row[j] - m) * (row[j] - m);
        double rs = 1.0 / sqrt(var / (double)C + EPS);
        rstd[r] = rs;
        for (int64_t j = 0; j < C; j++)
            y[r * C + j] = (row[j] - m) * rs * gamma[j] + (beta ? beta[j] : 0.0);
    }
    free(row);
}

static parity_input input(filo_dtype t, int ndim, const int64_t *shape, double lo, double hi, int transpose)
{
    parity_input p = {.dtype = t, .ndim = ndim, .lo = lo, .hi = hi, .transpose_last = transpose};
    memcpy(p.shape, shape, sizeof(int64_t) * (size_t)ndim);
    return p;
}

/* Tolerances: relative to the lowest precision dtype, and as much absolute (values are O(1),
 * and y = xhat * gamma + beta or dx cancel to near zero). */
static void set_tol(parity_case *pc, filo_dtype t)
{
    pc->rtol = parity_default_rtol(t);
    pc->atol = pc->rtol;
}

static void forward_case(int rms, int residual, int beta, dtype_pair p, int ndim, const int64_t *shape,
                         int transpose)
{
    norm_ctx ctx = {rms, residual, beta};
    int64_t C = shape[ndim - 1];
    char name[160];
    snprintf(name, sizeof name, "%s forward %s/%s C=%lld%s%s%s", rms ? "rmsnorm" : "layernorm",
             filo_dtype_name(p.x), filo_dtype_name(p.param), (long long)C, residual ? " +residual" : "",
             beta ? "" : " no-beta", transpose ? " transposed" : "");
    parity_case pc = {.name = name, .run = run_forward, .reference = reference_forward, .ctx = &ctx, .seed = 7};
    pc.inputs[pc.n_inputs++] = input(p.x, ndim, shape, -2.0, 3.0, transpose);
    if (residual)
        pc.inputs[pc.n_inputs++] = input(p.x, ndim, shape, -1.0, 1.0, transpose);
    pc.inputs[pc.n_inputs++] = input(p.param, 1, &C, 0.5, 1.5, 0);
    if (!rms && beta)
        pc.inputs[pc.n_inputs++] = input(p.param, 1, &C, -0.5, 0.5, 0);
    pc.n_outputs = 1 + residual + (rms ? 1 : 2);
    set_tol(&pc, p.x);
    parity_run(&pc);
}

/* ---- backward ---- */

static filo_status run_backward(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const norm_ctx *c = ctx;
    if (c->rms)
        return filo_rmsnorm_backward(in[0], in[1], in[2], in[3], &out[0], &out[1]);
    return filo_layernorm_backward(in[0], in[1], in[2], in[3], in[4], &out[0], &out[1], &out[2]);
}

static void reference_backward(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    const norm_ctx *c = ctx;
    int64_t rows, C;
    rows_cols(&shapes[0], &rows, &C);
    const double *dy = in[0], *h = in[1], *mean = c->rms ? NULL : in[2];
    const double *rstd = in[c->rms ? 2 : 3], *gamma = in[c->rms ? 3 : 4];
    double *dx = want[0], *dgamma = want[1], *dbeta = c->rms ? NULL : want[2];
    for (int64_t j = 0; j < C; j++) {
        dgamma[j] = 0;
        if (dbeta)
            dbeta[j] = 0;
    }
    for (int64_t r = 0; r < rows; r++) {
        double m = mean ? mean[r] : 0.0, rs = rstd[r], s1 = 0, s2 = 0;
        for (int64_t j = 0; j < C; j++) {
            double xhat = (h[r * C + j] - m) * rs, dxhat = dy[r * C + j] * gamma[j];
            s1 += dxhat;
            s2 += dxhat * xhat;
            dgamma[j] += dy[r * C + j] * xhat;
            if (dbeta)
                dbeta[j] += dy[r * C + j];
        }
        s1 = c->rms ? 0.0 : s1 / (double)C;
        s2 /= (double)C;
        for (int64_t j = 0; j < C; j++) {
            double xhat = (h[r * C + j] - m) * rs, dxhat = dy[r * C + j] * gamma[j];
            dx[r * C + j] = rs * (dxhat - s1 - xhat * s2);
        }
    }
}

static void backward_case(int rms, dtype_pair p, int ndim, const int64_t *shape, int transpose)
{
    norm_ctx ctx = {rms, 0, 1};
    int64_t C = shape[ndim - 1];
    char name[160];
    snprintf(name, sizeof name, "%s backward %s/%s C=%lld%s", rms ? "rmsnorm" : "layernorm", filo_dtype_name(p.x),
             filo_dtype_name(p.param), (long long)C, transpose ? " transposed" : "");
    parity_case pc = {.name = name, .run = run_backward, .reference = reference_backward, .ctx = &ctx, .seed = 11};
    pc.inputs[pc.n_inputs++] = input(p.x, ndim, shape, -1.0, 1.0, transpose);
    pc.inputs[pc.n_inputs++] = input(p.x, ndim, shape, -2.0, 2.0, transpose);
    if (!rms)
        pc.inputs[pc.n_inputs++] = input(stat_dtype(p.x), ndim - 1, shape, -0.5, 0.5, 0);
    pc.inputs[pc.n_inputs++] = input(stat_dtype(p.x), ndim - 1, shape, 0.5, 2.0, 0);
    pc.inputs[pc.n_inputs++] = input(p.param, 1, &C, 0.5, 1.5, 0);
    pc.n_outputs = rms ? 2 : 3;
    set_tol(&pc, p.x);
    parity_run(&pc);
}

/* Every odd C, with and without the fused residual (and without beta once), for one dtype pair. */
static void sweep(int rms, dtype_pair p)
{
    for (size_t i = 0; i < sizeof odd_cols / sizeof odd_cols[0]; i++) {
        int64_t shape[3] = {3, 5, odd_cols[i]};
        forward_case(rms, 0, 1, p, 3, shape, 0);
        forward_case(rms, 1, 1, p, 3, shape, 0);
        backward_case(rms, p, 3, shape, 0);
    }
    int64_t shape[2] = {4, 33};
    if (!rms)
        forward_case(rms, 1, 0, p, 2, shape, 0);
}

#define SWEEP_TESTS(pair_index, suffix)                                     \
    Test(norm, layernorm_##suffix) { sweep(0, all_pairs[pair_index]); }     \
    Test(norm, rmsnorm_##suffix) { sweep(1, all_pairs[pair_index]); }

SWEEP_TESTS(0, f32)
SWEEP_TESTS(1, f64)
SWEEP_TESTS(2, bf16)
SWEEP_TESTS(3, bf16_f32_params)
SWEEP_TESTS(4, f16)
SWEEP_TESTS(5, f16_f32_params)

Test(norm, non_contiguous_inputs)
{
    int64_t shape[2] = {9, 33};
    dtype_pair pairs[2] = {{FILO_F32, FILO_F32}, {FILO_BF16, FILO_F32}};
    for (int i = 0; i < 2; i++)
        for (int rms = 0; rms < 2; rms++) {
            forward_case(rms, 1, 1, pairs[i], 2, shape, 1);
            backward_case(rms, pairs[i], 2, shape, 1);
        }
}

/* Rows wider than the shared-memory row cache (and, for the backward, than the shared dgamma
 * sums), and more rows than the backward has blocks. */
Test(norm, wide_rows_and_many_rows)
{
    const int64_t wide[] = {4000, 7000};
    for (int i = 0; i < 2; i++)
        for (int rms = 0; rms < 2; rms++) {
            int64_t shape[2] = {3, wide[i]};
            forward_case(rms, 1, 1, all_pairs[0], 2, shape, 0);
            forward_case(rms, 1, 1, all_pairs[1], 2, shape, 0);
            backward_case(rms, all_pairs[0], 2, shape, 0);
            backward_case(rms, all_pairs[1], 2, shape, 0);
        }
    int64_t many[2] = {MANY_ROWS, 33};
    for (int rms = 0; rms < 2; rms++) {
        forward_case(rms, 0, 1, all_pairs[0], 2, many, 0);
        backward_case(rms, all_pairs[0], 2, many, 0);
    }
}

/* A 1-D x (statistics are 0-dim) and x with no rows (dgamma and dbeta are zero). */
Test(norm, one_dim_and_empty)
{
    int64_t c7 = 7;
    forward_case(0, 1, 1, all_pairs[0], 1, &c7, 0);
    backward_case(0, all_pairs[0], 1, &c7, 0);
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        int64_t shape[2] = {0, 7}, lead = 0;
        double got[7];
        filo_tensor *x, *g32, *y, *mean, *rstd, *dx, *dg, *db;
        FILO_CHECK(filo_tensor_empty(devs[b], FILO_F32, 2, shape, &x));
        FILO_CHECK(filo_tensor_full(devs[b], FILO_F32, 1, &c7, 1.0, &g32));
        FILO_CHECK(filo_layernorm_forward(x, NULL, g32, NULL, EPS, &y, NULL, &mean, &rstd));
        cr_assert_eq(filo_tensor_numel(y), 0);
        cr_assert_eq(rstd->ndim, 1);
        cr_assert_eq(rstd->shape[0], lead);
        FILO_CHECK(filo_layernorm_backward(x, x, mean, rstd, g32, &dx, &dg, &db));
        FILO_CHECK(filo_tensor_to_host_as(dg, FILO_F64, got, sizeof got));
        for (int j = 0; j < 7; j++)
            cr_assert_eq(got[j], 0.0, "dgamma[%d] on %s is %g", j, filo_test_backend_name(devs[b]), got[j]);
        FILO_CHECK(filo_tensor_to_host_as(db, FILO_F64, got, sizeof got));
        for (int j = 0; j < 7; j++)
            cr_assert_eq(got[j], 0.0);
        filo_tensor *all[] = {x, g32, y, mean, rstd, dx, dg, db};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            filo_tensor_free(all[i]);
    }
}

/* ---- finite differences (f64, every backend) ---- */

enum { FD_X, FD_RES, FD_GAMMA, FD_BETA, FD_COUNT };

/* sum(y * w) for the current values of the inputs. */
static double loss(filo_device d, int rms, int ndim, const int64_t *shape, double *const *v, const double *w,
                   int residual)
{
    int64_t C = shape[ndim - 1], n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    filo_tensor *x = filo_test_upload(d, FILO_F64, ndim, shape, v[FD_X]);
    filo_tensor *res = residual ? filo_test_upload(d, FILO_F64, ndim, shape, v[FD_RES]) : NULL;
    filo_tensor *g = filo_test_upload(d, FILO_F64, 1, &C, v[FD_GAMMA]), *b = filo_test_upload(d, FILO_F64, 1, &C, v[FD_BETA]);
    filo_tensor *y, *h = NULL, *mean = NULL, *rstd;
    if (rms)
        FILO_CHECK(filo_rmsnorm_forward(x, res, g, EPS, &y, residual ? &h : NULL, &rstd));
    else
        FILO_CHECK(filo_layernorm_forward(x, res, g, b, EPS, &y, residual ? &h : NULL, &mean, &rstd));
    double *yv = filo_test_download(y), l = 0;
    for (int64_t i = 0; i < n; i++)
        l += yv[i] * w[i];
    free(yv);
    filo_tensor *all[] = {x, res, g, b, y, h, mean, rstd};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
    return l;
}

static void gradient_check(filo_device d, int rms, int residual)
{
    const int ndim = 3;
    const int64_t shape[3] = {2, 2, 7}, C = 7, n = 28;
    double *v[FD_COUNT], w[28];
    int64_t len[FD_COUNT] = {n, n, C, C};
    for (int k = 0; k < FD_COUNT; k++) {
        v[k] = malloc(sizeof(double) * (size_t)len[k]);
        filo_test_fill_random(v[k], len[k], 100 + (uint64_t)k, k == FD_GAMMA ? 0.5 : -1.5, k == FD_GAMMA ? 1.5 : 1.5);
    }
    filo_test_fill_random(w, n, 99, -1.0, 1.0);

    /* Analytic: forward, then backward with dy = w on the saved h (or x). */
    filo_tensor *x = filo_test_upload(d, FILO_F64, ndim, shape, v[FD_X]), *res = residual ? filo_test_upload(d, FILO_F64, ndim, shape, v[FD_RES]) : NULL;
    filo_tensor *g = filo_test_upload(d, FILO_F64, 1, &C, v[FD_GAMMA]), *b = filo_test_upload(d, FILO_F64, 1, &C, v[FD_BETA]), *dy = filo_test_upload(d, FILO_F64, ndim, shape, w);
    filo_tensor *y, *h = NULL, *mean = NULL, *rstd, *dx, *dg, *db = NULL;
    if (rms) {
        FILO_CHECK(filo_rmsnorm_forward(x, res, g, EPS, &y, residual ? &h : NULL, &rstd));
        FILO_CHECK(filo_rmsnorm_backward(dy, residual ? h : x, rstd, g, &dx, &dg));
    } else {
        FILO_CHECK(filo_layernorm_forward(x, res, g, b, EPS, &y, residual ? &h : NULL, &mean, &rstd));
        FILO_CHECK(filo_layernorm_backward(dy, residual ? h : x, mean, rstd, g, &dx, &dg, &db));
    }
    double *analytic[FD_COUNT] = {filo_test_download(dx), NULL, filo_test_download(dg), rms ? NULL : filo_test_download(db)};
    analytic[FD_RES] = analytic[FD_X]; /* d(residual) = dx */

    const double step = 1e-6;
    for (int k = 0; k < FD_COUNT; k++) {
        if ((k == FD_RES && !residual) || (k == FD_BETA && rms))
            continue;
        for (int64_t i = 0; i < len[k]; i++) {
            double keep = v[k][i];
            v[k][i] = keep + step;
            double lp = loss(d, rms, ndim, shape, v, w, residual);
            v[k][i] = keep - step;
            double lm = loss(d, rms, ndim, shape, v, w, residual);
            v[k][i] = keep;
            double numeric = (lp - lm) / (2 * step), a = analytic[k][i];
            cr_assert(fabs(numeric - a) <= 1e-6 + 1e-6 * fabs(a),
                      "%s %s on %s: d/d%s[%lld] analytic %.10g, finite difference %.10g", rms ? "rmsnorm" : "layernorm",
                      residual ? "+residual" : "", filo_test_backend_name(d),
                      (const char *[]){"x", "residual", "gamma", "beta"}[k], (long long)i, a, numeric);
        }
    }
    free(analytic[FD_X]);
    free(analytic[FD_GAMMA]);
    free(analytic[FD_BETA]);
    for (int k = 0; k < FD_COUNT; k++)
        free(v[k]);
    filo_tensor *all[] = {x, res, g, b, dy, y, h, mean, rstd, dx, dg, db};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}

Test(norm, finite_difference_gradients)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++)
        for (int rms = 0; rms < 2; rms++)
            for (int residual = 0; residual < 2; residual++)
                gradient_check(devs[b], rms, residual);
}

/* ---- determinism of the CUDA backward ---- */

Test(norm, backward_bitwise_deterministic)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs), ran = 0;
    const int64_t rows = MANY_ROWS, C = 129, n = rows * C;
    int64_t shape[2] = {rows, C};
    double *dyv = malloc(sizeof(double) * (size_t)n), *hv = malloc(sizeof(double) * (size_t)n);
    double mv[MANY_ROWS], rv[MANY_ROWS], gv[129];
    filo_test_fill_random(dyv, n, 1, -1, 1);
    filo_test_fill_random(hv, n, 2, -2, 2);
    filo_test_fill_random(mv, rows, 3, -0.5, 0.5);
    filo_test_fill_random(rv, rows, 4, 0.5, 2);
    filo_test_fill_random(gv, C, 5, 0.5, 1.5);
    for (int b = 0; b < nb; b++) {
        if (devs[b].type != FILO_DEVICE_CUDA)
            continue;
        ran++;
        for (int rms = 0; rms < 2; rms++) {
            filo_tensor *in[5];
            const double *src[5] = {dyv, hv, mv, rv, gv};
            const int64_t *shapes[5] = {shape, shape, shape, shape, &C};
            const int ndims[5] = {2, 2, 1, 1, 1};
            for (int k = 0; k < 5; k++) {
                filo_tensor *t64 = filo_test_upload(devs[b], FILO_F64, ndims[k], shapes[k], src[k]);
                FILO_CHECK(filo_tensor_empty(devs[b], FILO_F32, ndims[k], shapes[k], &in[k]));
                FILO_CHECK(filo_tensor_copy(in[k], t64));
                filo_tensor_free(t64);
            }
            uint32_t first[2][129], again[2][129];
            for (int run = 0; run < 2; run++) {
                filo_tensor *dx, *dg, *db = NULL;
                if (rms)
                    FILO_CHECK(filo_rmsnorm_backward(in[0], in[1], in[3], in[4], &dx, &dg));
                else
                    FILO_CHECK(filo_layernorm_backward(in[0], in[1], in[2], in[3], in[4], &dx, &dg, &db));
                uint32_t(*dst)[129] = run == 0 ? first : again;
                FILO_CHECK(filo_tensor_to_host(dg, dst[0], sizeof dst[0]));
                if (db)
                    FILO_CHECK(filo_tensor_to_host(db, dst[1], sizeof dst[1]));
                else
                    memset(dst[1], 0, sizeof dst[1]);
                filo_tensor_free(dx);
                filo_tensor_free(dg);
                filo_tensor_free(db);
            }
            cr_assert(memcmp(first, again, sizeof first) == 0, "%s backward on %s: dgamma/dbeta differ between runs",
                      rms ? "rmsnorm" : "layernorm", filo_test_backend_name(devs[b]));
            for (int k = 0; k < 5; k++)
                filo_tensor_free(in[k]);
        }
    }
    cr_log_info("determinism checked on %d cuda backend(s)", ran);
    free(dyv);
    free(hv);
}

/* ---- bad inputs ---- */

static filo_tensor *cpu_tensor(filo_dtype t, int ndim, const int64_t *shape)
{
    filo_tensor *r;
    FILO_CHECK(filo_tensor_full(filo_cpu(), t, ndim, shape, 1.0, &r));
    return r;
}

Test(norm, bad_inputs)
{
    int64_t s47[2] = {4, 7}, s48[2] = {4, 8}, s4[1] = {4}, s5[1] = {5}, c7[1] = {7}, c8[1] = {8}, s40[2] = {4, 0};
    filo_tensor *x = cpu_tensor(FILO_F32, 2, s47), *g = cpu_tensor(FILO_F32, 1, c7), *b = cpu_tensor(FILO_F32, 1, c7);
    filo_tensor *x48 = cpu_tensor(FILO_F32, 2, s48), *g8 = cpu_tensor(FILO_F32, 1, c8);
    filo_tensor *xi = cpu_tensor(FILO_I32, 2, s47), *x64 = cpu_tensor(FILO_F64, 2, s47);
    filo_tensor *xbf = cpu_tensor(FILO_BF16, 2, s47), *gf16 = cpu_tensor(FILO_F16, 1, c7);
    filo_tensor *g64 = cpu_tensor(FILO_F64, 1, c7), *x0 = cpu_tensor(FILO_F32, 0, NULL), *xe = cpu_tensor(FILO_F32, 2, s40);
    filo_tensor *st4 = cpu_tensor(FILO_F32, 1, s4), *st5 = cpu_tensor(FILO_F32, 1, s5), *st64 = cpu_tensor(FILO_F64, 1, s4);
    filo_tensor *y, *h, *m, *r, *dx, *dg, *db;

    FILO_CHECK_FAILS(filo_layernorm_forward(NULL, NULL, g, b, EPS, &y, NULL, &m, &r), FILO_ERR_INVALID_ARG,
                     "filo_layernorm_forward: x is NULL");
    FILO_CHECK_FAILS(filo_layernorm_forward(xi, NULL, g, b, EPS, &y, NULL, &m, &r), FILO_ERR_DTYPE, "i32[4, 7]");
    FILO_CHECK_FAILS(filo_layernorm_forward(x0, NULL, g, b, EPS, &y, NULL, &m, &r), FILO_ERR_SHAPE, "at least one dim");
    FILO_CHECK_FAILS(filo_layernorm_forward(xe, NULL, g, b, EPS, &y, NULL, &m, &r), FILO_ERR_SHAPE, "f32[4, 0]");
    FILO_CHECK_FAILS(filo_layernorm_forward(x, NULL, g8, b, EPS, &y, NULL, &m, &r), FILO_ERR_SHAPE,
                     "gamma f32[8] cpu must have shape [7]");
    FILO_CHECK_FAILS(filo_layernorm_forward(x, NULL, g, g8, EPS, &y, NULL, &m, &r), FILO_ERR_SHAPE, "beta f32[8]");
    FILO_CHECK_FAILS(filo_layernorm_forward(x, NULL, g64, b, EPS, &y, NULL, &m, &r), FILO_ERR_DTYPE,
                     "gamma f64[7] cpu must have the dtype of f32[4, 7]");
    FILO_CHECK_FAILS(filo_layernorm_forward(xbf, NULL, gf16, NULL, EPS, &y, NULL, &m, &r), FILO_ERR_DTYPE, "or f32");
    FILO_CHECK_FAILS(filo_layernorm_forward(x, x48, g, b, EPS, &y, &h, &m, &r), FILO_ERR_SHAPE,
                     "residual f32[4, 8] cpu must have the shape of x f32[4, 7]");
    FILO_CHECK_FAILS(filo_layernorm_forward(x, x64, g, b, EPS, &y, &h, &m, &r), FILO_ERR_DTYPE,
                     "residual f64[4, 7] cpu must have the dtype of x");
    FILO_CHECK_FAILS(filo_layernorm_forward(x, x, g, b, EPS, &y, NULL, &m, &r), FILO_ERR_INVALID_ARG, "h_out is NULL");
    FILO_CHECK_FAILS(filo_layernorm_forward(x, NULL, g, b, -1.0, &y, NULL, &m, &r), FILO_ERR_INVALID_ARG, "eps");
    FILO_CHECK_FAILS(filo_layernorm_forward(x, NULL, g, b, NAN, &y, NULL, &m, &r), FILO_ERR_INVALID_ARG, "eps");
    FILO_CHECK_FAILS(filo_layernorm_forward(x, NULL, NULL, b, EPS, &y, NULL, &m, &r), FILO_ERR_INVALID_ARG,
                     "gamma is NULL");
    FILO_CHECK_FAILS(filo_layernorm_forward(x, NULL, g, b, EPS, &y, NULL, NULL, &r), FILO_ERR_INVALID_ARG,
                     "output pointer");
    FILO_CHECK_FAILS(filo_rmsnorm_forward(x, NULL, g8, EPS, &y, NULL, &r), FILO_ERR_SHAPE,
                     "filo_rmsnorm_forward: gamma f32[8]");
    FILO_CHECK_FAILS(filo_rmsnorm_forward(x, x48, g, EPS, &y, &h, &r), FILO_ERR_SHAPE, "residual f32[4, 8]");

    FILO_CHECK_FAILS(filo_layernorm_backward(x48, x, st4, st4, g, &dx, &dg, &db), FILO_ERR_SHAPE,
                     "filo_layernorm_backward: dy f32[4, 8] cpu must have the shape of h f32[4, 7]");
    FILO_CHECK_FAILS(filo_layernorm_backward(x64, x, st4, st4, g, &dx, &dg, &db), FILO_ERR_DTYPE, "dy f64[4, 7]");
    FILO_CHECK_FAILS(filo_layernorm_backward(x, x, st5, st4, g, &dx, &dg, &db), FILO_ERR_SHAPE,
                     "mean f32[5] cpu must have the leading shape of f32[4, 7]");
    FILO_CHECK_FAILS(filo_layernorm_backward(x, x, st4, st64, g, &dx, &dg, &db), FILO_ERR_DTYPE,
                     "rstd f64[4] cpu must be f32");
    FILO_CHECK_FAILS(filo_layernorm_backward(x, x, st4, st4, g8, &dx, &dg, &db), FILO_ERR_SHAPE, "gamma f32[8]");
    FILO_CHECK_FAILS(filo_layernorm_backward(x, x, NULL, st4, g, &dx, &dg, &db), FILO_ERR_INVALID_ARG, "mean is NULL");
    FILO_CHECK_FAILS(filo_layernorm_backward(x, x, st4, st4, g, NULL, &dg, &db), FILO_ERR_INVALID_ARG,
                     "output pointer");
    FILO_CHECK_FAILS(filo_rmsnorm_backward(x, x, st5, g, &dx, &dg), FILO_ERR_SHAPE,
                     "filo_rmsnorm_backward: rstd f32[5]");
    FILO_CHECK_FAILS(filo_rmsnorm_backward(x, xi, st4, g, &dx, &dg), FILO_ERR_DTYPE, "h must be f32, f64, bf16 or f16");

    if (filo_cuda_device_count() > 0) {
        filo_tensor *gc;
        FILO_CHECK(filo_tensor_to(g, filo_cuda(0), &gc));
        FILO_CHECK_FAILS(filo_layernorm_forward(x, NULL, gc, NULL, EPS, &y, NULL, &m, &r), FILO_ERR_DEVICE,
                         "gamma f32[7] cuda:0 is not on the device of f32[4, 7] cpu");
        FILO_CHECK_FAILS(filo_layernorm_backward(x, x, st4, st4, gc, &dx, &dg, &db), FILO_ERR_DEVICE, "cuda:0");
        filo_tensor_free(gc);
    }

    filo_tensor *all[] = {x, g, b, x48, g8, xi, x64, xbf, gf16, g64, x0, xe, st4, st5, st64};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}
