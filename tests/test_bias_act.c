/* Fused bias + GELU and bias + dropout + residual (include/filo/bias_act.h): forward and backward
 * parity on every backend against float64 references written here, the masks' equality with
 * filo_dropout's and between backends, the bitwise determinism of dbias, finite-difference
 * gradient checks in f64 on the CPU, empty inputs, and every bad-input error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/bias_act.h"
#include "parity.h"

typedef struct dtype_pair {
    filo_dtype x, bias;
} dtype_pair;

static const dtype_pair all_pairs[] = {
    {FILO_F32, FILO_F32}, {FILO_F64, FILO_F64}, {FILO_BF16, FILO_BF16},
    {FILO_BF16, FILO_F32}, {FILO_F16, FILO_F16}, {FILO_F16, FILO_F32},
};
static const int64_t odd_cols[] = {1, 7, 33, 129};

#define SEED 0xb1a5ULL
#define PI 3.14159265358979323846
#define OFFSET 29

/* ---- float64 references ---- */

static double ref_gelu(double h, int approximate)
{
    if (approximate)
        return 0.5 * h * (1.0 + tanh(sqrt(2.0 / PI) * (h + 0.044715 * h * h * h)));
    return 0.5 * h * erfc(-h / sqrt(2.0));
}

static double ref_gelu_grad(double h, int approximate)
{
    if (approximate) {
        double k = sqrt(2.0 / PI), t = tanh(k * (h + 0.044715 * h * h * h));
        return 0.5 * (1.0 + t) + 0.5 * h * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * h * h);
    }
    return 0.5 * erfc(-h / sqrt(2.0)) + h * exp(-0.5 * h * h) / sqrt(2.0 * PI);
}

/* The dropout rule, independently of runtime/element.h. */
static int ref_keep(uint64_t seed, uint64_t offset, double p, int64_t i)
{
    if (p == 0.0)
        return 1;
    if (p == 1.0)
        return 0;
    uint32_t r[4];
    filo_philox4x32(offset + (uint64_t)i / 4, 0, seed, r);
    return (double)r[i % 4] >= floor(p * 4294967296.0 + 0.5);
}

static double ref_scale(filo_dtype t, double p)
{
    if (p == 1.0)
        return 0.0;
    return t == FILO_F64 ? 1.0 / (1.0 - p) : (double)(1.0f / (1.0f - (float)p));
}

static void rows_cols(const parity_input *x, int64_t *rows, int64_t *cols)
{
    *cols = x->shape[x->ndim - 1];
    *rows = 1;
    for (int i = 0; i < x->ndim - 1; i++)
        *rows *= x->shape[i];
}

static parity_input input(filo_dtype t, int ndim, const int64_t *shape, double lo, double hi, int transpose)
{
    parity_input p = {.dtype = t, .ndim = ndim, .lo = lo, .hi = hi, .transpose_last = transpose};
    memcpy(p.shape, shape, sizeof(int64_t) * (size_t)ndim);
    return p;
}

/* Relative to the lowest precision dtype, and as much absolute: values are O(1) and GELU, dx and
 * residual + dropout can come out near zero. */
static void set_tol(parity_case *pc, filo_dtype t)
{
    pc->rtol = parity_default_rtol(t);
    pc->atol = pc->rtol;
}

/* ---- bias + GELU ---- */

typedef struct gelu_ctx {
    int approximate, bias, backward;
} gelu_ctx;

static filo_status run_gelu(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const gelu_ctx *c = ctx;
    if (c->backward)
        return filo_bias_gelu_backward(in[0], in[1], c->bias ? in[2] : NULL, c->approximate, &out[0],
                                       c->bias ? &out[1] : NULL);
    return filo_bias_gelu_forward(in[0], c->bias ? in[1] : NULL, c->approximate, &out[0]);
}

static void reference_gelu(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    const gelu_ctx *c = ctx;
    int k = c->backward;
    int64_t rows, C;
    rows_cols(&shapes[k], &rows, &C);
    const double *dy = c->backward ? in[0] : NULL, *x = in[k], *b = c->bias ? in[k + 1] : NULL;
    if (c->backward && b)
        for (int64_t j = 0; j < C; j++)
            want[1][j] = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < C; j++) {
            int64_t i = r * C + j;
            double h = x[i] + (b ? b[j] : 0.0);
            if (!c->backward) {
                want[0][i] = ref_gelu(h, c->approximate);
                continue;
            }
            double v = dy[i] * ref_gelu_grad(h, c->approximate);
            want[0][i] = v;
            if (b)
                want[1][j] += v;
        }
}

static void gelu_case(int backward, int approximate, int bias, dtype_pair p, int ndim, const int64_t *shape,
                      int transpose)
{
    gelu_ctx ctx = {approximate, bias, backward};
    int64_t C = shape[ndim - 1];
    char name[160];
    snprintf(name, sizeof name, "bias_gelu %s %s %s/%s shape[-1]=%lld%s%s", backward ? "backward" : "forward",
             approximate ? "tanh" : "erf", filo_dtype_name(p.x), filo_dtype_name(p.bias), (long long)C,
             bias ? "" : " no-bias", transpose ? " transposed" : "");
    parity_case pc = {.name = name, .run = run_gelu, .reference = reference_gelu, .ctx = &ctx, .seed = 5};
    if (backward)
        pc.inputs[pc.n_inputs++] = input(p.x, ndim, shape, -1.0, 1.0, transpose);
    pc.inputs[pc.n_inputs++] = input(p.x, ndim, shape, -4.0, 3.0, transpose);
    if (bias)
        pc.inputs[pc.n_inputs++] = input(p.bias, 1, &C, -0.5, 0.5, 0);
    pc.n_outputs = 1 + (backward && bias);
    set_tol(&pc, p.x);
    parity_run(&pc);
}

static void gelu_sweep(dtype_pair p)
{
    for (size_t i = 0; i < sizeof odd_cols / sizeof odd_cols[0]; i++) {
        int64_t shape[3] = {3, 5, odd_cols[i]};
        for (int approx = 0; approx < 2; approx++) {
            gelu_case(0, approx, 1, p, 3, shape, 0);
            gelu_case(1, approx, 1, p, 3, shape, 0);
        }
    }
    int64_t shape[2] = {9, 33}, wide[2] = {40, 132}; /* 132: the vector path of the backward */
    for (int approx = 0; approx < 2; approx++) {
        gelu_case(0, approx, 0, p, 2, shape, 0);
        gelu_case(1, approx, 0, p, 2, shape, 0);
        gelu_case(0, approx, 1, p, 2, shape, 1);
        gelu_case(1, approx, 1, p, 2, shape, 1);
        gelu_case(1, approx, 1, p, 2, wide, 0);
    }
}

/* ---- bias + dropout + residual ---- */

typedef struct bdr_ctx {
    double p;
    int bias, residual;
    int backward, with_bias;
    filo_dropout_state state;
} bdr_ctx;

static filo_status run_bdr(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    bdr_ctx *c = ctx;
    if (c->backward)
        return filo_bias_dropout_residual_backward(in[0], &c->state, c->with_bias, &out[0],
                                                   c->with_bias ? &out[1] : NULL);
    filo_generator gen;
    filo_generator_init(&gen, SEED);
    gen.offset = OFFSET;
    filo_dropout_state s;
    int k = 1;
    const filo_tensor *bias = c->bias ? in[k++] : NULL, *res = c->residual ? in[k++] : NULL;
    filo_status st = filo_bias_dropout_residual_forward(in[0], bias, res, c->p, &gen, &out[0], &s);
    if (st != FILO_OK)
        return st;
    int64_t n = filo_tensor_numel(in[0]);
    cr_assert(s.seed == SEED && s.offset == OFFSET && s.p == c->p && s.numel == n, "state (%llu, %llu, %g, %lld)",
              (unsigned long long)s.seed, (unsigned long long)s.offset, s.p, (long long)s.numel);
    cr_assert_eq(gen.offset, c->p > 0 ? OFFSET + (uint64_t)(n + 3) / 4 : OFFSET);
    return FILO_OK;
}

static void reference_bdr(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    const bdr_ctx *c = ctx;
    int64_t rows, C;
    rows_cols(&shapes[0], &rows, &C);
    double scale = ref_scale(shapes[0].dtype, c->p);
    uint64_t seed = c->backward ? c->state.seed : SEED, offset = c->backward ? c->state.offset : OFFSET;
    int k = 1;
    const double *x = in[0], *b = !c->backward && c->bias ? in[k++] : NULL;
    const double *res = !c->backward && c->residual ? in[k++] : NULL;
    if (c->backward && c->with_bias)
        for (int64_t j = 0; j < C; j++)
            want[1][j] = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < C; j++) {
            int64_t i = r * C + j;
            double h = x[i] + (b ? b[j] : 0.0);
            double v = (ref_keep(seed, offset, c->p, i) ? h * scale : 0.0) + (res ? res[i] : 0.0);
            want[0][i] = v;
            if (c->backward && c->with_bias)
                want[1][j] += v;
        }
}

static void bdr_forward_case(double p, int bias, int residual, dtype_pair dp, int ndim, const int64_t *shape,
                             int transpose)
{
    bdr_ctx ctx = {.p = p, .bias = bias, .residual = residual};
    int64_t C = shape[ndim - 1];
    char name[160];
    snprintf(name, sizeof name, "bias_dropout_residual forward %s/%s p=%g shape[-1]=%lld%s%s%s", filo_dtype_name(dp.x),
             filo_dtype_name(dp.bias), p, (long long)C, bias ? " +bias" : "", residual ? " +residual" : "",
             transpose ? " transposed" : "");
    parity_case pc = {.name = name, .run = run_bdr, .reference = reference_bdr, .ctx = &ctx, .seed = 9, .n_outputs = 1};
    pc.inputs[pc.n_inputs++] = input(dp.x, ndim, shape, -2.0, 2.0, transpose);
    if (bias)
        pc.inputs[pc.n_inputs++] = input(dp.bias, 1, &C, -0.5, 0.5, 0);
    if (residual)
        pc.inputs[pc.n_inputs++] = input(dp.x, ndim, shape, -1.0, 1.0, transpose);
    set_tol(&pc, dp.x);
    parity_run(&pc);
}

static void bdr_backward_case(double p, int with_bias, filo_dtype t, int ndim, const int64_t *shape, int transpose)
{
    parity_input x = input(t, ndim, shape, -1.0, 1.0, transpose);
    int64_t rows, C;
    rows_cols(&x, &rows, &C);
    bdr_ctx ctx = {.p = p, .backward = 1, .with_bias = with_bias, .state = {0x1234567890ULL, 3, p, rows * C}};
    char name[160];
    snprintf(name, sizeof name, "bias_dropout_residual backward %s p=%g shape[-1]=%lld with_bias=%d%s",
             filo_dtype_name(t), p, (long long)C, with_bias, transpose ? " transposed" : "");
    parity_case pc = {.name = name, .run = run_bdr, .reference = reference_bdr, .ctx = &ctx, .seed = 13};
    pc.inputs[pc.n_inputs++] = x;
    pc.n_outputs = 1 + (with_bias != 0);
    set_tol(&pc, t);
    parity_run(&pc);
}

static void bdr_sweep(dtype_pair dp)
{
    const double ps[] = {0.1, 0.5, 0.0, 1.0};
    int half = dp.bias != dp.x;
    for (size_t i = 0; i < sizeof odd_cols / sizeof odd_cols[0]; i++) {
        int64_t shape[3] = {3, 5, odd_cols[i]};
        for (int k = 0; k < 2; k++) {
            bdr_forward_case(ps[k], 1, 1, dp, 3, shape, 0);
            bdr_backward_case(ps[k], half ? 2 : 1, dp.x, 3, shape, 0);
        }
    }
    int64_t shape[2] = {9, 33}, wide[2] = {40, 132};
    for (int k = 0; k < 4; k++) {
        bdr_forward_case(ps[k], 1, 1, dp, 2, shape, 1);
        bdr_backward_case(ps[k], half ? 2 : 1, dp.x, 2, shape, 1);
        bdr_backward_case(ps[k], half ? 2 : 1, dp.x, 2, wide, 0);
    }
    bdr_forward_case(0.3, 0, 1, dp, 2, shape, 0);
    bdr_forward_case(0.3, 1, 0, dp, 2, shape, 0);
    bdr_forward_case(0.3, 0, 0, dp, 2, shape, 0);
    bdr_backward_case(0.3, 0, dp.x, 2, shape, 0);
    /* Several CPU chunks (of 32768 elements), each starting mid-row and off a 16-block Philox
     * draw; and over 64 x 256 columns, so that each of the (at most 64) dbias column chunks spans
     * more than one of the kernel's 256-column stretches of mask bits. */
    int64_t many[2] = {300, 257}, very_wide[2] = {2, 20001};
    bdr_forward_case(0.3, 1, 1, dp, 2, many, 0);
    bdr_backward_case(0.3, half ? 2 : 1, dp.x, 2, very_wide, 0);
}

#define SWEEP_TESTS(pair_index, suffix)                                                  \
    Test(bias_act, bias_gelu_##suffix) { gelu_sweep(all_pairs[pair_index]); }            \
    Test(bias_act, bias_dropout_residual_##suffix) { bdr_sweep(all_pairs[pair_index]); }

SWEEP_TESTS(0, f32)
SWEEP_TESTS(1, f64)
SWEEP_TESTS(2, bf16)
SWEEP_TESTS(3, bf16_f32_bias)
SWEEP_TESTS(4, f16)
SWEEP_TESTS(5, f16_f32_bias)

/* ---- masks: filo_dropout's, and the same bits on every backend ---- */

static void *raw(const filo_tensor *t)
{
    size_t bytes = filo_tensor_nbytes(t);
    void *buf = malloc(bytes + 1);
    FILO_CHECK(filo_tensor_to_host(t, buf, bytes));
    return buf;
}

/* Without bias and residual the fused op is filo_dropout, byte for byte; with them, its output
 * and dx are byte for byte the CPU's on every backend (same operations in the same order). */
Test(bias_act, dropout_masks_match_filo_dropout_and_cpu)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t shape[2] = {67, 129}, C = 129, n = 67 * 129;
    double *xv = malloc(sizeof(double) * (size_t)n), *rv = malloc(sizeof(double) * (size_t)n), bv[129];
    filo_test_fill_random(xv, n, 1, -2, 2);
    filo_test_fill_random(rv, n, 2, -1, 1);
    filo_test_fill_random(bv, C, 3, -0.5, 0.5);
    for (size_t d = 0; d < 6; d++) {
        dtype_pair dp = all_pairs[d];
        void *want_y = NULL, *want_dx = NULL;
        for (int b = 0; b < nb; b++) {
            filo_tensor *x = filo_test_upload(devs[b], dp.x, 2, shape, xv), *res = filo_test_upload(devs[b], dp.x, 2, shape, rv);
            filo_tensor *bias = filo_test_upload(devs[b], dp.bias, 1, &C, bv), *y0, *yd, *y, *dx, *db;
            filo_generator g1, g2, g3;
            filo_generator_init(&g1, 42);
            g1.offset = 100;
            g2 = g1;
            g3 = g1;
            filo_dropout_state s1, s2, s3;
            FILO_CHECK(filo_bias_dropout_residual_forward(x, NULL, NULL, 0.4, &g1, &y0, &s1));
            FILO_CHECK(filo_dropout(x, 0.4, &g2, &yd, &s2));
            cr_assert(memcmp(&s1, &s2, sizeof s1) == 0 && g1.offset == g2.offset);
            void *a = raw(y0), *c = raw(yd);
            cr_assert(memcmp(a, c, filo_tensor_nbytes(y0)) == 0, "%s on %s: bias_dropout_residual without bias and residual differs from filo_dropout",
                      filo_dtype_name(dp.x), filo_test_backend_name(devs[b]));
            free(a);
            free(c);
            FILO_CHECK(filo_bias_dropout_residual_forward(x, bias, res, 0.4, &g3, &y, &s3));
            FILO_CHECK(filo_bias_dropout_residual_backward(x, &s3, dp.bias == dp.x ? 1 : 2, &dx, &db));
            void *gy = raw(y), *gdx = raw(dx);
            if (b == 0) {
                want_y = gy;
                want_dx = gdx;
                /* dx is the forward's transform of dy alone: the dropout backward's bytes. */
                filo_tensor *dd;
                FILO_CHECK(filo_dropout_backward(x, &s3, &dd));
                void *e = raw(dd);
                cr_assert(memcmp(e, gdx, filo_tensor_nbytes(dd)) == 0);
                free(e);
                filo_tensor_free(dd);
            } else {
                cr_assert(memcmp(gy, want_y, filo_tensor_nbytes(y)) == 0, "%s/%s on %s: forward bytes differ from the cpu's",
                          filo_dtype_name(dp.x), filo_dtype_name(dp.bias), filo_test_backend_name(devs[b]));
                cr_assert(memcmp(gdx, want_dx, filo_tensor_nbytes(dx)) == 0, "%s on %s: dx bytes differ from the cpu's",
                          filo_dtype_name(dp.x), filo_test_backend_name(devs[b]));
                free(gy);
                free(gdx);
            }
            filo_tensor *all[] = {x, res, bias, y0, yd, y, dx, db};
            for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
                filo_tensor_free(all[i]);
        }
        free(want_y);
        free(want_dx);
    }
    free(xv);
    free(rv);
}

/* ---- determinism of dbias ---- */

Test(bias_act, dbias_bitwise_deterministic)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    /* More rows than chunks * chunk rows: chunks hold several row lanes' worth each. */
    const int64_t shape[2] = {4200, 33}, C = 33, n = 4200 * 33;
    double *xv = malloc(sizeof(double) * (size_t)n), *gv = malloc(sizeof(double) * (size_t)n), bv[33];
    filo_test_fill_random(xv, n, 4, -3, 3);
    filo_test_fill_random(gv, n, 5, -1, 1);
    filo_test_fill_random(bv, C, 6, -0.5, 0.5);
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 2, shape, xv), *dy = filo_test_upload(devs[b], FILO_F32, 2, shape, gv);
        filo_tensor *bias = filo_test_upload(devs[b], FILO_F32, 1, &C, bv);
        uint32_t first[2][33], again[2][33];
        filo_dropout_state s = {7, 11, 0.25, n};
        for (int run = 0; run < 2; run++) {
            filo_tensor *dx, *db, *dx2, *db2;
            FILO_CHECK(filo_bias_gelu_backward(dy, x, bias, 0, &dx, &db));
            FILO_CHECK(filo_bias_dropout_residual_backward(dy, &s, 1, &dx2, &db2));
            uint32_t(*dst)[33] = run == 0 ? first : again;
            FILO_CHECK(filo_tensor_to_host(db, dst[0], sizeof dst[0]));
            FILO_CHECK(filo_tensor_to_host(db2, dst[1], sizeof dst[1]));
            filo_tensor_free(dx);
            filo_tensor_free(db);
            filo_tensor_free(dx2);
            filo_tensor_free(db2);
        }
        cr_assert(memcmp(first, again, sizeof first) == 0, "dbias differs between runs on %s",
                  filo_test_backend_name(devs[b]));
        filo_tensor_free(x);
        filo_tensor_free(dy);
        filo_tensor_free(bias);
    }
    free(xv);
    free(gv);
}

/* ---- empty inputs: empty outputs, zero dbias ---- */

Test(bias_act, empty_inputs)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        int64_t shape[2] = {0, 7}, c7 = 7;
        double got[7];
        filo_tensor *x, *bias, *y, *dx, *db, *y2, *dx2, *db2;
        FILO_CHECK(filo_tensor_empty(devs[b], FILO_F32, 2, shape, &x));
        FILO_CHECK(filo_tensor_full(devs[b], FILO_F32, 1, &c7, 1.0, &bias));
        FILO_CHECK(filo_bias_gelu_forward(x, bias, 1, &y));
        FILO_CHECK(filo_bias_gelu_backward(x, x, bias, 1, &dx, &db));
        FILO_CHECK(filo_tensor_to_host_as(db, FILO_F64, got, sizeof got));
        for (int j = 0; j < 7; j++)
            cr_assert_eq(got[j], 0.0, "dbias[%d] on %s is %g", j, filo_test_backend_name(devs[b]), got[j]);
        filo_generator gen;
        filo_generator_init(&gen, 3);
        filo_dropout_state s;
        FILO_CHECK(filo_bias_dropout_residual_forward(x, bias, x, 0.5, &gen, &y2, &s));
        cr_assert_eq(filo_tensor_numel(y2), 0);
        FILO_CHECK(filo_bias_dropout_residual_backward(x, &s, 1, &dx2, &db2));
        FILO_CHECK(filo_tensor_to_host_as(db2, FILO_F64, got, sizeof got));
        for (int j = 0; j < 7; j++)
            cr_assert_eq(got[j], 0.0);
        filo_tensor *all[] = {x, bias, y, dx, db, y2, dx2, db2};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            filo_tensor_free(all[i]);
    }
}

/* ---- finite differences (f64, CPU) ---- */

enum { FD_X, FD_BIAS, FD_RES, FD_COUNT };
static const char *const fd_names[FD_COUNT] = {"x", "bias", "residual"};

/* sum(y * w): kind 0/1 bias_gelu (erf/tanh), kind 2 bias_dropout_residual with p and the mask of
 * a generator reset to the same (seed, offset) every time. */
static double fd_loss(int kind, double p, const int64_t *shape, double *const *v, const double *w)
{
    int64_t C = shape[1], n = shape[0] * shape[1];
    filo_device d = filo_cpu();
    filo_tensor *x = filo_test_upload(d, FILO_F64, 2, shape, v[FD_X]), *b = filo_test_upload(d, FILO_F64, 1, &C, v[FD_BIAS]);
    filo_tensor *r = filo_test_upload(d, FILO_F64, 2, shape, v[FD_RES]), *y;
    if (kind < 2) {
        FILO_CHECK(filo_bias_gelu_forward(x, b, kind, &y));
    } else {
        filo_generator gen;
        filo_generator_init(&gen, 123);
        filo_dropout_state s;
        FILO_CHECK(filo_bias_dropout_residual_forward(x, b, r, p, &gen, &y, &s));
    }
    double *yv = filo_test_download(y), l = 0;
    for (int64_t i = 0; i < n; i++)
        l += yv[i] * w[i];
    free(yv);
    filo_tensor *all[] = {x, b, r, y};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
    return l;
}

static void fd_check(int kind, double p)
{
    const int64_t shape[2] = {3, 7}, C = 7, n = 21;
    double *v[FD_COUNT], w[21];
    int64_t len[FD_COUNT] = {n, C, n};
    for (int k = 0; k < FD_COUNT; k++) {
        v[k] = malloc(sizeof(double) * (size_t)len[k]);
        filo_test_fill_random(v[k], len[k], 50 + (uint64_t)k, -2.0, 2.0);
    }
    filo_test_fill_random(w, n, 49, -1.0, 1.0);
    filo_device d = filo_cpu();
    filo_tensor *x = filo_test_upload(d, FILO_F64, 2, shape, v[FD_X]), *b = filo_test_upload(d, FILO_F64, 1, &C, v[FD_BIAS]);
    filo_tensor *r = filo_test_upload(d, FILO_F64, 2, shape, v[FD_RES]), *dy = filo_test_upload(d, FILO_F64, 2, shape, w);
    filo_tensor *y = NULL, *dx, *db;
    double *analytic[FD_COUNT];
    if (kind < 2) {
        FILO_CHECK(filo_bias_gelu_backward(dy, x, b, kind, &dx, &db));
        analytic[FD_RES] = NULL;
    } else {
        filo_generator gen;
        filo_generator_init(&gen, 123);
        filo_dropout_state s;
        FILO_CHECK(filo_bias_dropout_residual_forward(x, b, r, p, &gen, &y, &s));
        FILO_CHECK(filo_bias_dropout_residual_backward(dy, &s, 1, &dx, &db));
        analytic[FD_RES] = w; /* d(residual) = dy */
    }
    analytic[FD_X] = filo_test_download(dx);
    analytic[FD_BIAS] = filo_test_download(db);
    const double step = 1e-6;
    for (int k = 0; k < FD_COUNT; k++) {
        if (k == FD_RES && kind < 2)
            continue;
        for (int64_t i = 0; i < len[k]; i++) {
            double keep = v[k][i];
            v[k][i] = keep + step;
            double lp = fd_loss(kind, p, shape, v, w);
            v[k][i] = keep - step;
            double lm = fd_loss(kind, p, shape, v, w);
            v[k][i] = keep;
            double numeric = (lp - lm) / (2 * step), a = analytic[k][i];
            cr_assert(fabs(numeric - a) <= 1e-6 + 1e-6 * fabs(a), "%s p=%g: d/d%s[%lld] analytic %.10g, finite difference %.10g",
                      kind == 0 ? "bias_gelu erf" : kind == 1 ? "bias_gelu tanh" : "bias_dropout_residual", p,
                      fd_names[k], (long long)i, a, numeric);
        }
    }
    free(analytic[FD_X]);
    free(analytic[FD_BIAS]);
    for (int k = 0; k < FD_COUNT; k++)
        free(v[k]);
    filo_tensor *all[] = {x, b, r, dy, y, dx, db};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}

Test(bias_act, finite_difference_gradients)
{
    fd_check(0, 0.0);
    fd_check(1, 0.0);
    fd_check(2, 0.0);
    fd_check(2, 0.35);
    fd_check(2, 1.0);
}

/* ---- bad inputs ---- */

static filo_tensor *cpu_tensor(filo_dtype t, int ndim, const int64_t *shape)
{
    filo_tensor *r;
    FILO_CHECK(filo_tensor_full(filo_cpu(), t, ndim, shape, 1.0, &r));
    return r;
}

Test(bias_act, bad_inputs)
{
    int64_t s47[2] = {4, 7}, s48[2] = {4, 8}, c7[1] = {7}, c8[1] = {8}, s77[2] = {7, 7};
    filo_tensor *x = cpu_tensor(FILO_F32, 2, s47), *b = cpu_tensor(FILO_F32, 1, c7), *b8 = cpu_tensor(FILO_F32, 1, c8);
    filo_tensor *x48 = cpu_tensor(FILO_F32, 2, s48), *xi = cpu_tensor(FILO_I32, 2, s47), *x64 = cpu_tensor(FILO_F64, 2, s47);
    filo_tensor *xbf = cpu_tensor(FILO_BF16, 2, s47), *bf16b = cpu_tensor(FILO_F16, 1, c7), *b64 = cpu_tensor(FILO_F64, 1, c7);
    filo_tensor *b2d = cpu_tensor(FILO_F32, 2, s77), *x0 = cpu_tensor(FILO_F32, 0, NULL);
    filo_tensor *y, *dx, *db;
    filo_generator gen;
    filo_generator_init(&gen, 1);
    filo_dropout_state s;

    FILO_CHECK_FAILS(filo_bias_gelu_forward(NULL, b, 0, &y), FILO_ERR_INVALID_ARG, "filo_bias_gelu_forward: x is NULL");
    FILO_CHECK_FAILS(filo_bias_gelu_forward(xi, b, 0, &y), FILO_ERR_DTYPE, "x must be f32, f64, bf16 or f16, got i32[4, 7]");
    FILO_CHECK_FAILS(filo_bias_gelu_forward(x, b8, 0, &y), FILO_ERR_SHAPE,
                     "bias f32[8] cpu must have shape [7] (the last dim of x f32[4, 7] cpu)");
    FILO_CHECK_FAILS(filo_bias_gelu_forward(x, b2d, 0, &y), FILO_ERR_SHAPE, "bias f32[7, 7] cpu must have shape [7]");
    FILO_CHECK_FAILS(filo_bias_gelu_forward(x0, b, 0, &y), FILO_ERR_SHAPE, "has no last dim");
    FILO_CHECK_FAILS(filo_bias_gelu_forward(x, b64, 0, &y), FILO_ERR_DTYPE, "bias f64[7] cpu must have the dtype of x f32[4, 7]");
    FILO_CHECK_FAILS(filo_bias_gelu_forward(xbf, bf16b, 0, &y), FILO_ERR_DTYPE, "or f32");
    FILO_CHECK_FAILS(filo_bias_gelu_forward(x, b, 2, &y), FILO_ERR_INVALID_ARG, "approximate must be 0 (erf) or 1 (tanh), got 2");
    FILO_CHECK_FAILS(filo_bias_gelu_forward(x, b, 0, NULL), FILO_ERR_INVALID_ARG, "y is NULL");

    FILO_CHECK_FAILS(filo_bias_gelu_backward(x48, x, b, 0, &dx, &db), FILO_ERR_SHAPE,
                     "filo_bias_gelu_backward: dy f32[4, 8] cpu must have the shape of x f32[4, 7]");
    FILO_CHECK_FAILS(filo_bias_gelu_backward(x64, x, b, 0, &dx, &db), FILO_ERR_DTYPE, "dy f64[4, 7] cpu must have the dtype of x");
    FILO_CHECK_FAILS(filo_bias_gelu_backward(NULL, x, b, 0, &dx, &db), FILO_ERR_INVALID_ARG, "dy is NULL");
    FILO_CHECK_FAILS(filo_bias_gelu_backward(x, x, b8, 0, &dx, &db), FILO_ERR_SHAPE, "bias f32[8]");
    FILO_CHECK_FAILS(filo_bias_gelu_backward(x, x, b, -1, &dx, &db), FILO_ERR_INVALID_ARG, "approximate");
    FILO_CHECK_FAILS(filo_bias_gelu_backward(x, x, b, 0, &dx, NULL), FILO_ERR_INVALID_ARG, "output pointer (dx, dbias)");
    FILO_CHECK_FAILS(filo_bias_gelu_backward(x, x, NULL, 0, NULL, NULL), FILO_ERR_INVALID_ARG, "output pointer (dx)");

    FILO_CHECK_FAILS(filo_bias_dropout_residual_forward(NULL, b, x, 0.1, &gen, &y, &s), FILO_ERR_INVALID_ARG,
                     "filo_bias_dropout_residual_forward: x is NULL");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_forward(x, b8, x, 0.1, &gen, &y, &s), FILO_ERR_SHAPE,
                     "bias f32[8] cpu must have shape [7]");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_forward(x, b, x48, 0.1, &gen, &y, &s), FILO_ERR_SHAPE,
                     "residual f32[4, 8] cpu must have the shape of x f32[4, 7]");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_forward(x, b, x64, 0.1, &gen, &y, &s), FILO_ERR_DTYPE,
                     "residual f64[4, 7] cpu must have the dtype of x");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_forward(x, b, x, -0.5, &gen, &y, &s), FILO_ERR_INVALID_ARG,
                     "p must be in [0, 1], got -0.5");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_forward(x, b, x, 1.01, &gen, &y, &s), FILO_ERR_INVALID_ARG,
                     "p must be in [0, 1], got 1.01");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_forward(x, b, x, NAN, &gen, &y, &s), FILO_ERR_INVALID_ARG, "p must be");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_forward(x, b, x, 0.1, NULL, &y, &s), FILO_ERR_INVALID_ARG,
                     "gen is NULL but p = 0.1 > 0");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_forward(x, b, x, 0.1, &gen, &y, NULL), FILO_ERR_INVALID_ARG,
                     "output pointer (y, state)");
    cr_assert_eq(gen.offset, 0, "a failed call advanced the generator");

    FILO_CHECK(filo_bias_dropout_residual_forward(x, b, x, 0.1, &gen, &y, &s));
    FILO_CHECK_FAILS(filo_bias_dropout_residual_backward(x48, &s, 1, &dx, &db), FILO_ERR_SHAPE,
                     "filo_bias_dropout_residual_backward: dy f32[4, 8] cpu has 32 elements but the forward's mask has 28");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_backward(xi, &s, 1, &dx, &db), FILO_ERR_DTYPE, "i32[4, 7]");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_backward(x, NULL, 1, &dx, &db), FILO_ERR_INVALID_ARG, "state is NULL");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_backward(x, &s, 3, &dx, &db), FILO_ERR_INVALID_ARG,
                     "with_bias must be 0, 1 or 2");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_backward(x64, &s, 2, &dx, &db), FILO_ERR_DTYPE,
                     "with_bias = 2 (an f32 dbias) needs a bf16, f16 or f32 dy, got f64[4, 7]");
    FILO_CHECK_FAILS(filo_bias_dropout_residual_backward(x, &s, 1, &dx, NULL), FILO_ERR_INVALID_ARG,
                     "output pointer (dx, dbias)");
    filo_dropout_state bad = s;
    bad.p = -1;
    FILO_CHECK_FAILS(filo_bias_dropout_residual_backward(x, &bad, 0, &dx, NULL), FILO_ERR_INVALID_ARG, "outside [0, 1]");
    filo_tensor_free(y);

    if (filo_cuda_device_count() > 0) {
        filo_tensor *bc;
        FILO_CHECK(filo_tensor_to(b, filo_cuda(0), &bc));
        FILO_CHECK_FAILS(filo_bias_gelu_forward(x, bc, 0, &y), FILO_ERR_DEVICE,
                         "bias f32[7] cuda:0 is not on the device of x f32[4, 7] cpu");
        FILO_CHECK_FAILS(filo_bias_dropout_residual_forward(x, bc, NULL, 0.1, &gen, &y, &s), FILO_ERR_DEVICE, "cuda:0");
        filo_tensor_free(bc);
    }

    filo_tensor *all[] = {x, b, b8, x48, xi, x64, xbf, bf16b, b64, b2d, x0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}

/* Contiguous views that start one row into their storage (33 elements: not 4-aligned) take the
 * kernels' scalar paths and give the bytes of the same call on fresh copies. */
Test(bias_act, unaligned_views)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t full[2] = {9, 33}, C = 33;
    double xv[9 * 33], gv[9 * 33], bv[33];
    filo_test_fill_random(xv, 9 * 33, 8, -2.0, 2.0);
    filo_test_fill_random(gv, 9 * 33, 9, -1.0, 1.0);
    filo_test_fill_random(bv, C, 10, -0.5, 0.5);
    for (int d = 0; d < 6; d++)
        for (int b = 0; b < nb; b++) {
            dtype_pair dp = all_pairs[d];
            filo_tensor *in[2], *view[2], *copy[2], *out[2][5];
            const double *src[2] = {xv, gv};
            for (int k = 0; k < 2; k++) {
                in[k] = filo_test_upload(devs[b], dp.x, 2, full, src[k]);
                FILO_CHECK(filo_tensor_slice(in[k], 0, 1, 9, 1, &view[k]));
                FILO_CHECK(filo_tensor_empty_like(view[k], &copy[k]));
                FILO_CHECK(filo_tensor_copy(copy[k], view[k]));
            }
            filo_tensor *bias = filo_test_upload(devs[b], dp.bias, 1, &C, bv);
            for (int k = 0; k < 2; k++) {
                filo_tensor *x = k ? copy[0] : view[0], *g = k ? copy[1] : view[1];
                filo_generator gen;
                filo_generator_init(&gen, 5);
                filo_dropout_state s;
                FILO_CHECK(filo_bias_gelu_forward(x, bias, 1, &out[k][0]));
                FILO_CHECK(filo_bias_gelu_backward(g, x, bias, 0, &out[k][1], &out[k][2]));
                FILO_CHECK(filo_bias_dropout_residual_forward(x, bias, g, 0.25, &gen, &out[k][3], &s));
                FILO_CHECK(filo_bias_dropout_residual_backward(g, &s, 0, &out[k][4], NULL));
            }
            for (int o = 0; o < 5; o++) {
                void *a = raw(out[0][o]), *c = raw(out[1][o]);
                cr_assert(memcmp(a, c, filo_tensor_nbytes(out[0][o])) == 0, "%s/%s on %s: output %d of the unaligned view differs",
                          filo_dtype_name(dp.x), filo_dtype_name(dp.bias), filo_test_backend_name(devs[b]), o);
                free(a);
                free(c);
                filo_tensor_free(out[0][o]);
                filo_tensor_free(out[1][o]);
            }
            for (int k = 0; k < 2; k++) {
                filo_tensor_free(in[k]);
                filo_tensor_free(view[k]);
                filo_tensor_free(copy[k]);
            }
            filo_tensor_free(bias);
        }
}
