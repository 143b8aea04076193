/* Dropout (include/filo/dropout.h): forward and backward parity on every backend against a
 * float64 reference that draws the mask itself (public Philox, round(p * 2^32) threshold), the
 * bitwise equality of the CPU and CUDA outputs (zero pattern and values), the keep fraction,
 * the generator's advance, p = 0 and p = 1, a finite-difference check in f64, and bad inputs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/dropout.h"
#include "parity.h"

static const filo_dtype all_dtypes[] = {FILO_F32, FILO_F64, FILO_BF16, FILO_F16};
static const int64_t odd_cols[] = {1, 7, 33, 129};

#define SEED 0x5eedULL
#define OFFSET 13 /* a generator that has already drawn: the state must record its offset */

typedef struct drop_ctx {
    double p;
    int backward;
    filo_dropout_state state; /* the backward's state; the forward fills it too for checking */
} drop_ctx;

/* The mask rule written independently of runtime/element.h: Philox block (offset + i / 4),
 * lane i % 4, kept when >= round(p * 2^32). */
static int ref_keep(uint64_t seed, uint64_t offset, double p, int64_t i)
{
    if (p == 0.0)
        return 1;
    if (p == 1.0)
        return 0;
    uint32_t r[4];
    filo_philox4x32(offset + (uint64_t)i / 4, 0, seed, r);
    double t = floor(p * 4294967296.0 + 0.5);
    return (double)r[i % 4] >= t;
}

static double ref_scale(filo_dtype t, double p)
{
    if (t == FILO_F64)
        return 1.0 / (1.0 - p);
    return (double)(1.0f / (1.0f - (float)p));
}

static int64_t numel(const parity_input *in)
{
    int64_t n = 1;
    for (int i = 0; i < in->ndim; i++)
        n *= in->shape[i];
    return n;
}

static filo_status run_drop(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    drop_ctx *c = ctx;
    if (c->backward)
        return filo_dropout_backward(in[0], &c->state, &out[0]);
    filo_generator gen;
    filo_generator_init(&gen, SEED);
    gen.offset = OFFSET;
    filo_dropout_state s;
    filo_status st = filo_dropout(in[0], c->p, &gen, &out[0], &s);
    if (st != FILO_OK)
        return st;
    int64_t n = filo_tensor_numel(in[0]);
    cr_assert_eq(s.seed, SEED);
    cr_assert_eq(s.offset, OFFSET);
    cr_assert_eq(s.p, c->p);
    cr_assert_eq(s.numel, n);
    cr_assert_eq(gen.offset, c->p > 0 ? OFFSET + (uint64_t)(n + 3) / 4 : OFFSET, "generator advanced to %llu",
                 (unsigned long long)gen.offset);
    return FILO_OK;
}

static void reference_drop(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    const drop_ctx *c = ctx;
    int64_t n = numel(&shapes[0]);
    uint64_t seed = c->backward ? c->state.seed : SEED, offset = c->backward ? c->state.offset : OFFSET;
    double scale = c->p < 1.0 ? ref_scale(shapes[0].dtype, c->p) : 0.0;
    for (int64_t i = 0; i < n; i++)
        want[0][i] = ref_keep(seed, offset, c->p, i) ? in[0][i] * scale : 0.0;
}

static void drop_case(int backward, filo_dtype t, double p, int ndim, const int64_t *shape, int transpose)
{
    drop_ctx ctx = {.p = p, .backward = backward, .state = {0xabcdef12345ULL, 77, p, 0}};
    char name[160];
    snprintf(name, sizeof name, "dropout %s %s p=%g C=%lld%s", backward ? "backward" : "forward", filo_dtype_name(t), p,
             (long long)shape[ndim - 1], transpose ? " transposed" : "");
    parity_case pc = {.name = name, .run = run_drop, .reference = reference_drop, .ctx = &ctx, .seed = 3, .n_outputs = 1};
    parity_input x = {.dtype = t, .ndim = ndim, .lo = -2.0, .hi = 2.0, .transpose_last = transpose};
    memcpy(x.shape, shape, sizeof(int64_t) * (size_t)ndim);
    pc.inputs[pc.n_inputs++] = x;
    ctx.state.numel = numel(&x);
    parity_run(&pc);
}

static void sweep(filo_dtype t)
{
    const double ps[] = {0.1, 0.5, 0.0, 1.0};
    for (size_t i = 0; i < sizeof odd_cols / sizeof odd_cols[0]; i++) {
        int64_t shape[3] = {3, 5, odd_cols[i]};
        for (size_t k = 0; k < 2; k++) {
            drop_case(0, t, ps[k], 3, shape, 0);
            drop_case(1, t, ps[k], 3, shape, 0);
        }
    }
    int64_t shape[2] = {9, 33};
    for (size_t k = 0; k < 4; k++) {
        drop_case(0, t, ps[k], 2, shape, 1);
        drop_case(1, t, ps[k], 2, shape, 1);
    }
    int64_t one = 1, seven = 7;
    drop_case(0, t, 0.3, 1, &one, 0);
    drop_case(0, t, 0.3, 1, &seven, 0);
}

Test(dropout, parity_f32) { sweep(FILO_F32); }
Test(dropout, parity_f64) { sweep(FILO_F64); }
Test(dropout, parity_bf16) { sweep(FILO_BF16); }
Test(dropout, parity_f16) { sweep(FILO_F16); }

/* ---- the same bits on every backend ---- */

static void *raw(const filo_tensor *t)
{
    size_t bytes = filo_tensor_nbytes(t);
    void *buf = malloc(bytes + 1);
    FILO_CHECK(filo_tensor_to_host(t, buf, bytes));
    return buf;
}

static int is_zero(const void *base, filo_dtype t, int64_t i)
{
    switch (t) {
    case FILO_F64: return ((const double *)base)[i] == 0.0;
    case FILO_F32: return ((const float *)base)[i] == 0.0f;
    default: return (((const uint16_t *)base)[i] & 0x7fffu) == 0;
    }
}

/* Forward and backward on every backend from the same seed, offset and input: the outputs must be
 * byte-for-byte the CPU's. On the CPU run, the kept fraction must be within 5 sigma of 1 - p. */
Test(dropout, same_mask_bitwise_on_every_backend)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    /* An odd row length and an odd count: vector and scalar paths and a partial last group. */
    const int64_t shape[2] = {131, 127}, n = 131 * 127;
    double *xv = malloc(sizeof(double) * (size_t)n);
    filo_test_fill_random(xv, n, 21, -3.0, 3.0);
    const double ps[] = {0.1, 0.3, 0.9};
    for (size_t d = 0; d < 4; d++)
        for (size_t k = 0; k < 3; k++) {
            filo_dtype t = all_dtypes[d];
            void *want_y = NULL, *want_dx = NULL;
            for (int b = 0; b < nb; b++) {
                filo_generator gen;
                filo_generator_init(&gen, 1000 + k);
                gen.offset = 5;
                filo_tensor *x = filo_test_upload(devs[b], t, 2, shape, xv), *y, *dx;
                filo_dropout_state s;
                FILO_CHECK(filo_dropout(x, ps[k], &gen, &y, &s));
                FILO_CHECK(filo_dropout_backward(x, &s, &dx));
                void *gy = raw(y), *gdx = raw(dx);
                size_t bytes = filo_tensor_nbytes(y);
                if (b == 0) {
                    want_y = gy;
                    want_dx = gdx;
                    int64_t kept = 0;
                    for (int64_t i = 0; i < n; i++)
                        kept += !is_zero(gy, t, i);
                    double frac = (double)kept / (double)n, sigma = sqrt(ps[k] * (1 - ps[k]) / (double)n);
                    cr_assert(fabs(frac - (1 - ps[k])) < 5 * sigma, "%s p=%g: kept fraction %.5f, want %.5f +- %.5f",
                              filo_dtype_name(t), ps[k], frac, 1 - ps[k], 5 * sigma);
                    /* The forward applied to x and the backward applied to dy = x are one transform. */
                    cr_assert(memcmp(gy, gdx, bytes) == 0, "%s p=%g: backward(x) differs from forward(x)",
                              filo_dtype_name(t), ps[k]);
                } else {
                    for (int64_t i = 0; i < n; i++)
                        cr_assert_eq(is_zero(gy, t, i), is_zero(want_y, t, i),
                                     "%s p=%g on %s: element %lld is %s, on the cpu %s", filo_dtype_name(t), ps[k],
                                     filo_test_backend_name(devs[b]), (long long)i, is_zero(gy, t, i) ? "dropped" : "kept",
                                     is_zero(want_y, t, i) ? "dropped" : "kept");
                    cr_assert(memcmp(gy, want_y, bytes) == 0, "%s p=%g on %s: forward values differ from the cpu's",
                              filo_dtype_name(t), ps[k], filo_test_backend_name(devs[b]));
                    cr_assert(memcmp(gdx, want_dx, bytes) == 0, "%s p=%g on %s: backward values differ from the cpu's",
                              filo_dtype_name(t), ps[k], filo_test_backend_name(devs[b]));
                    free(gy);
                    free(gdx);
                }
                filo_tensor_free(x);
                filo_tensor_free(y);
                filo_tensor_free(dx);
            }
            free(want_y);
            free(want_dx);
        }
    cr_log_info("dropout masks compared on %d backend(s)", nb);
    free(xv);
}

/* Calls in sequence draw fresh masks; p == 0 is an exact copy that needs no generator. */
Test(dropout, generator_sequence_and_edge_p)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t shape[2] = {8, 33}, n = 8 * 33;
    double xv[8 * 33];
    filo_test_fill_random(xv, n, 5, 1.0, 2.0);
    for (int b = 0; b < nb; b++) {
        filo_generator gen;
        filo_generator_init(&gen, 9);
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 2, shape, xv), *y1, *y2, *y0, *yall;
        filo_dropout_state s1, s2, s0, sall;
        FILO_CHECK(filo_dropout(x, 0.5, &gen, &y1, &s1));
        FILO_CHECK(filo_dropout(x, 0.5, &gen, &y2, &s2));
        cr_assert_eq(s2.offset, s1.offset + (uint64_t)(n + 3) / 4);
        double *a = filo_test_download(y1), *c = filo_test_download(y2);
        int differ = 0;
        for (int64_t i = 0; i < n; i++)
            differ += (a[i] == 0) != (c[i] == 0);
        cr_assert(differ > 0, "two calls on %s drew the same mask", filo_test_backend_name(devs[b]));
        FILO_CHECK(filo_dropout(x, 0.0, NULL, &y0, &s0));
        double *z = filo_test_download(y0);
        for (int64_t i = 0; i < n; i++)
            cr_assert_eq(z[i], (double)(float)xv[i], "p = 0 is not a copy at %lld", (long long)i);
        uint64_t before = gen.offset;
        FILO_CHECK(filo_dropout(x, 1.0, &gen, &yall, &sall));
        cr_assert_eq(gen.offset, before + (uint64_t)(n + 3) / 4);
        double *w = filo_test_download(yall);
        for (int64_t i = 0; i < n; i++)
            cr_assert_eq(w[i], 0.0);
        free(a);
        free(c);
        free(z);
        free(w);
        filo_tensor *all[] = {x, y1, y2, y0, yall};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            filo_tensor_free(all[i]);
    }
}

Test(dropout, empty_tensor)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++) {
        int64_t shape[2] = {0, 7};
        filo_tensor *x, *y, *dx;
        filo_generator gen;
        filo_generator_init(&gen, 1);
        filo_dropout_state s;
        FILO_CHECK(filo_tensor_empty(devs[b], FILO_BF16, 2, shape, &x));
        FILO_CHECK(filo_dropout(x, 0.5, &gen, &y, &s));
        cr_assert_eq(filo_tensor_numel(y), 0);
        cr_assert_eq(y->ndim, 2);
        cr_assert_eq(gen.offset, 0);
        FILO_CHECK(filo_dropout_backward(x, &s, &dx));
        cr_assert_eq(filo_tensor_numel(dx), 0);
        filo_tensor_free(x);
        filo_tensor_free(y);
        filo_tensor_free(dx);
    }
}

/* ---- finite differences (f64, CPU): the mask is fixed by resetting the generator ---- */

static double drop_loss(const int64_t *shape, const double *xv, const double *w, int64_t n, double p)
{
    filo_generator gen;
    filo_generator_init(&gen, 77);
    filo_tensor *x = filo_test_upload(filo_cpu(), FILO_F64, 2, shape, xv), *y;
    filo_dropout_state s;
    FILO_CHECK(filo_dropout(x, p, &gen, &y, &s));
    double *yv = filo_test_download(y), l = 0;
    for (int64_t i = 0; i < n; i++)
        l += yv[i] * w[i];
    free(yv);
    filo_tensor_free(x);
    filo_tensor_free(y);
    return l;
}

Test(dropout, finite_difference_gradient)
{
    const int64_t shape[2] = {3, 7}, n = 21;
    double xv[21], w[21];
    filo_test_fill_random(xv, n, 1, -1.5, 1.5);
    filo_test_fill_random(w, n, 2, -1.0, 1.0);
    const double ps[] = {0.0, 0.4, 1.0};
    for (int k = 0; k < 3; k++) {
        filo_generator gen;
        filo_generator_init(&gen, 77);
        filo_tensor *x = filo_test_upload(filo_cpu(), FILO_F64, 2, shape, xv), *y, *dy = filo_test_upload(filo_cpu(), FILO_F64, 2, shape, w), *dx;
        filo_dropout_state s;
        FILO_CHECK(filo_dropout(x, ps[k], &gen, &y, &s));
        FILO_CHECK(filo_dropout_backward(dy, &s, &dx));
        double *a = filo_test_download(dx);
        const double step = 1e-6;
        for (int64_t i = 0; i < n; i++) {
            double keep = xv[i];
            xv[i] = keep + step;
            double lp = drop_loss(shape, xv, w, n, ps[k]);
            xv[i] = keep - step;
            double lm = drop_loss(shape, xv, w, n, ps[k]);
            xv[i] = keep;
            double numeric = (lp - lm) / (2 * step);
            cr_assert(fabs(numeric - a[i]) <= 1e-7 + 1e-7 * fabs(a[i]), "p=%g: d/dx[%lld] analytic %.10g, finite difference %.10g",
                      ps[k], (long long)i, a[i], numeric);
        }
        free(a);
        filo_tensor_free(x);
        filo_tensor_free(y);
        filo_tensor_free(dy);
        filo_tensor_free(dx);
    }
}

/* ---- bad inputs ---- */

Test(dropout, bad_inputs)
{
    int64_t s47[2] = {4, 7}, s48[2] = {4, 8};
    filo_tensor *x, *xi, *x48, *y, *dx;
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_F32, 2, s47, 1.0, &x));
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_I32, 2, s47, 1.0, &xi));
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_F32, 2, s48, 1.0, &x48));
    filo_generator gen;
    filo_generator_init(&gen, 1);
    filo_dropout_state s;
    FILO_CHECK_FAILS(filo_dropout(NULL, 0.5, &gen, &y, &s), FILO_ERR_INVALID_ARG, "filo_dropout: x is NULL");
    FILO_CHECK_FAILS(filo_dropout(xi, 0.5, &gen, &y, &s), FILO_ERR_DTYPE, "x must be f32, f64, bf16 or f16, got i32[4, 7]");
    FILO_CHECK_FAILS(filo_dropout(x, -0.1, &gen, &y, &s), FILO_ERR_INVALID_ARG, "p must be in [0, 1], got -0.1");
    FILO_CHECK_FAILS(filo_dropout(x, 1.5, &gen, &y, &s), FILO_ERR_INVALID_ARG, "p must be in [0, 1], got 1.5");
    FILO_CHECK_FAILS(filo_dropout(x, NAN, &gen, &y, &s), FILO_ERR_INVALID_ARG, "p must be in [0, 1]");
    FILO_CHECK_FAILS(filo_dropout(x, 0.5, NULL, &y, &s), FILO_ERR_INVALID_ARG, "gen is NULL");
    FILO_CHECK_FAILS(filo_dropout(x, 1.0, NULL, &y, &s), FILO_ERR_INVALID_ARG, "gen is NULL");
    FILO_CHECK_FAILS(filo_dropout(x, 0.5, &gen, NULL, &s), FILO_ERR_INVALID_ARG, "output pointer");
    FILO_CHECK_FAILS(filo_dropout(x, 0.5, &gen, &y, NULL), FILO_ERR_INVALID_ARG, "output pointer");
    cr_assert_eq(gen.offset, 0, "a failed call advanced the generator");

    FILO_CHECK(filo_dropout(x, 0.5, &gen, &y, &s));
    FILO_CHECK_FAILS(filo_dropout_backward(x48, &s, &dx), FILO_ERR_SHAPE,
                     "filo_dropout_backward: dy f32[4, 8] cpu has 32 elements but the forward's mask has 28");
    FILO_CHECK_FAILS(filo_dropout_backward(NULL, &s, &dx), FILO_ERR_INVALID_ARG, "dy is NULL");
    FILO_CHECK_FAILS(filo_dropout_backward(xi, &s, &dx), FILO_ERR_DTYPE, "i32[4, 7]");
    FILO_CHECK_FAILS(filo_dropout_backward(x, NULL, &dx), FILO_ERR_INVALID_ARG, "state is NULL");
    FILO_CHECK_FAILS(filo_dropout_backward(x, &s, NULL), FILO_ERR_INVALID_ARG, "dx is NULL");
    filo_dropout_state bad = s;
    bad.p = 2.0;
    FILO_CHECK_FAILS(filo_dropout_backward(x, &bad, &dx), FILO_ERR_INVALID_ARG, "outside [0, 1]");
    filo_tensor_free(y);
    filo_tensor_free(x);
    filo_tensor_free(xi);
    filo_tensor_free(x48);
}

/* A contiguous view that starts one row into its storage (33 elements: not 4-aligned) takes the
 * kernel's scalar path; the mask still follows the view's element index, so the result is the
 * bytes of dropout on a fresh copy of the same values, on every backend. */
Test(dropout, unaligned_view)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t full[2] = {9, 33}, n = 8 * 33;
    double xv[9 * 33];
    filo_test_fill_random(xv, 9 * 33, 8, -2.0, 2.0);
    for (int d = 0; d < 4; d++)
        for (int b = 0; b < nb; b++) {
            filo_dtype t = all_dtypes[d];
            filo_tensor *whole = filo_test_upload(devs[b], t, 2, full, xv), *view, *copy, *y1, *y2, *dx;
            FILO_CHECK(filo_tensor_slice(whole, 0, 1, 9, 1, &view));
            FILO_CHECK(filo_tensor_empty_like(view, &copy));
            FILO_CHECK(filo_tensor_copy(copy, view));
            filo_generator g1, g2;
            filo_generator_init(&g1, 31);
            g2 = g1;
            filo_dropout_state s1, s2;
            FILO_CHECK(filo_dropout(view, 0.3, &g1, &y1, &s1));
            FILO_CHECK(filo_dropout(copy, 0.3, &g2, &y2, &s2));
            FILO_CHECK(filo_dropout_backward(view, &s1, &dx));
            void *a = raw(y1), *c = raw(y2), *e = raw(dx);
            size_t bytes = (size_t)n * (t == FILO_F64 ? 8 : t == FILO_F32 ? 4 : 2);
            cr_assert(memcmp(a, c, bytes) == 0 && memcmp(a, e, bytes) == 0, "%s on %s: the unaligned view's dropout differs",
                      filo_dtype_name(t), filo_test_backend_name(devs[b]));
            free(a);
            free(c);
            free(e);
            filo_tensor *all[] = {whole, view, copy, y1, y2, dx};
            for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
                filo_tensor_free(all[i]);
        }
}
