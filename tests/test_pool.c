/* Max and average pooling (include/filo/pool.h): forward and backward parity on every backend
 * against float64 references written here (windows enumerated directly, the backward as a
 * scatter), finite-difference gradient checks in f64, bitwise determinism of the backward, empty
 * inputs and every bad-input error. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/pool.h"
#include "parity.h"

/* kernel, stride, pad, dilation (h, w), ceil_mode, count_include_pad */
static const filo_pool2d_params configs[] = {
    {1, 1, 1, 1, 0, 0, 1, 1, 0, 1},
    {3, 3, 1, 1, 1, 1, 1, 1, 0, 1},
    {3, 3, 2, 2, 1, 1, 1, 1, 1, 0},
    {5, 5, 2, 2, 2, 2, 0, 0, 0, 1},
    {3, 5, 1, 2, 1, 2, 2, 1, 0, 0},
    {2, 2, 0, 0, 0, 0, 0, 0, 1, 1},
    {5, 3, 1, 2, 2, 0, 2, 3, 1, 0},
    {4, 4, 3, 3, 2, 1, 1, 1, 1, 1},
};
#define N_CONFIGS (sizeof configs / sizeof configs[0])

static const int64_t shapes[][4] = {{1, 1, 1, 1}, {2, 3, 7, 13}, {3, 7, 33, 7}, {1, 3, 13, 33}, {2, 1, 1, 7}};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

typedef struct pool_ctx {
    filo_pool2d_params p;
    int64_t x_shape[4];
    int64_t oh, ow;
    double *indices; /* max backward: the saved indices, uploaded inside run */
} pool_ctx;

static int64_t stride_of(int64_t s, int64_t k) { return s ? s : k; }
static int64_t dil_of(int64_t d) { return d ? d : 1; }

/* Reference max pooling of one plane set: y and indices (first maximum, NaN wins). */
static void ref_max(const pool_ctx *c, const double *x, double *y, double *idx)
{
    const filo_pool2d_params *p = &c->p;
    int64_t planes = c->x_shape[0] * c->x_shape[1], H = c->x_shape[2], W = c->x_shape[3];
    int64_t sh = stride_of(p->stride_h, p->kernel_h), sw = stride_of(p->stride_w, p->kernel_w);
    int64_t dh = dil_of(p->dilation_h), dw = dil_of(p->dilation_w);
    for (int64_t q = 0; q < planes; q++)
        for (int64_t oh = 0; oh < c->oh; oh++)
            for (int64_t ow = 0; ow < c->ow; ow++) {
                double best = -INFINITY;
                int64_t arg = -1;
                for (int64_t i = 0; i < p->kernel_h; i++)
                    for (int64_t j = 0; j < p->kernel_w; j++) {
                        int64_t h = oh * sh - p->pad_h + i * dh, w = ow * sw - p->pad_w + j * dw;
                        if (h < 0 || h >= H || w < 0 || w >= W)
                            continue;
                        double v = x[(q * H + h) * W + w];
                        if (arg < 0 || v > best) {
                            best = v;
                            arg = h * W + w;
                        }
                    }
                int64_t o = (q * c->oh + oh) * c->ow + ow;
                y[o] = best;
                if (idx)
                    idx[o] = (double)arg;
            }
}

static void ref_avg_fwd(const pool_ctx *c, const double *x, double *y, const double *dy, double *dx)
{
    const filo_pool2d_params *p = &c->p;
    int64_t planes = c->x_shape[0] * c->x_shape[1], H = c->x_shape[2], W = c->x_shape[3];
    int64_t sh = stride_of(p->stride_h, p->kernel_h), sw = stride_of(p->stride_w, p->kernel_w);
    if (dx)
        memset(dx, 0, sizeof(double) * (size_t)(planes * H * W));
    for (int64_t q = 0; q < planes; q++)
        for (int64_t oh = 0; oh < c->oh; oh++)
            for (int64_t ow = 0; ow < c->ow; ow++) {
                int64_t inside = 0, padded = 0;
                double s = 0;
                for (int64_t i = 0; i < p->kernel_h; i++)
                    for (int64_t j = 0; j < p->kernel_w; j++) {
                        int64_t h = oh * sh - p->pad_h + i, w = ow * sw - p->pad_w + j;
                        if (h < H + p->pad_h && w < W + p->pad_w)
                            padded++;
                        if (h >= 0 && h < H && w >= 0 && w < W) {
                            inside++;
                            if (x)
                                s += x[(q * H + h) * W + w];
                        }
                    }
                double div = (double)(p->count_include_pad ? padded : inside);
                int64_t o = (q * c->oh + oh) * c->ow + ow;
                if (y)
                    y[o] = s / div;
                if (dx)
                    for (int64_t i = 0; i < p->kernel_h; i++)
                        for (int64_t j = 0; j < p->kernel_w; j++) {
                            int64_t h = oh * sh - p->pad_h + i, w = ow * sw - p->pad_w + j;
                            if (h >= 0 && h < H && w >= 0 && w < W)
                                dx[(q * H + h) * W + w] += dy[o] / div;
                        }
            }
}

static parity_input input(filo_dtype t, const int64_t *shape, double lo, double hi, int transpose)
{
    parity_input in = {.dtype = t, .ndim = 4, .lo = lo, .hi = hi, .transpose_last = transpose};
    memcpy(in.shape, shape, sizeof(int64_t) * 4);
    return in;
}

/* ---- max ---- */

static filo_status run_max_fwd(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const pool_ctx *c = ctx;
    return filo_maxpool2d_forward(in[0], &c->p, &out[0], &out[1]);
}

static void reference_max_fwd(void *ctx, double *const *in, const parity_input *s, double **want)
{
    (void)s;
    ref_max(ctx, in[0], want[0], want[1]);
}

static filo_status run_max_bwd(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const pool_ctx *c = ctx;
    int64_t yshape[4] = {c->x_shape[0], c->x_shape[1], c->oh, c->ow};
    filo_tensor *idx = filo_test_upload(in[0]->device, FILO_I64, 4, yshape, c->indices);
    filo_status s = filo_maxpool2d_backward(in[0], idx, c->x_shape, &c->p, &out[0]);
    filo_tensor_free(idx);
    return s;
}

static void reference_max_bwd(void *ctx, double *const *in, const parity_input *s, double **want)
{
    (void)s;
    const pool_ctx *c = ctx;
    int64_t planes = c->x_shape[0] * c->x_shape[1], HW = c->x_shape[2] * c->x_shape[3], OHW = c->oh * c->ow;
    memset(want[0], 0, sizeof(double) * (size_t)(planes * HW));
    for (int64_t q = 0; q < planes; q++)
        for (int64_t o = 0; o < OHW; o++) {
            int64_t idx = (int64_t)c->indices[q * OHW + o];
            if (idx >= 0)
                want[0][q * HW + idx] += in[0][q * OHW + o];
        }
}

/* ---- avg ---- */

static filo_status run_avg_fwd(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    return filo_avgpool2d_forward(in[0], &((const pool_ctx *)ctx)->p, &out[0]);
}

static void reference_avg_fwd(void *ctx, double *const *in, const parity_input *s, double **want)
{
    (void)s;
    ref_avg_fwd(ctx, in[0], want[0], NULL, NULL);
}

static filo_status run_avg_bwd(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const pool_ctx *c = ctx;
    return filo_avgpool2d_backward(in[0], c->x_shape, &c->p, &out[0]);
}

static void reference_avg_bwd(void *ctx, double *const *in, const parity_input *s, double **want)
{
    (void)s;
    ref_avg_fwd(ctx, NULL, NULL, in[0], want[0]);
}

/* Runs the four ops for one config, shape and dtype; returns 0 when the config does not fit. */
static int pool_cases(const filo_pool2d_params *p, const int64_t *xs, filo_dtype t, int transpose)
{
    pool_ctx c = {.p = *p};
    memcpy(c.x_shape, xs, sizeof c.x_shape);
    if (filo_pool2d_output_size(p, xs[2], xs[3], &c.oh, &c.ow) != FILO_OK)
        return 0;
    int64_t ys[4] = {xs[0], xs[1], c.oh, c.ow};
    int64_t nx = xs[0] * xs[1] * xs[2] * xs[3], ny = xs[0] * xs[1] * c.oh * c.ow;
    char name[200];
    int has_dil = dil_of(p->dilation_h) != 1 || dil_of(p->dilation_w) != 1;
    const char *dn = filo_dtype_name(t);
    double rtol = parity_default_rtol(t);

    snprintf(name, sizeof name, "maxpool fwd %s x[%lld,%lld,%lld,%lld] k%lldx%lld%s", dn, (long long)xs[0],
             (long long)xs[1], (long long)xs[2], (long long)xs[3], (long long)p->kernel_h, (long long)p->kernel_w,
             transpose ? " transposed" : "");
    parity_case pc = {.name = name, .run = run_max_fwd, .reference = reference_max_fwd, .ctx = &c, .seed = 3,
                      .n_inputs = 1, .n_outputs = 2, .rtol = rtol, .atol = rtol};
    pc.inputs[0] = input(t, xs, -2.0, 3.0, transpose);
    parity_run(&pc);

    /* Indices of a forward on random values, for the backward. */
    double *xv = malloc(sizeof(double) * (size_t)(nx + 1)), *yv = malloc(sizeof(double) * (size_t)(ny + 1));
    c.indices = malloc(sizeof(double) * (size_t)(ny + 1));
    filo_test_fill_random(xv, nx, 17, -1.0, 1.0);
    ref_max(&c, xv, yv, c.indices);
    snprintf(name, sizeof name, "maxpool bwd %s x[%lld,%lld,%lld,%lld] k%lldx%lld", dn, (long long)xs[0],
             (long long)xs[1], (long long)xs[2], (long long)xs[3], (long long)p->kernel_h, (long long)p->kernel_w);
    parity_case pb = {.name = name, .run = run_max_bwd, .reference = reference_max_bwd, .ctx = &c, .seed = 5,
                      .n_inputs = 1, .n_outputs = 1, .rtol = rtol, .atol = rtol};
    pb.inputs[0] = input(t, ys, -1.0, 1.0, transpose);
    parity_run(&pb);
    free(xv);
    free(yv);
    free(c.indices);
    c.indices = NULL;

    if (has_dil)
        return 1;
    snprintf(name, sizeof name, "avgpool fwd %s x[%lld,%lld,%lld,%lld] k%lldx%lld cip=%d", dn, (long long)xs[0],
             (long long)xs[1], (long long)xs[2], (long long)xs[3], (long long)p->kernel_h, (long long)p->kernel_w,
             p->count_include_pad);
    parity_case pa = {.name = name, .run = run_avg_fwd, .reference = reference_avg_fwd, .ctx = &c, .seed = 7,
                      .n_inputs = 1, .n_outputs = 1, .rtol = rtol, .atol = rtol};
    pa.inputs[0] = input(t, xs, -2.0, 3.0, transpose);
    parity_run(&pa);
    snprintf(name, sizeof name, "avgpool bwd %s x[%lld,%lld,%lld,%lld] k%lldx%lld cip=%d", dn, (long long)xs[0],
             (long long)xs[1], (long long)xs[2], (long long)xs[3], (long long)p->kernel_h, (long long)p->kernel_w,
             p->count_include_pad);
    parity_case pd = {.name = name, .run = run_avg_bwd, .reference = reference_avg_bwd, .ctx = &c, .seed = 9,
                      .n_inputs = 1, .n_outputs = 1, .rtol = rtol, .atol = rtol};
    pd.inputs[0] = input(t, ys, -1.0, 1.0, transpose);
    parity_run(&pd);
    return 1;
}

static void sweep(filo_dtype t)
{
    int ran = 0;
    for (size_t k = 0; k < N_CONFIGS; k++)
        for (size_t s = 0; s < N_SHAPES; s++)
            ran += pool_cases(&configs[k], shapes[s], t, 0);
    cr_assert_gt(ran, 30);
    cr_log_info("%s: %d config/shape pairs", filo_dtype_name(t), ran);
}

Test(pool, sweep_f32) { sweep(FILO_F32); }
Test(pool, sweep_f64) { sweep(FILO_F64); }
Test(pool, sweep_bf16) { sweep(FILO_BF16); }
Test(pool, sweep_f16) { sweep(FILO_F16); }

/* The kernels' 64-bit index path (taken for tensors of 2^31 elements) on the usual shapes. */
Test(pool, index64_path)
{
    setenv("FILO_POOL_FORCE_INDEX64", "1", 1);
    const filo_dtype types[2] = {FILO_F32, FILO_F16};
    for (int t = 0; t < 2; t++)
        for (size_t k = 0; k < N_CONFIGS; k++)
            for (size_t s = 1; s < N_SHAPES; s++)
                pool_cases(&configs[k], shapes[s], types[t], 0);
    unsetenv("FILO_POOL_FORCE_INDEX64");
}

Test(pool, non_contiguous_inputs)
{
    int64_t xs[4] = {2, 3, 13, 7};
    cr_assert(pool_cases(&configs[2], xs, FILO_F32, 1));
    cr_assert(pool_cases(&configs[4], xs, FILO_BF16, 1));
}

/* Known values: PyTorch's results for a 1x1x4x4 ramp (0..15). */
Test(pool, known_values)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t xs[4] = {1, 1, 4, 4};
    double xv[16];
    for (int i = 0; i < 16; i++)
        xv[i] = i;
    /* max_pool2d(k=3, s=2, p=1, ceil_mode=True): 3x3 (the last window starts at row 3 < H + pad) */
    filo_pool2d_params mp = {3, 3, 2, 2, 1, 1, 1, 1, 1, 0};
    const double want_y[9] = {5, 7, 7, 13, 15, 15, 13, 15, 15};
    const double want_i[9] = {5, 7, 7, 13, 15, 15, 13, 15, 15};
    /* avg_pool2d(k=3, s=2, p=1, count_include_pad=False) and (=True): 2x2 */
    filo_pool2d_params ap = {3, 3, 2, 2, 1, 1, 1, 1, 0, 0};
    const double want_a0[4] = {2.5, 4.0, 8.5, 10.0};
    const double want_a1[4] = {10.0 / 9.0, 24.0 / 9.0, 51.0 / 9.0, 90.0 / 9.0};
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 4, xs, xv), *y, *idx, *a;
        FILO_CHECK(filo_maxpool2d_forward(x, &mp, &y, &idx));
        cr_assert_eq(y->shape[2], 3);
        cr_assert_eq(y->shape[3], 3);
        double *yv = filo_test_download(y), *iv = filo_test_download(idx);
        for (int i = 0; i < 9; i++) {
            cr_assert_eq(yv[i], want_y[i], "max y[%d] on %s: %g", i, filo_test_backend_name(devs[b]), yv[i]);
            cr_assert_eq(iv[i], want_i[i], "max index[%d] on %s: %g", i, filo_test_backend_name(devs[b]), iv[i]);
        }
        free(yv);
        free(iv);
        for (int cip = 0; cip < 2; cip++) {
            ap.count_include_pad = cip;
            FILO_CHECK(filo_avgpool2d_forward(x, &ap, &a));
            double *av = filo_test_download(a);
            for (int i = 0; i < 4; i++)
                cr_assert(fabs(av[i] - (cip ? want_a1 : want_a0)[i]) < 1e-5, "avg cip=%d y[%d] on %s: %g", cip, i,
                          filo_test_backend_name(devs[b]), av[i]);
            free(av);
            filo_tensor_free(a);
        }
        filo_tensor_free(x);
        filo_tensor_free(y);
        filo_tensor_free(idx);
    }
}

/* N = 0 and C = 0: empty outputs, no launch. */
Test(pool, empty)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    filo_pool2d_params p = {3, 3, 1, 1, 1, 1, 1, 1, 0, 1};
    for (int b = 0; b < nb; b++)
        for (int z = 0; z < 2; z++) {
            int64_t xs[4] = {z ? 2 : 0, z ? 0 : 3, 5, 6};
            filo_tensor *x, *y, *idx, *a, *dx;
            FILO_CHECK(filo_tensor_empty(devs[b], FILO_F32, 4, xs, &x));
            FILO_CHECK(filo_maxpool2d_forward(x, &p, &y, &idx));
            cr_assert_eq(filo_tensor_numel(y), 0);
            cr_assert_eq(y->shape[2], 5);
            cr_assert_eq(y->shape[3], 6);
            FILO_CHECK(filo_maxpool2d_backward(y, idx, xs, &p, &dx));
            cr_assert_eq(filo_tensor_numel(dx), 0);
            filo_tensor_free(dx);
            FILO_CHECK(filo_avgpool2d_forward(x, &p, &a));
            FILO_CHECK(filo_avgpool2d_backward(a, xs, &p, &dx));
            cr_assert_eq(filo_tensor_numel(dx), 0);
            filo_tensor *all[] = {x, y, idx, a, dx};
            for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
                filo_tensor_free(all[i]);
        }
}

/* ---- finite differences (f64) ---- */

static double pool_loss(filo_device d, int avg, const filo_pool2d_params *p, const int64_t *xs, const double *xv,
                        const double *w)
{
    filo_tensor *x = filo_test_upload(d, FILO_F64, 4, xs, xv), *y, *idx = NULL;
    if (avg)
        FILO_CHECK(filo_avgpool2d_forward(x, p, &y));
    else
        FILO_CHECK(filo_maxpool2d_forward(x, p, &y, &idx));
    double *yv = filo_test_download(y), l = 0;
    for (int64_t i = 0; i < filo_tensor_numel(y); i++)
        l += yv[i] * w[i];
    free(yv);
    filo_tensor_free(x);
    filo_tensor_free(y);
    filo_tensor_free(idx);
    return l;
}

static void gradient_check(filo_device d, int avg, const filo_pool2d_params *p)
{
    const int64_t xs[4] = {2, 2, 7, 6}, nx = 2 * 2 * 7 * 6;
    int64_t oh, ow;
    FILO_CHECK(filo_pool2d_output_size(p, xs[2], xs[3], &oh, &ow));
    int64_t ys[4] = {2, 2, oh, ow}, ny = 4 * oh * ow;
    double *xv = malloc(sizeof(double) * nx), *w = malloc(sizeof(double) * (size_t)ny);
    filo_test_fill_random(xv, nx, 31, -1.0, 1.0);
    filo_test_fill_random(w, ny, 32, -1.0, 1.0);
    filo_tensor *x = filo_test_upload(d, FILO_F64, 4, xs, xv), *dy = filo_test_upload(d, FILO_F64, 4, ys, w);
    filo_tensor *y, *idx = NULL, *dx;
    if (avg) {
        FILO_CHECK(filo_avgpool2d_forward(x, p, &y));
        FILO_CHECK(filo_avgpool2d_backward(dy, xs, p, &dx));
    } else {
        FILO_CHECK(filo_maxpool2d_forward(x, p, &y, &idx));
        FILO_CHECK(filo_maxpool2d_backward(dy, idx, xs, p, &dx));
    }
    double *g = filo_test_download(dx);
    const double step = 1e-6;
    for (int64_t i = 0; i < nx; i++) {
        double keep = xv[i];
        xv[i] = keep + step;
        double lp = pool_loss(d, avg, p, xs, xv, w);
        xv[i] = keep - step;
        double lm = pool_loss(d, avg, p, xs, xv, w);
        xv[i] = keep;
        double fd = (lp - lm) / (2 * step);
        cr_assert(fabs(fd - g[i]) <= 1e-6 + 1e-6 * fabs(g[i]), "%s on %s: dx[%lld] analytic %.10g, finite difference %.10g",
                  avg ? "avgpool" : "maxpool", filo_test_backend_name(d), (long long)i, g[i], fd);
    }
    free(g);
    free(xv);
    free(w);
    filo_tensor *all[] = {x, dy, y, idx, dx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}

Test(pool, finite_difference_gradients)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const size_t pick[] = {1, 2, 3, 7};
    for (int b = 0; b < nb; b++)
        for (size_t k = 0; k < sizeof pick / sizeof pick[0]; k++)
            for (int avg = 0; avg < 2; avg++)
                gradient_check(devs[b], avg, &configs[pick[k]]);
    for (int b = 0; b < nb; b++)
        gradient_check(devs[b], 0, &configs[4]); /* dilated max */
}

/* ---- determinism ---- */

Test(pool, backward_bitwise_deterministic)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    const int64_t xs[4] = {2, 3, 33, 13};
    filo_pool2d_params p = configs[3];
    int64_t oh, ow;
    FILO_CHECK(filo_pool2d_output_size(&p, xs[2], xs[3], &oh, &ow));
    int64_t nx = 2 * 3 * 33 * 13;
    double *xv = malloc(sizeof(double) * (size_t)nx);
    filo_test_fill_random(xv, nx, 41, -1, 1);
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 4, xs, xv), *y, *idx;
        FILO_CHECK(filo_maxpool2d_forward(x, &p, &y, &idx));
        float first[2][2 * 3 * 33 * 13], again[2][2 * 3 * 33 * 13];
        for (int run = 0; run < 2; run++) {
            filo_tensor *dm, *da;
            FILO_CHECK(filo_maxpool2d_backward(y, idx, xs, &p, &dm));
            FILO_CHECK(filo_avgpool2d_backward(y, xs, &p, &da));
            float(*dst)[2 * 3 * 33 * 13] = run ? again : first;
            FILO_CHECK(filo_tensor_to_host(dm, dst[0], sizeof dst[0]));
            FILO_CHECK(filo_tensor_to_host(da, dst[1], sizeof dst[1]));
            filo_tensor_free(dm);
            filo_tensor_free(da);
        }
        cr_assert(memcmp(first, again, sizeof first) == 0, "backward differs between runs on %s",
                  filo_test_backend_name(devs[b]));
        filo_tensor_free(x);
        filo_tensor_free(y);
        filo_tensor_free(idx);
    }
    free(xv);
}

/* ---- bad inputs ---- */

static filo_tensor *cpu_tensor(filo_dtype t, int ndim, const int64_t *shape, double v)
{
    filo_tensor *r;
    FILO_CHECK(filo_tensor_full(filo_cpu(), t, ndim, shape, v, &r));
    return r;
}

Test(pool, bad_inputs)
{
    int64_t s4[4] = {2, 3, 7, 7}, s3[3] = {3, 7, 7}, y4[4] = {2, 3, 4, 4}, y5[4] = {2, 3, 5, 4}, s11[4] = {2, 3, 1, 1};
    filo_pool2d_params p = {3, 3, 2, 2, 1, 1, 1, 1, 0, 1};
    filo_tensor *x = cpu_tensor(FILO_F32, 4, s4, 1.0), *x3 = cpu_tensor(FILO_F32, 3, s3, 1.0);
    filo_tensor *xi = cpu_tensor(FILO_I32, 4, s4, 1.0), *x1 = cpu_tensor(FILO_F32, 4, s11, 1.0);
    filo_tensor *dy = cpu_tensor(FILO_F32, 4, y4, 1.0), *dy5 = cpu_tensor(FILO_F32, 4, y5, 1.0);
    filo_tensor *idx = cpu_tensor(FILO_I64, 4, y4, 0.0), *idx32 = cpu_tensor(FILO_I32, 4, y4, 0.0);
    filo_tensor *idx5 = cpu_tensor(FILO_I64, 4, y5, 0.0), *idxbad = cpu_tensor(FILO_I64, 4, y4, 48.0);
    filo_tensor *y, *i, *dx;

    FILO_CHECK_FAILS(filo_maxpool2d_forward(NULL, &p, &y, &i), FILO_ERR_INVALID_ARG, "filo_maxpool2d_forward: x is NULL");
    FILO_CHECK_FAILS(filo_maxpool2d_forward(x, NULL, &y, &i), FILO_ERR_INVALID_ARG, "params is NULL");
    FILO_CHECK_FAILS(filo_maxpool2d_forward(x3, &p, &y, &i), FILO_ERR_SHAPE, "x must be 4-D [N, C, H, W], got f32[3, 7, 7]");
    FILO_CHECK_FAILS(filo_maxpool2d_forward(xi, &p, &y, &i), FILO_ERR_DTYPE, "i32[2, 3, 7, 7]");
    FILO_CHECK_FAILS(filo_maxpool2d_forward(x, &p, &y, NULL), FILO_ERR_INVALID_ARG, "output pointer");
    filo_pool2d_params q = p;
    q.kernel_h = 0;
    FILO_CHECK_FAILS(filo_maxpool2d_forward(x, &q, &y, &i), FILO_ERR_INVALID_ARG, "kernel must be >= 1");
    q = p;
    q.pad_w = 2;
    FILO_CHECK_FAILS(filo_avgpool2d_forward(x, &q, &y), FILO_ERR_INVALID_ARG, "at most half of the kernel");
    q = p;
    q.stride_h = -1;
    FILO_CHECK_FAILS(filo_avgpool2d_forward(x, &q, &y), FILO_ERR_INVALID_ARG, "must be >= 0");
    q = p;
    q.dilation_h = 2;
    FILO_CHECK_FAILS(filo_avgpool2d_forward(x, &q, &y), FILO_ERR_INVALID_ARG, "no dilation");
    q = p;
    q.pad_h = q.pad_w = 0;
    FILO_CHECK_FAILS(filo_maxpool2d_forward(x1, &q, &y, &i), FILO_ERR_SHAPE, "output size");
    FILO_CHECK_FAILS(filo_avgpool2d_forward(x1, &q, &y), FILO_ERR_SHAPE, "too small");

    FILO_CHECK_FAILS(filo_maxpool2d_backward(dy5, idx5, s4, &p, &dx), FILO_ERR_SHAPE,
                     "dy f32[2, 3, 5, 4] cpu must have the forward output's shape [2, 3, 4, 4]");
    FILO_CHECK_FAILS(filo_maxpool2d_backward(dy, idx32, s4, &p, &dx), FILO_ERR_DTYPE, "indices i32[2, 3, 4, 4] cpu must be i64");
    FILO_CHECK_FAILS(filo_maxpool2d_backward(dy, idx5, s4, &p, &dx), FILO_ERR_SHAPE, "must have the shape of dy");
    FILO_CHECK_FAILS(filo_maxpool2d_backward(dy, NULL, s4, &p, &dx), FILO_ERR_INVALID_ARG, "indices is NULL");
    FILO_CHECK_FAILS(filo_maxpool2d_backward(dy, idx, NULL, &p, &dx), FILO_ERR_INVALID_ARG, "x_shape is NULL");
    FILO_CHECK_FAILS(filo_maxpool2d_backward(dy, idxbad, s4, &p, &dx), FILO_ERR_INVALID_ARG,
                     "index 48 at plane 0, output (0, 0) is not a position of its window");
    FILO_CHECK_FAILS(filo_avgpool2d_backward(dy5, s4, &p, &dx), FILO_ERR_SHAPE, "filo_avgpool2d_backward: dy f32[2, 3, 5, 4]");
    FILO_CHECK_FAILS(filo_avgpool2d_backward(x3, s4, &p, &dx), FILO_ERR_SHAPE, "dy must be 4-D");
    FILO_CHECK_FAILS(filo_avgpool2d_backward(dy, s4, &p, NULL), FILO_ERR_INVALID_ARG, "dx is NULL");

    if (filo_cuda_device_count() > 0) {
        filo_tensor *ic;
        FILO_CHECK(filo_tensor_to(idx, filo_cuda(0), &ic));
        FILO_CHECK_FAILS(filo_maxpool2d_backward(dy, ic, s4, &p, &dx), FILO_ERR_DEVICE,
                         "indices i64[2, 3, 4, 4] cuda:0 is not on the device of dy f32[2, 3, 4, 4] cpu");
        filo_tensor_free(ic);
    }
    filo_tensor *all[] = {x, x3, xi, x1, dy, dy5, idx, idx32, idx5, idxbad};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        filo_tensor_free(all[k]);
}
