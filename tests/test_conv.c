/* 2-D convolution (include/filo/conv.h): forward and backward parity on every backend against
 * float64 references written here, finite-difference gradient checks in f64, bitwise
 * determinism of the backward, an empty batch and every bad-input error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/conv.h"
#include "parity.h"

typedef struct conv_shape {
    int64_t N, C, H, W, K, R, S;
    filo_conv2d_params p;
} conv_shape;

/* Odd shapes: 1x1, 3x3, 5x5 and rectangular filters; strides 1-2 (dividing and not); pads
 * 0-2; dilation; groups 1, 2 and depthwise (with a channel multiplier too); 1-pixel inputs. */
static const conv_shape cases[] = {
    {2, 3, 7, 7, 5, 1, 1, {0, 0, 0, 0, 0, 0, 0}},
    {1, 3, 13, 13, 7, 3, 3, {1, 1, 1, 1, 1, 1, 1}},
    {3, 7, 13, 33, 3, 3, 3, {2, 2, 1, 1, 1, 1, 1}},
    {2, 3, 33, 7, 4, 5, 5, {2, 2, 2, 2, 1, 1, 1}},
    {1, 3, 7, 13, 2, 3, 3, {1, 1, 2, 2, 2, 2, 1}},
    {2, 6, 13, 7, 4, 3, 3, {2, 1, 1, 0, 1, 1, 2}},
    {2, 7, 13, 13, 7, 3, 3, {1, 1, 1, 1, 1, 1, 7}},
    {1, 7, 7, 13, 14, 5, 3, {2, 1, 2, 1, 1, 2, 7}},
    {3, 3, 1, 1, 5, 1, 1, {1, 1, 0, 0, 1, 1, 1}},
    {1, 3, 1, 7, 2, 1, 3, {1, 2, 0, 1, 1, 1, 1}},
    {2, 3, 33, 33, 3, 3, 5, {1, 2, 2, 0, 1, 2, 1}},
    {1, 1, 5, 5, 1, 5, 5, {0, 0, 0, 0, 0, 0, 0}},
    {2, 4, 7, 7, 6, 3, 3, {2, 2, 0, 0, 3, 1, 2}},
};
#define N_CASES (sizeof cases / sizeof cases[0])

typedef struct conv_ctx {
    conv_shape s;
    int64_t OH, OW, sh, sw, dh, dw, G;
    int bias;
} conv_ctx;

static void ctx_init(conv_ctx *c, const conv_shape *s, int bias)
{
    memset(c, 0, sizeof *c);
    c->s = *s;
    c->bias = bias;
    c->sh = s->p.stride_h ? s->p.stride_h : 1;
    c->sw = s->p.stride_w ? s->p.stride_w : 1;
    c->dh = s->p.dilation_h ? s->p.dilation_h : 1;
    c->dw = s->p.dilation_w ? s->p.dilation_w : 1;
    c->G = s->p.groups ? s->p.groups : 1;
    c->OH = (s->H + 2 * s->p.pad_h - c->dh * (s->R - 1) - 1) / c->sh + 1;
    c->OW = (s->W + 2 * s->p.pad_w - c->dw * (s->S - 1) - 1) / c->sw + 1;
}

/* Calls f(n, k, c (absolute), oh, ow, r, s, x index, w index, y index) for every product term. */
#define FOR_TERMS(cx, BODY)                                                                                    \
    do {                                                                                                       \
        const conv_shape *s_ = &(cx)->s;                                                                       \
        int64_t Cg_ = s_->C / (cx)->G, Kg_ = s_->K / (cx)->G;                                                  \
        for (int64_t n = 0; n < s_->N; n++)                                                                    \
            for (int64_t k = 0; k < s_->K; k++)                                                                \
                for (int64_t oh = 0; oh < (cx)->OH; oh++)                                                      \
                    for (int64_t ow = 0; ow < (cx)->OW; ow++)                                                  \
                        for (int64_t cc = 0; cc < Cg_; cc++)                                                   \
                            for (int64_t r = 0; r < s_->R; r++)                                                \
                                for (int64_t q = 0; q < s_->S; q++) {                                          \
                                    int64_t h = oh * (cx)->sh - s_->p.pad_h + r * (cx)->dh;                    \
                                    int64_t w = ow * (cx)->sw - s_->p.pad_w + q * (cx)->dw;                    \
                                    if (h < 0 || h >= s_->H || w < 0 || w >= s_->W)                            \
                                        continue;                                                              \
                                    int64_t ci = (k / Kg_) * Cg_ + cc;                                         \
                                    int64_t xi = ((n * s_->C + ci) * s_->H + h) * s_->W + w;                   \
                                    int64_t wi = ((k * Cg_ + cc) * s_->R + r) * s_->S + q;                     \
                                    int64_t yi = ((n * s_->K + k) * (cx)->OH + oh) * (cx)->OW + ow;            \
                                    BODY;                                                                      \
                                }                                                                              \
    } while (0)

static int64_t numel4(int64_t a, int64_t b, int64_t c, int64_t d) { return a * b * c * d; }

/* ---- forward ---- */

static filo_status run_forward(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const conv_ctx *c = ctx;
    return filo_conv2d_forward(in[0], in[1], c->bias ? in[2] : NULL, &c->s.p, &out[0]);
}

static void reference_forward(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    (void)shapes;
    const conv_ctx *c = ctx;
    const double *x = in[0], *wt = in[1], *b = c->bias ? in[2] : NULL;
    double *y = want[0];
    int64_t plane = c->OH * c->OW;
    for (int64_t i = 0; i < numel4(c->s.N, c->s.K, c->OH, c->OW); i++)
        y[i] = b ? b[(i / plane) % c->s.K] : 0.0;
    FOR_TERMS(c, y[yi] += x[xi] * wt[wi]);
}

/* ---- backward ---- */

static filo_status run_backward(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const conv_ctx *c = ctx;
    return filo_conv2d_backward(in[0], in[1], in[2], &c->s.p, &out[0], &out[1], &out[2]);
}

static void reference_backward(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    (void)shapes;
    const conv_ctx *c = ctx;
    const double *dy = in[0], *x = in[1], *wt = in[2];
    double *dx = want[0], *dw = want[1], *db = want[2];
    memset(dx, 0, sizeof(double) * (size_t)numel4(c->s.N, c->s.C, c->s.H, c->s.W));
    memset(dw, 0, sizeof(double) * (size_t)numel4(c->s.K, c->s.C / c->G, c->s.R, c->s.S));
    memset(db, 0, sizeof(double) * (size_t)c->s.K);
    FOR_TERMS(c, {
        dx[xi] += dy[yi] * wt[wi];
        dw[wi] += dy[yi] * x[xi];
    });
    int64_t plane = c->OH * c->OW;
    for (int64_t i = 0; i < numel4(c->s.N, c->s.K, c->OH, c->OW); i++)
        db[(i / plane) % c->s.K] += dy[i];
}

static parity_input input4(filo_dtype t, int64_t a, int64_t b, int64_t c, int64_t d, int transpose)
{
    parity_input p = {.dtype = t, .ndim = 4, .lo = -1.0, .hi = 1.0, .transpose_last = transpose,
                      .shape = {a, b, c, d}};
    return p;
}

/* Absolute tolerance: sums of n terms of magnitude <= 1 cancel; f32 accumulation leaves about
 * eps * sqrt(n) of error, which the relative tolerance alone does not cover near zero. */
static double atol_for(filo_dtype t, const conv_ctx *c)
{
    int64_t terms = (c->s.C / c->G) * c->s.R * c->s.S;
    int64_t t2 = (c->s.K / c->G) * c->s.R * c->s.S, t3 = c->s.N * c->OH * c->OW;
    terms = terms > t2 ? terms : t2;
    terms = terms > t3 ? terms : t3;
    return parity_default_rtol(t) * sqrt((double)terms);
}

static void conv_cases(const conv_shape *s, filo_dtype t, int bias, int transpose)
{
    conv_ctx c;
    ctx_init(&c, s, bias);
    char name[200];
    snprintf(name, sizeof name, "conv fwd %s x[%lld,%lld,%lld,%lld] w[%lld,%lld,%lld,%lld] g%lld%s%s",
             filo_dtype_name(t), (long long)s->N, (long long)s->C, (long long)s->H, (long long)s->W, (long long)s->K,
             (long long)(s->C / c.G), (long long)s->R, (long long)s->S, (long long)c.G, bias ? " +bias" : "",
             transpose ? " transposed" : "");
    parity_case pf = {.name = name, .run = run_forward, .reference = reference_forward, .ctx = &c, .seed = 21,
                      .n_outputs = 1, .rtol = parity_default_rtol(t), .atol = atol_for(t, &c)};
    pf.inputs[pf.n_inputs++] = input4(t, s->N, s->C, s->H, s->W, transpose);
    pf.inputs[pf.n_inputs++] = input4(t, s->K, s->C / c.G, s->R, s->S, transpose);
    if (bias) {
        pf.inputs[pf.n_inputs] = input4(t, s->K, 1, 1, 1, 0);
        pf.inputs[pf.n_inputs++].ndim = 1;
    }
    parity_run(&pf);

    snprintf(name, sizeof name, "conv bwd %s x[%lld,%lld,%lld,%lld] w[%lld,%lld,%lld,%lld] g%lld%s", filo_dtype_name(t),
             (long long)s->N, (long long)s->C, (long long)s->H, (long long)s->W, (long long)s->K,
             (long long)(s->C / c.G), (long long)s->R, (long long)s->S, (long long)c.G, transpose ? " transposed" : "");
    parity_case pb = {.name = name, .run = run_backward, .reference = reference_backward, .ctx = &c, .seed = 23,
                      .n_outputs = 3, .rtol = parity_default_rtol(t), .atol = atol_for(t, &c)};
    pb.inputs[pb.n_inputs++] = input4(t, s->N, s->K, c.OH, c.OW, transpose);
    pb.inputs[pb.n_inputs++] = input4(t, s->N, s->C, s->H, s->W, transpose);
    pb.inputs[pb.n_inputs++] = input4(t, s->K, s->C / c.G, s->R, s->S, 0);
    parity_run(&pb);
}

static void sweep(filo_dtype t)
{
    for (size_t i = 0; i < N_CASES; i++)
        conv_cases(&cases[i], t, (int)(i % 2 == 0), 0);
}

Test(conv, sweep_f32) { sweep(FILO_F32); }
Test(conv, sweep_f64) { sweep(FILO_F64); }
Test(conv, sweep_bf16) { sweep(FILO_BF16); }
Test(conv, sweep_f16) { sweep(FILO_F16); }

Test(conv, non_contiguous_inputs)
{
    conv_cases(&cases[2], FILO_F32, 1, 1);
    conv_cases(&cases[5], FILO_BF16, 1, 1);
    conv_cases(&cases[6], FILO_F64, 0, 1);
}

/* Only some gradients wanted; the others stay NULL. */
Test(conv, partial_backward)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    conv_ctx c;
    ctx_init(&c, &cases[5], 0);
    const conv_shape *s = &c.s;
    int64_t xs[4] = {s->N, s->C, s->H, s->W}, ws[4] = {s->K, s->C / c.G, s->R, s->S}, ys[4] = {s->N, s->K, c.OH, c.OW};
    int64_t nx = numel4(xs[0], xs[1], xs[2], xs[3]), nw = numel4(ws[0], ws[1], ws[2], ws[3]);
    int64_t ny = numel4(ys[0], ys[1], ys[2], ys[3]);
    double *xv = malloc(sizeof(double) * (size_t)nx), *wv = malloc(sizeof(double) * (size_t)nw);
    double *dyv = malloc(sizeof(double) * (size_t)ny);
    filo_test_fill_random(xv, nx, 1, -1, 1);
    filo_test_fill_random(wv, nw, 2, -1, 1);
    filo_test_fill_random(dyv, ny, 3, -1, 1);
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F64, 4, xs, xv), *w = filo_test_upload(devs[b], FILO_F64, 4, ws, wv);
        filo_tensor *dy = filo_test_upload(devs[b], FILO_F64, 4, ys, dyv);
        filo_tensor *all_dx, *all_dw, *all_db, *dx = NULL, *dw = NULL, *db = NULL;
        FILO_CHECK(filo_conv2d_backward(dy, x, w, &s->p, &all_dx, &all_dw, &all_db));
        FILO_CHECK(filo_conv2d_backward(dy, x, w, &s->p, &dx, NULL, NULL));
        FILO_CHECK(filo_conv2d_backward(dy, x, w, &s->p, NULL, &dw, NULL));
        FILO_CHECK(filo_conv2d_backward(dy, x, w, &s->p, NULL, NULL, &db));
        filo_tensor *pairs[3][2] = {{all_dx, dx}, {all_dw, dw}, {all_db, db}};
        for (int i = 0; i < 3; i++) {
            double *a = filo_test_download(pairs[i][0]), *o = filo_test_download(pairs[i][1]);
            for (int64_t j = 0; j < filo_tensor_numel(pairs[i][0]); j++)
                cr_assert_eq(a[j], o[j], "gradient %d element %lld on %s", i, (long long)j, filo_test_backend_name(devs[b]));
            free(a);
            free(o);
        }
        filo_tensor *all[] = {x, w, dy, all_dx, all_dw, all_db, dx, dw, db};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            filo_tensor_free(all[i]);
    }
    free(xv);
    free(wv);
    free(dyv);
}

/* N = 0: an empty y; dw and dbias are zero. */
Test(conv, empty_batch)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t xs[4] = {0, 3, 7, 7}, ws[4] = {4, 3, 3, 3}, k4 = 4;
    filo_conv2d_params p = {1, 1, 1, 1, 1, 1, 1};
    for (int b = 0; b < nb; b++) {
        filo_tensor *x, *w, *bias, *y, *dx, *dw, *db;
        FILO_CHECK(filo_tensor_empty(devs[b], FILO_F32, 4, xs, &x));
        FILO_CHECK(filo_tensor_full(devs[b], FILO_F32, 4, ws, 1.0, &w));
        FILO_CHECK(filo_tensor_full(devs[b], FILO_F32, 1, &k4, 1.0, &bias));
        FILO_CHECK(filo_conv2d_forward(x, w, bias, &p, &y));
        cr_assert_eq(y->shape[0], 0);
        cr_assert_eq(y->shape[1], 4);
        cr_assert_eq(y->shape[2], 7);
        FILO_CHECK(filo_conv2d_backward(y, x, w, &p, &dx, &dw, &db));
        cr_assert_eq(filo_tensor_numel(dx), 0);
        double *dwv = filo_test_download(dw), *dbv = filo_test_download(db);
        for (int i = 0; i < 108; i++)
            cr_assert_eq(dwv[i], 0.0);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(dbv[i], 0.0);
        free(dwv);
        free(dbv);
        filo_tensor *all[] = {x, w, bias, y, dx, dw, db};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            filo_tensor_free(all[i]);
    }
}

/* ---- finite differences (f64) ---- */

enum { FD_X, FD_W, FD_B, FD_COUNT };

static double conv_loss(filo_device d, const conv_ctx *c, double *const *v, const double *wy)
{
    const conv_shape *s = &c->s;
    int64_t xs[4] = {s->N, s->C, s->H, s->W}, ws[4] = {s->K, s->C / c->G, s->R, s->S};
    filo_tensor *x = filo_test_upload(d, FILO_F64, 4, xs, v[FD_X]), *w = filo_test_upload(d, FILO_F64, 4, ws, v[FD_W]);
    filo_tensor *b = filo_test_upload(d, FILO_F64, 1, &s->K, v[FD_B]), *y;
    FILO_CHECK(filo_conv2d_forward(x, w, b, &s->p, &y));
    double *yv = filo_test_download(y), l = 0;
    for (int64_t i = 0; i < filo_tensor_numel(y); i++)
        l += yv[i] * wy[i];
    free(yv);
    filo_tensor_free(x);
    filo_tensor_free(w);
    filo_tensor_free(b);
    filo_tensor_free(y);
    return l;
}

static void gradient_check(filo_device d, const conv_shape *shape)
{
    conv_ctx c;
    ctx_init(&c, shape, 1);
    const conv_shape *s = &c.s;
    int64_t len[FD_COUNT] = {numel4(s->N, s->C, s->H, s->W), numel4(s->K, s->C / c.G, s->R, s->S), s->K};
    int64_t ys[4] = {s->N, s->K, c.OH, c.OW}, ny = numel4(ys[0], ys[1], ys[2], ys[3]);
    double *v[FD_COUNT], *wy = malloc(sizeof(double) * (size_t)ny);
    for (int k = 0; k < FD_COUNT; k++) {
        v[k] = malloc(sizeof(double) * (size_t)len[k]);
        filo_test_fill_random(v[k], len[k], 50 + (uint64_t)k, -1.0, 1.0);
    }
    filo_test_fill_random(wy, ny, 49, -1.0, 1.0);
    int64_t xs[4] = {s->N, s->C, s->H, s->W}, ws[4] = {s->K, s->C / c.G, s->R, s->S};
    filo_tensor *x = filo_test_upload(d, FILO_F64, 4, xs, v[FD_X]), *w = filo_test_upload(d, FILO_F64, 4, ws, v[FD_W]);
    filo_tensor *dy = filo_test_upload(d, FILO_F64, 4, ys, wy), *dx, *dw, *db;
    FILO_CHECK(filo_conv2d_backward(dy, x, w, &s->p, &dx, &dw, &db));
    double *analytic[FD_COUNT] = {filo_test_download(dx), filo_test_download(dw), filo_test_download(db)};
    const double step = 1e-6;
    for (int k = 0; k < FD_COUNT; k++)
        for (int64_t i = 0; i < len[k]; i++) {
            double keep = v[k][i];
            v[k][i] = keep + step;
            double lp = conv_loss(d, &c, v, wy);
            v[k][i] = keep - step;
            double lm = conv_loss(d, &c, v, wy);
            v[k][i] = keep;
            double fd = (lp - lm) / (2 * step), a = analytic[k][i];
            cr_assert(fabs(fd - a) <= 1e-6 + 1e-6 * fabs(a), "conv on %s: d/d%s[%lld] analytic %.10g, finite difference %.10g",
                      filo_test_backend_name(d), (const char *[]){"x", "w", "bias"}[k], (long long)i, a, fd);
        }
    for (int k = 0; k < FD_COUNT; k++) {
        free(v[k]);
        free(analytic[k]);
    }
    free(wy);
    filo_tensor *all[] = {x, w, dy, dx, dw, db};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}

Test(conv, finite_difference_gradients)
{
    /* Groups, stride that does not divide, padding, dilation; and depthwise. */
    const conv_shape small[] = {
        {2, 4, 6, 5, 4, 3, 2, {2, 1, 1, 1, 2, 1, 2}},
        {1, 3, 5, 5, 3, 3, 3, {1, 2, 1, 0, 1, 1, 3}},
        {1, 2, 4, 4, 3, 1, 1, {1, 1, 0, 0, 1, 1, 1}},
    };
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    for (int b = 0; b < nb; b++)
        for (size_t i = 0; i < sizeof small / sizeof small[0]; i++)
            gradient_check(devs[b], &small[i]);
}

/* ---- determinism ---- */

Test(conv, backward_bitwise_deterministic)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    conv_ctx c;
    ctx_init(&c, &cases[3], 0);
    const conv_shape *s = &c.s;
    int64_t xs[4] = {s->N, s->C, s->H, s->W}, ws[4] = {s->K, s->C / c.G, s->R, s->S}, ys[4] = {s->N, s->K, c.OH, c.OW};
    int64_t n[3] = {numel4(xs[0], xs[1], xs[2], xs[3]), numel4(ws[0], ws[1], ws[2], ws[3]),
                    numel4(ys[0], ys[1], ys[2], ys[3])};
    double *v[3];
    for (int k = 0; k < 3; k++) {
        v[k] = malloc(sizeof(double) * (size_t)n[k]);
        filo_test_fill_random(v[k], n[k], 60 + (uint64_t)k, -1, 1);
    }
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 4, xs, v[0]), *w = filo_test_upload(devs[b], FILO_F32, 4, ws, v[1]);
        filo_tensor *dy = filo_test_upload(devs[b], FILO_F32, 4, ys, v[2]);
        float *first[3], *again[3];
        for (int run = 0; run < 2; run++) {
            filo_tensor *g[3];
            FILO_CHECK(filo_conv2d_backward(dy, x, w, &s->p, &g[0], &g[1], &g[2]));
            for (int k = 0; k < 3; k++) {
                size_t bytes = sizeof(float) * (size_t)filo_tensor_numel(g[k]);
                float *dst = malloc(bytes);
                FILO_CHECK(filo_tensor_to_host(g[k], dst, bytes));
                (run ? again : first)[k] = dst;
                filo_tensor_free(g[k]);
            }
        }
        size_t sizes[3] = {(size_t)n[0], (size_t)n[1], (size_t)s->K};
        for (int k = 0; k < 3; k++) {
            cr_assert(memcmp(first[k], again[k], sizeof(float) * sizes[k]) == 0, "gradient %d differs between runs on %s",
                      k, filo_test_backend_name(devs[b]));
            free(first[k]);
            free(again[k]);
        }
        filo_tensor_free(x);
        filo_tensor_free(w);
        filo_tensor_free(dy);
    }
    for (int k = 0; k < 3; k++)
        free(v[k]);
}

/* ---- bad inputs ---- */

static filo_tensor *cpu_tensor(filo_dtype t, int ndim, const int64_t *shape)
{
    filo_tensor *r;
    FILO_CHECK(filo_tensor_full(filo_cpu(), t, ndim, shape, 1.0, &r));
    return r;
}

Test(conv, bad_inputs)
{
    int64_t xs[4] = {2, 4, 7, 7}, x3s[3] = {4, 7, 7}, ws[4] = {6, 4, 3, 3}, w2s[4] = {6, 2, 3, 3}, w5s[4] = {6, 5, 3, 3};
    int64_t w3s[3] = {6, 4, 3}, wbig[4] = {6, 4, 9, 9}, ys[4] = {2, 6, 5, 5}, y7s[4] = {2, 6, 7, 7}, k6 = 6, k5 = 5;
    filo_tensor *x = cpu_tensor(FILO_F32, 4, xs), *x3 = cpu_tensor(FILO_F32, 3, x3s), *w = cpu_tensor(FILO_F32, 4, ws);
    filo_tensor *w2 = cpu_tensor(FILO_F32, 4, w2s), *w5 = cpu_tensor(FILO_F32, 4, w5s), *w3 = cpu_tensor(FILO_F32, 3, w3s);
    filo_tensor *wb = cpu_tensor(FILO_F32, 4, wbig), *w64 = cpu_tensor(FILO_F64, 4, ws), *xi = cpu_tensor(FILO_I32, 4, xs);
    filo_tensor *b6 = cpu_tensor(FILO_F32, 1, &k6), *b5 = cpu_tensor(FILO_F32, 1, &k5), *b64 = cpu_tensor(FILO_F64, 1, &k6);
    filo_tensor *dy = cpu_tensor(FILO_F32, 4, ys), *dy7 = cpu_tensor(FILO_F32, 4, y7s), *dy64 = cpu_tensor(FILO_F64, 4, ys);
    filo_tensor *y, *dx, *dw, *db;
    filo_conv2d_params p = {0};

    FILO_CHECK_FAILS(filo_conv2d_forward(NULL, w, NULL, &p, &y), FILO_ERR_INVALID_ARG, "filo_conv2d_forward: x is NULL");
    FILO_CHECK_FAILS(filo_conv2d_forward(x, NULL, NULL, &p, &y), FILO_ERR_INVALID_ARG, "w is NULL");
    FILO_CHECK_FAILS(filo_conv2d_forward(x, w, NULL, &p, NULL), FILO_ERR_INVALID_ARG, "y is NULL");
    FILO_CHECK_FAILS(filo_conv2d_forward(x3, w, NULL, &p, &y), FILO_ERR_SHAPE, "x must be 4-D [N, C, H, W], got f32[4, 7, 7]");
    FILO_CHECK_FAILS(filo_conv2d_forward(x, w3, NULL, &p, &y), FILO_ERR_SHAPE, "w must be 4-D");
    FILO_CHECK_FAILS(filo_conv2d_forward(xi, w, NULL, &p, &y), FILO_ERR_DTYPE, "x must be f32, f64, bf16 or f16, got i32");
    FILO_CHECK_FAILS(filo_conv2d_forward(x, w64, NULL, &p, &y), FILO_ERR_DTYPE, "w f64[6, 4, 3, 3] cpu must have the dtype of x");
    FILO_CHECK_FAILS(filo_conv2d_forward(x, w5, NULL, &p, &y), FILO_ERR_SHAPE, "channel mismatch");
    FILO_CHECK_FAILS(filo_conv2d_forward(x, w2, NULL, &p, &y), FILO_ERR_SHAPE, "w f32[6, 2, 3, 3] cpu has 2 channels a group");
    filo_conv2d_params g3 = {.groups = 3};
    FILO_CHECK_FAILS(filo_conv2d_forward(x, w, NULL, &g3, &y), FILO_ERR_SHAPE, "groups 3 must divide");
    filo_conv2d_params g4 = {.groups = 4};
    FILO_CHECK_FAILS(filo_conv2d_forward(x, w2, NULL, &g4, &y), FILO_ERR_SHAPE, "groups 4 must divide");
    filo_conv2d_params neg = {.pad_h = -1};
    FILO_CHECK_FAILS(filo_conv2d_forward(x, w, NULL, &neg, &y), FILO_ERR_INVALID_ARG, "must be >= 0");
    FILO_CHECK_FAILS(filo_conv2d_forward(x, wb, NULL, &p, &y), FILO_ERR_SHAPE, "output size -1x-1 is too small");
    filo_conv2d_params dil = {.dilation_h = 4};
    FILO_CHECK_FAILS(filo_conv2d_forward(x, w, NULL, &dil, &y), FILO_ERR_SHAPE, "too small");
    FILO_CHECK_FAILS(filo_conv2d_forward(x, w, b5, &p, &y), FILO_ERR_SHAPE, "bias f32[5] cpu must have shape [6]");
    FILO_CHECK_FAILS(filo_conv2d_forward(x, w, b64, &p, &y), FILO_ERR_DTYPE, "bias f64[6] cpu must have the dtype of x");

    FILO_CHECK_FAILS(filo_conv2d_backward(dy7, x, w, &p, &dx, &dw, &db), FILO_ERR_SHAPE,
                     "dy f32[2, 6, 7, 7] cpu must have the forward output's shape [2, 6, 5, 5]");
    FILO_CHECK_FAILS(filo_conv2d_backward(dy64, x, w, &p, &dx, &dw, &db), FILO_ERR_DTYPE, "dy f64[2, 6, 5, 5] cpu must have the dtype");
    FILO_CHECK_FAILS(filo_conv2d_backward(NULL, x, w, &p, &dx, &dw, &db), FILO_ERR_INVALID_ARG, "dy is NULL");
    FILO_CHECK_FAILS(filo_conv2d_backward(dy, x, w, &p, NULL, NULL, NULL), FILO_ERR_INVALID_ARG, "nothing to compute");
    FILO_CHECK_FAILS(filo_conv2d_backward(dy, x, w5, &p, &dx, &dw, &db), FILO_ERR_SHAPE,
                     "filo_conv2d_backward: channel mismatch");

    if (filo_cuda_device_count() > 0) {
        filo_tensor *wc, *dyc;
        FILO_CHECK(filo_tensor_to(w, filo_cuda(0), &wc));
        FILO_CHECK(filo_tensor_to(dy, filo_cuda(0), &dyc));
        FILO_CHECK_FAILS(filo_conv2d_forward(x, wc, NULL, &p, &y), FILO_ERR_DEVICE,
                         "w f32[6, 4, 3, 3] cuda:0 is not on the device of x f32[2, 4, 7, 7] cpu");
        FILO_CHECK_FAILS(filo_conv2d_backward(dyc, x, w, &p, &dx, &dw, &db), FILO_ERR_DEVICE, "dy f32[2, 6, 5, 5] cuda:0");
        filo_tensor_free(wc);
        filo_tensor_free(dyc);
    }
    filo_tensor *all[] = {x, x3, w, w2, w5, w3, wb, w64, xi, b6, b5, b64, dy, dy7, dy64};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}
