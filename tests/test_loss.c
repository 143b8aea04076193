/* Softmax cross-entropy (include/filo/loss.h): forward, backward and fused parity on every
 * backend against a float64 reference written here from PyTorch's F.cross_entropy formulas, for
 * every option combination (weights, ignore_index hits, label smoothing, NONE/SUM/MEAN), odd
 * shapes, large logits, all-ignored batches; PyTorch 1.13's own numbers for a small case; a
 * finite-difference gradient check in f64; the bitwise determinism of the CUDA reductions;
 * out-of-range targets; every bad-input error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/loss.h"
#include "parity.h"

#define IGNORE (-100)
#define MAX_ROWS 64

enum { MODE_FORWARD, MODE_BACKWARD, MODE_FUSED };
static const char *mode_names[] = {"forward", "backward", "fused"};
static const char *red_names[] = {"none", "sum", "mean"};

typedef struct ce_ctx {
    int mode;
    int weights;
    double smoothing;
    filo_loss_reduction reduction;
    filo_dtype target_dtype;
    int64_t rows, C;
    int lead_ndim;
    int64_t lead[4];
    int64_t target[MAX_ROWS];
    double grad_scale;
    int offset_view; /* pass logits as a contiguous view that starts one row into its storage */
    int64_t ignore_index; /* 0 means IGNORE (-100) */
} ce_ctx;

static filo_dtype acc_dtype(filo_dtype t) { return t == FILO_F64 ? FILO_F64 : FILO_F32; }

static int64_t ignore_of(const ce_ctx *c) { return c->ignore_index ? c->ignore_index : IGNORE; }

static filo_cross_entropy_options options_of(const ce_ctx *c, const filo_tensor *weight)
{
    filo_cross_entropy_options o = filo_cross_entropy_defaults();
    o.ignore_index = ignore_of(c);
    o.weight = weight;
    o.label_smoothing = c->smoothing;
    o.reduction = c->reduction;
    return o;
}

static filo_tensor *upload_targets(const ce_ctx *c, filo_device dev)
{
    double v[MAX_ROWS];
    for (int64_t r = 0; r < c->rows; r++)
        v[r] = (double)c->target[r];
    return filo_test_upload(dev, c->target_dtype, c->lead_ndim, c->lead, v);
}

/* Inputs: logits, then weight when c->weights, then dloss (backward). Outputs: forward loss,
 * lse; backward dlogits (from the forward's lse on the same device); fused loss, dlogits. */
static filo_status run_ce(void *ctx, filo_tensor *const *in, filo_tensor **out)
{
    const ce_ctx *c = ctx;
    filo_tensor *target = upload_targets(c, in[0]->device);
    filo_cross_entropy_options o = options_of(c, c->weights ? in[1] : NULL);
    filo_tensor *storage = NULL, *view = NULL;
    filo_tensor *moved[PARITY_MAX_TENSORS];
    if (c->offset_view) {
        /* Rows of C elements from the second row of the storage: the logits' rows and dlogits'
         * rows then differ in their 16-byte alignment whenever C * size is not a multiple of 16. */
        int64_t shape[2] = {c->rows + 1, c->C};
        FILO_CHECK(filo_tensor_empty(in[0]->device, in[0]->dtype, 2, shape, &storage));
        FILO_CHECK(filo_tensor_slice(storage, 0, 1, c->rows + 1, 1, &view));
        FILO_CHECK(filo_tensor_copy(view, in[0]));
        memcpy(moved, in, sizeof moved);
        moved[0] = view;
        in = moved;
    }
    filo_status s;
    if (c->mode == MODE_FORWARD) {
        s = filo_cross_entropy_forward(in[0], target, &o, &out[0], &out[1]);
    } else if (c->mode == MODE_FUSED) {
        s = filo_cross_entropy_fused(in[0], target, &o, c->grad_scale, &out[0], &out[1]);
    } else {
        filo_tensor *loss = NULL, *lse = NULL;
        s = filo_cross_entropy_forward(in[0], target, &o, &loss, &lse);
        if (s == FILO_OK)
            s = filo_cross_entropy_backward(in[1 + c->weights], in[0], target, lse, &o, &out[0]);
        filo_tensor_free(loss);
        filo_tensor_free(lse);
    }
    filo_tensor_free(target);
    filo_tensor_free(view);
    filo_tensor_free(storage);
    return s;
}

/* The f64 reference from the formulas in include/filo/loss.h. */
static void reference_ce(void *ctx, double *const *in, const parity_input *shapes, double **want)
{
    (void)shapes;
    const ce_ctx *c = ctx;
    const double *x = in[0], *w = c->weights ? in[1] : NULL, *dloss = c->mode == MODE_BACKWARD ? in[1 + c->weights] : NULL;
    int64_t N = c->rows, C = c->C;
    double e = c->smoothing, W = 0, wsum = 0, total = 0;
    for (int64_t j = 0; j < C; j++)
        wsum += w ? w[j] : 1.0;
    for (int64_t r = 0; r < N; r++)
        if (c->target[r] != ignore_of(c))
            W += w ? w[c->target[r]] : 1.0;
    double *loss_out = c->mode == MODE_BACKWARD ? NULL : want[0];
    double *lse_out = c->mode == MODE_FORWARD ? want[1] : NULL;
    double *dx = c->mode == MODE_FORWARD ? NULL : want[c->mode == MODE_FUSED ? 1 : 0];
    for (int64_t r = 0; r < N; r++) {
        const double *xr = x + r * C;
        int64_t y = c->target[r];
        double loss = 0, lse = 0;
        if (y != ignore_of(c)) {
            double m = -INFINITY, s = 0;
            for (int64_t j = 0; j < C; j++)
                m = fmax(m, xr[j]);
            for (int64_t j = 0; j < C; j++)
                s += exp(xr[j] - m);
            lse = m + log(s);
            double wy = w ? w[y] : 1.0, smooth = 0;
            for (int64_t j = 0; j < C; j++)
                smooth -= (w ? w[j] : 1.0) * (xr[j] - lse);
            loss = (1 - e) * -wy * (xr[y] - lse) + e / (double)C * smooth;
            if (dx) {
                double g = c->mode == MODE_FUSED ? c->grad_scale : dloss[c->reduction == FILO_LOSS_NONE ? r : 0];
                if (c->reduction == FILO_LOSS_MEAN)
                    g /= W;
                for (int64_t j = 0; j < C; j++) {
                    double p = exp(xr[j] - lse);
                    dx[r * C + j] = g * (p * ((1 - e) * wy + e * wsum / (double)C) - (j == y ? (1 - e) * wy : 0.0) -
                                         e / (double)C * (w ? w[j] : 1.0));
                }
            }
        } else if (dx) {
            for (int64_t j = 0; j < C; j++)
                dx[r * C + j] = 0;
        }
        if (lse_out)
            lse_out[r] = lse;
        if (loss_out && c->reduction == FILO_LOSS_NONE)
            loss_out[r] = loss;
        total += loss;
    }
    if (loss_out && c->reduction != FILO_LOSS_NONE)
        loss_out[0] = c->reduction == FILO_LOSS_MEAN ? total / W : total;
}

/* Deterministic targets in [0, C), with every `ignore_every`-th row (from row 1) ignored (0: none). */
static void make_targets(ce_ctx *c, int ignore_every, uint64_t seed)
{
    double v[MAX_ROWS];
    filo_test_fill_random(v, c->rows, seed, 0.0, (double)c->C);
    for (int64_t r = 0; r < c->rows; r++) {
        c->target[r] = (int64_t)floor(v[r]);
        if (c->target[r] >= c->C)
            c->target[r] = c->C - 1;
        if (ignore_every > 0 && r % ignore_every == 1)
            c->target[r] = ignore_of(c);
    }
}

static parity_input input(filo_dtype t, int ndim, const int64_t *shape, double lo, double hi, int transpose)
{
    parity_input p = {.dtype = t, .ndim = ndim, .lo = lo, .hi = hi, .transpose_last = transpose};
    if (ndim > 0)
        memcpy(p.shape, shape, sizeof(int64_t) * (size_t)ndim);
    return p;
}

typedef struct case_opts {
    filo_dtype dtype;
    int mode, weights;
    double smoothing;
    filo_loss_reduction reduction;
    filo_dtype target_dtype;
    int ignore_every;
    double lo, hi;
    int transpose;
    int offset_view;
    int64_t ignore_index; /* 0: IGNORE */
} case_opts;

static void ce_case(case_opts k, int ndim, const int64_t *shape)
{
    ce_ctx c = {.mode = k.mode, .weights = k.weights, .smoothing = k.smoothing, .reduction = k.reduction,
                .target_dtype = k.target_dtype, .grad_scale = 0.75, .offset_view = k.offset_view,
                .ignore_index = k.ignore_index};
    c.C = shape[ndim - 1];
    c.lead_ndim = ndim - 1;
    c.rows = 1;
    for (int i = 0; i < ndim - 1; i++) {
        c.lead[i] = shape[i];
        c.rows *= shape[i];
    }
    cr_assert(c.rows <= MAX_ROWS);
    make_targets(&c, k.ignore_every, 17 + (uint64_t)c.C);
    char name[200];
    snprintf(name, sizeof name, "cross_entropy %s %s rows=%lld C=%lld %s%s smoothing=%g %s%s", mode_names[k.mode],
             filo_dtype_name(k.dtype), (long long)c.rows, (long long)c.C, red_names[k.reduction],
             k.weights ? " weighted" : "", k.smoothing, filo_dtype_name(k.target_dtype),
             k.transpose ? " transposed" : (k.offset_view ? " offset view" : ""));
    parity_case pc = {.name = name, .run = run_ce, .reference = reference_ce, .ctx = &c, .seed = 5 + (uint64_t)c.C};
    pc.inputs[pc.n_inputs++] = input(k.dtype, ndim, shape, k.lo, k.hi, k.transpose);
    if (k.weights)
        pc.inputs[pc.n_inputs++] = input(acc_dtype(k.dtype), 1, &c.C, 0.25, 2.0, 0);
    if (k.mode == MODE_BACKWARD) {
        int none = k.reduction == FILO_LOSS_NONE;
        pc.inputs[pc.n_inputs++] = input(acc_dtype(k.dtype), none ? ndim - 1 : 0, shape, 0.5, 1.5, 0);
    }
    pc.n_outputs = k.mode == MODE_BACKWARD ? 1 : 2;
    pc.rtol = parity_default_rtol(k.dtype);
    /* Gradients p - e/C cancel to near zero: allow an error relative to 1/C as well. */
    pc.atol = pc.rtol / (double)c.C;
    /* With one class the gradient is exactly 0 and only rounding is left: the relative L2 error
     * means nothing there, the elementwise atol still holds. */
    if (c.C == 1)
        pc.norm_tol = 1e30;
    if (k.lo > 100) /* logits near 1e4: x - lse has the absolute error of an f32 lse near 1e4 */
        pc.atol = pc.rtol;
    parity_run(&pc);
}

static case_opts opts_of(filo_dtype t, int mode, int weights, double smoothing, filo_loss_reduction red)
{
    case_opts k = {.dtype = t, .mode = mode, .weights = weights, .smoothing = smoothing, .reduction = red,
                   .target_dtype = FILO_I64, .ignore_every = 3, .lo = -3.0, .hi = 3.0};
    return k;
}

/* Every option combination for one logits dtype, on [7, 33] logits (a row per warp) and on
 * [3, 300] (a row per block); i32 targets on half of them. */
static void sweep(filo_dtype t)
{
    static const int64_t small[2] = {7, 33}, wide[2] = {3, 300};
    int n = 0;
    for (int red = 0; red < 3; red++)
        for (int weights = 0; weights < 2; weights++)
            for (int sm = 0; sm < 2; sm++)
                for (int mode = 0; mode < 3; mode++) {
                    if (mode == MODE_FUSED && red == FILO_LOSS_NONE)
                        continue;
                    case_opts k = opts_of(t, mode, weights, sm ? 0.1 : 0.0, (filo_loss_reduction)red);
                    k.target_dtype = n++ % 2 ? FILO_I32 : FILO_I64;
                    ce_case(k, 2, small);
                    ce_case(k, 2, wide);
                }
}

Test(loss, options_f32) { sweep(FILO_F32); }
Test(loss, options_f64) { sweep(FILO_F64); }
Test(loss, options_bf16) { sweep(FILO_BF16); }
Test(loss, options_f16) { sweep(FILO_F16); }

/* C = 1, 7, 33, 129 with 1, 7 and 33 rows; a 3-D and a 1-D (0-dim target) logits. */
Test(loss, odd_shapes)
{
    static const int64_t cols[] = {1, 7, 33, 129}, rows[] = {1, 7, 33};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 3; j++) {
            int64_t shape[2] = {rows[j], cols[i]};
            ce_case(opts_of(FILO_F32, MODE_FORWARD, 1, 0.1, FILO_LOSS_MEAN), 2, shape);
            ce_case(opts_of(FILO_F32, MODE_BACKWARD, 0, 0.0, FILO_LOSS_NONE), 2, shape);
            ce_case(opts_of(FILO_F32, MODE_FUSED, 1, 0.1, FILO_LOSS_SUM), 2, shape);
        }
    int64_t s3[3] = {3, 5, 7}, s1[1] = {129};
    ce_case(opts_of(FILO_BF16, MODE_BACKWARD, 1, 0.1, FILO_LOSS_NONE), 3, s3);
    ce_case(opts_of(FILO_F32, MODE_FORWARD, 0, 0.0, FILO_LOSS_NONE), 1, s1);
    case_opts k = opts_of(FILO_F32, MODE_BACKWARD, 1, 0.1, FILO_LOSS_MEAN);
    k.ignore_every = 0;
    ce_case(k, 1, s1);
}

/* BERT's MLM head (C = 30522) on one and two rows, every mode, f32 and bf16; a row-per-block
 * width that is not a multiple of the vector width. */
Test(loss, vocab_rows)
{
    int64_t s1[2] = {1, 30522}, s2[2] = {2, 30522}, s3[2] = {7, 1023};
    for (int mode = 0; mode < 3; mode++) {
        case_opts k = opts_of(FILO_F32, mode, mode == MODE_FUSED, 0.1, FILO_LOSS_MEAN);
        k.ignore_every = 0;
        ce_case(k, 2, s1);
        k.dtype = FILO_BF16;
        k.reduction = FILO_LOSS_SUM;
        ce_case(k, 2, s2);
        k.dtype = FILO_F16;
        k.ignore_every = 3;
        ce_case(k, 2, s3);
    }
}

/* Non-contiguous logits (the last two dims transposed in memory), and logits near 1e4 where a
 * naive exp overflows. */
Test(loss, strided_and_large_logits)
{
    int64_t shape[2] = {9, 33}, wide[2] = {3, 1000};
    for (int mode = 0; mode < 3; mode++) {
        case_opts k = opts_of(FILO_F32, mode, 1, 0.1, FILO_LOSS_MEAN);
        k.transpose = 1;
        ce_case(k, 2, shape);
        k.dtype = FILO_BF16;
        ce_case(k, 2, shape);
    }
    for (int mode = 0; mode < 3; mode += 2) {
        case_opts k = opts_of(FILO_F32, mode, 0, 0.1, FILO_LOSS_SUM);
        k.lo = 9990.0;
        k.hi = 10010.0;
        ce_case(k, 2, shape);
        ce_case(k, 2, wide);
        k.dtype = FILO_F64;
        ce_case(k, 2, wide);
    }
}

/* An ignore_index that is a valid class (3 of 7, and 5 of 300): those rows are ignored, and
 * targets equal to another class are not. */
Test(loss, ignore_index_in_range)
{
    int64_t s7[2] = {33, 7}, s300[2] = {7, 300};
    for (int red = 0; red < 3; red++)
        for (int mode = 0; mode < 3; mode++) {
            if (mode == MODE_FUSED && red == FILO_LOSS_NONE)
                continue;
            case_opts k = opts_of(FILO_F32, mode, 1, 0.1, (filo_loss_reduction)red);
            k.ignore_index = 3;
            ce_case(k, 2, s7);
            k.ignore_index = 5;
            ce_case(k, 2, s300);
        }
}

/* Logits that start one row into their storage (2-D only): contiguous, so used in place, with
 * rows aligned differently from dlogits' rows (the kernels then load element by element). */
Test(loss, offset_views)
{
    int64_t s33[2] = {7, 33}, s301[2] = {3, 301}, s304[2] = {3, 304};
    for (int mode = 0; mode < 3; mode++) {
        case_opts k = opts_of(FILO_F32, mode, 1, 0.1, FILO_LOSS_MEAN);
        k.offset_view = 1;
        ce_case(k, 2, s33);
        ce_case(k, 2, s301);
        ce_case(k, 2, s304);
        k.dtype = FILO_BF16;
        ce_case(k, 2, s301);
    }
}

/* Every row ignored: MEAN is 0 / 0 = NaN (as PyTorch), SUM and NONE are 0, gradients are 0. */
Test(loss, all_ignored)
{
    int64_t shape[2] = {5, 7};
    for (int red = 0; red < 3; red++)
        for (int mode = 0; mode < 3; mode++) {
            if (mode == MODE_FUSED && red == FILO_LOSS_NONE)
                continue;
            ce_ctx c = {.mode = mode, .weights = 1, .smoothing = 0.1, .reduction = (filo_loss_reduction)red,
                        .target_dtype = FILO_I64, .grad_scale = 1.0, .rows = 5, .C = 7, .lead_ndim = 1, .lead = {5}};
            for (int r = 0; r < 5; r++)
                c.target[r] = IGNORE;
            char name[120];
            snprintf(name, sizeof name, "cross_entropy all ignored %s %s", mode_names[mode], red_names[red]);
            parity_case pc = {.name = name, .run = run_ce, .reference = reference_ce, .ctx = &c, .seed = 3};
            pc.inputs[pc.n_inputs++] = input(FILO_F32, 2, shape, -3, 3, 0);
            pc.inputs[pc.n_inputs++] = input(FILO_F32, 1, &shape[1], 0.25, 2.0, 0);
            if (mode == MODE_BACKWARD)
                pc.inputs[pc.n_inputs++] = input(FILO_F32, red == FILO_LOSS_NONE ? 1 : 0, shape, 0.5, 1.5, 0);
            pc.n_outputs = mode == MODE_BACKWARD ? 1 : 2;
            parity_run(&pc);
        }
    /* The reference's MEAN is NaN: check it is, so the parity above compared NaN with NaN. */
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    double xv[35], tv[5] = {IGNORE, IGNORE, IGNORE, IGNORE, IGNORE};
    filo_test_fill_random(xv, 35, 1, -1, 1);
    int64_t lead = 5;
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 2, shape, xv);
        filo_tensor *t = filo_test_upload(devs[b], FILO_I32, 1, &lead, tv);
        filo_tensor *loss;
        FILO_CHECK(filo_cross_entropy_forward(x, t, NULL, &loss, NULL));
        double *v = filo_test_download(loss);
        cr_assert(isnan(v[0]), "all-ignored MEAN on %s is %g, want NaN", filo_test_backend_name(devs[b]), v[0]);
        free(v);
        filo_tensor_free(x);
        filo_tensor_free(t);
        filo_tensor_free(loss);
    }
}

/* No rows: NONE gives an empty loss, SUM 0, MEAN NaN (0 / 0); dlogits is empty. */
Test(loss, empty_batch)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t shape[2] = {0, 7}, lead = 0;
    for (int b = 0; b < nb; b++) {
        filo_tensor *x, *t, *loss, *lse, *dx, *dl;
        FILO_CHECK(filo_tensor_empty(devs[b], FILO_F32, 2, shape, &x));
        FILO_CHECK(filo_tensor_empty(devs[b], FILO_I64, 1, &lead, &t));
        filo_cross_entropy_options o = filo_cross_entropy_defaults();
        o.reduction = FILO_LOSS_NONE;
        FILO_CHECK(filo_cross_entropy_forward(x, t, &o, &loss, &lse));
        cr_assert_eq(filo_tensor_numel(loss), 0);
        FILO_CHECK(filo_cross_entropy_backward(loss, x, t, lse, &o, &dx));
        cr_assert_eq(filo_tensor_numel(dx), 0);
        filo_tensor_free(loss);
        filo_tensor_free(dx);
        for (int red = 1; red < 3; red++) {
            o.reduction = (filo_loss_reduction)red;
            FILO_CHECK(filo_cross_entropy_fused(x, t, &o, 1.0, &dl, &dx));
            double *v = filo_test_download(dl);
            cr_assert(red == FILO_LOSS_SUM ? v[0] == 0.0 : isnan(v[0]), "empty %s on %s is %g", red_names[red],
                      filo_test_backend_name(devs[b]), v[0]);
            free(v);
            filo_tensor_free(dl);
            filo_tensor_free(dx);
        }
        filo_tensor_free(lse);
        filo_tensor_free(x);
        filo_tensor_free(t);
    }
}

/* ---- PyTorch's own numbers ---- */

/* F.cross_entropy of PyTorch 1.13 (Debian python3-torch) in float64 on these logits, targets
 * (one ignored) and weights: the losses for reduction NONE, SUM, MEAN x weight off/on x label
 * smoothing 0/0.1, and the gradients of sum(loss) for NONE and MEAN with weights and smoothing
 * 0.1. (PyTorch also gives NaN for MEAN over an all-ignored batch, with or without weights.) */
static const double torch_x[20] = {0.5, -1.25, 2.0, 0.75, 0.0625, 1.5, 0.25, -0.5, 3.0, -2.0,
                                   -2.0, 1.0, 0.125, -0.375, 1.75, 0.0, 0.5, -1.0, 2.5, -0.25};
static const double torch_t[4] = {1, IGNORE, 4, 0};
static const double torch_w[5] = {0.5, 1.0, 2.0, 1.5, 0.75};
static const double torch_loss[12][4] = {
    {3.7761906689201652, 0, 0.59455754735919897, 2.7712062330196967},
    {3.6099406689201654, 0, 0.75955754735919889, 2.7362062330196966},
    {3.7761906689201652, 0, 0.44591816051939925, 1.3856031165098484},
    {3.6056460289539678, 0, 0.65095046241376719, 1.5244815216561287},
    {7.1419544492990603}, {7.1057044492990613}, {5.6077119459494131}, {5.7810780130238637},
    {2.3806514830996868}, {2.3685681497663538}, {2.4923164204219614}, {2.5693680057883839},
};
static const double torch_grad_none[20] = {
    0.12381432738351897, -0.89674655664039704, 0.55971420848935671, 0.14182099747741281, 0.071397023290108538,
    0, 0, 0, 0, 0,
    0.00025202654861402479, 0.18591745777968721, 0.045839167337104393, 0.02206408679415707, -0.25407273845956252,
    -0.42463864708788457, 0.038301014706938696, -0.026991285251624808, 0.40078946829415091, 0.012539449338419833};
static const double torch_grad_mean[20] = {
    0.05502858994823065, -0.3985540251735098, 0.24876187043971407, 0.063031554434405695, 0.03173201035115935,
    0, 0, 0, 0, 0,
    0.00011201179938401009, 0.082629981235416525, 0.020372963260935278, 0.0098062607974031372, -0.11292121709313896,
    -0.18872828759461535, 0.017022673203083864, -0.011996126778499915, 0.17812865257517818, 0.0055730885948532581};

static void expect_close(const char *what, filo_device d, filo_dtype t, const double *got, const double *want, int n)
{
    double tol = t == FILO_F64 ? 1e-13 : 2e-6;
    for (int i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= tol * (1 + fabs(want[i])), "%s %s on %s: element %d is %.17g, PyTorch %.17g",
                  what, filo_dtype_name(t), filo_test_backend_name(d), i, got[i], want[i]);
}

Test(loss, pytorch_values)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t shape[2] = {4, 5}, lead = 4, C = 5;
    const double ones[4] = {1, 1, 1, 1}, one = 1;
    const filo_dtype types[2] = {FILO_F64, FILO_F32};
    for (int b = 0; b < nb; b++)
        for (int ti = 0; ti < 2; ti++) {
            filo_dtype t = types[ti];
            filo_tensor *x = filo_test_upload(devs[b], t, 2, shape, torch_x);
            filo_tensor *tg = filo_test_upload(devs[b], FILO_I64, 1, &lead, torch_t);
            filo_tensor *w = filo_test_upload(devs[b], t, 1, &C, torch_w);
            for (int k = 0; k < 12; k++) {
                filo_cross_entropy_options o = filo_cross_entropy_defaults();
                o.reduction = (filo_loss_reduction)(k / 4);
                o.weight = k % 4 >= 2 ? w : NULL;
                o.label_smoothing = k % 2 ? 0.1 : 0.0;
                filo_tensor *loss, *lse, *dx = NULL;
                FILO_CHECK(filo_cross_entropy_forward(x, tg, &o, &loss, &lse));
                double *v = filo_test_download(loss);
                char what[64];
                snprintf(what, sizeof what, "loss case %d", k);
                expect_close(what, devs[b], t, v, torch_loss[k], (int)filo_tensor_numel(loss));
                free(v);
                if (k == 3 || k == 11) {
                    int none = k == 3;
                    filo_tensor *dl = filo_test_upload(devs[b], t, none ? 1 : 0, &lead, none ? ones : &one);
                    FILO_CHECK(filo_cross_entropy_backward(dl, x, tg, lse, &o, &dx));
                    v = filo_test_download(dx);
                    expect_close(none ? "grad none" : "grad mean", devs[b], t, v, none ? torch_grad_none : torch_grad_mean, 20);
                    free(v);
                    filo_tensor_free(dl);
                    filo_tensor_free(dx);
                    if (!none) {
                        filo_tensor *fl;
                        FILO_CHECK(filo_cross_entropy_fused(x, tg, &o, 1.0, &fl, &dx));
                        v = filo_test_download(fl);
                        expect_close("fused loss", devs[b], t, v, torch_loss[k], 1);
                        free(v);
                        v = filo_test_download(dx);
                        expect_close("fused grad", devs[b], t, v, torch_grad_mean, 20);
                        free(v);
                        filo_tensor_free(fl);
                        filo_tensor_free(dx);
                    }
                }
                filo_tensor_free(loss);
                filo_tensor_free(lse);
            }
            filo_tensor_free(x);
            filo_tensor_free(tg);
            filo_tensor_free(w);
        }
}

/* ---- finite differences (f64 on the CPU) ---- */

/* The scalar L = sum_i u_i * loss_i (NONE) or u * loss, for the current logits. */
static double fd_loss(const ce_ctx *c, const int64_t *shape, const double *xv, const double *wv, const double *u)
{
    filo_tensor *x = filo_test_upload(filo_cpu(), FILO_F64, 2, shape, xv);
    filo_tensor *w = c->weights ? filo_test_upload(filo_cpu(), FILO_F64, 1, &shape[1], wv) : NULL;
    filo_tensor *t = upload_targets(c, filo_cpu()), *loss;
    filo_cross_entropy_options o = options_of(c, w);
    FILO_CHECK(filo_cross_entropy_forward(x, t, &o, &loss, NULL));
    double *lv = filo_test_download(loss), l = 0;
    int64_t n = filo_tensor_numel(loss);
    for (int64_t i = 0; i < n; i++)
        l += lv[i] * u[i];
    free(lv);
    filo_tensor_free(x);
    filo_tensor_free(w);
    filo_tensor_free(t);
    filo_tensor_free(loss);
    return l;
}

static void gradient_check(int weights, double smoothing, filo_loss_reduction red)
{
    const int64_t shape[2] = {5, 7}, n = 35;
    ce_ctx c = {.weights = weights, .smoothing = smoothing, .reduction = red, .target_dtype = FILO_I64,
                .rows = 5, .C = 7, .lead_ndim = 1, .lead = {5}};
    make_targets(&c, 3, 23);
    double xv[35], wv[7], u[5];
    filo_test_fill_random(xv, n, 31, -2, 2);
    filo_test_fill_random(wv, 7, 32, 0.25, 2);
    filo_test_fill_random(u, 5, 33, 0.5, 1.5);
    int none = red == FILO_LOSS_NONE;
    filo_tensor *x = filo_test_upload(filo_cpu(), FILO_F64, 2, shape, xv);
    filo_tensor *w = weights ? filo_test_upload(filo_cpu(), FILO_F64, 1, &shape[1], wv) : NULL;
    filo_tensor *t = upload_targets(&c, filo_cpu());
    filo_tensor *dl = filo_test_upload(filo_cpu(), FILO_F64, none ? 1 : 0, shape, u);
    filo_tensor *loss, *lse, *dx, *fl, *fdx;
    filo_cross_entropy_options o = options_of(&c, w);
    FILO_CHECK(filo_cross_entropy_forward(x, t, &o, &loss, &lse));
    FILO_CHECK(filo_cross_entropy_backward(dl, x, t, lse, &o, &dx));
    double *analytic = filo_test_download(dx);
    const double step = 1e-6;
    for (int64_t i = 0; i < n; i++) {
        double keep = xv[i];
        xv[i] = keep + step;
        double lp = fd_loss(&c, shape, xv, wv, u);
        xv[i] = keep - step;
        double lm = fd_loss(&c, shape, xv, wv, u);
        xv[i] = keep;
        double numeric = (lp - lm) / (2 * step), a = analytic[i];
        cr_assert(fabs(numeric - a) <= 1e-7 + 1e-6 * fabs(a),
                  "%s%s smoothing %g: dlogits[%lld] analytic %.10g, finite difference %.10g", red_names[red],
                  weights ? " weighted" : "", smoothing, (long long)i, a, numeric);
    }
    /* The fused call gives the backward's dlogits for dloss = grad_scale. */
    if (!none) {
        FILO_CHECK(filo_cross_entropy_fused(x, t, &o, u[0], &fl, &fdx));
        double *fv = filo_test_download(fdx), *lv = filo_test_download(loss), *flv = filo_test_download(fl);
        cr_assert(fabs(flv[0] - lv[0]) <= 1e-12 * fabs(lv[0]), "fused loss %.17g, forward %.17g", flv[0], lv[0]);
        for (int64_t i = 0; i < n; i++)
            cr_assert(fabs(fv[i] - analytic[i]) <= 1e-12 * fabs(analytic[i]) + 1e-15, "fused dlogits[%lld] %.17g, backward %.17g",
                      (long long)i, fv[i], analytic[i]);
        free(fv);
        free(lv);
        free(flv);
        filo_tensor_free(fl);
        filo_tensor_free(fdx);
    }
    free(analytic);
    filo_tensor *all[] = {x, w, t, dl, loss, lse, dx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}

Test(loss, finite_difference_gradients)
{
    for (int red = 0; red < 3; red++)
        for (int weights = 0; weights < 2; weights++)
            for (int sm = 0; sm < 2; sm++)
                gradient_check(weights, sm ? 0.1 : 0.0, (filo_loss_reduction)red);
}

/* ---- CUDA: bitwise reproducible reductions, and out-of-range targets ---- */

Test(loss, cuda_bitwise_deterministic)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs), ran = 0;
    const int64_t rows = 600, C = 33;
    int64_t shape[2] = {rows, C};
    double *xv = malloc(sizeof(double) * (size_t)(rows * C)), tv[600], wv[33];
    filo_test_fill_random(xv, rows * C, 1, -4, 4);
    filo_test_fill_random(tv, rows, 2, 0, (double)C);
    filo_test_fill_random(wv, C, 3, 0.25, 2);
    for (int64_t r = 0; r < rows; r++)
        tv[r] = r % 4 == 0 ? IGNORE : floor(tv[r]);
    for (int b = 0; b < nb; b++) {
        if (devs[b].type != FILO_DEVICE_CUDA)
            continue;
        ran++;
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 2, shape, xv);
        filo_tensor *t = filo_test_upload(devs[b], FILO_I64, 1, shape, tv);
        filo_tensor *w = filo_test_upload(devs[b], FILO_F32, 1, &C, wv);
        filo_cross_entropy_options o = filo_cross_entropy_defaults();
        o.weight = w;
        o.label_smoothing = 0.1;
        uint32_t bits[2][2];
        for (int run = 0; run < 2; run++) {
            filo_tensor *loss, *l2, *dx;
            FILO_CHECK(filo_cross_entropy_forward(x, t, &o, &loss, NULL));
            FILO_CHECK(filo_cross_entropy_fused(x, t, &o, 1.0, &l2, &dx));
            FILO_CHECK(filo_tensor_to_host(loss, &bits[run][0], 4));
            FILO_CHECK(filo_tensor_to_host(l2, &bits[run][1], 4));
            filo_tensor_free(loss);
            filo_tensor_free(l2);
            filo_tensor_free(dx);
        }
        cr_assert(memcmp(bits[0], bits[1], sizeof bits[0]) == 0, "MEAN loss differs between runs on %s",
                  filo_test_backend_name(devs[b]));
        filo_tensor_free(x);
        filo_tensor_free(t);
        filo_tensor_free(w);
    }
    cr_log_info("determinism checked on %d cuda backend(s)", ran);
    free(xv);
}

/* A target outside [0, C): the CPU fails naming the row; CUDA gives that row NaN and nothing else. */
Test(loss, out_of_range_target)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nb = filo_test_backends(devs);
    int64_t shape[2] = {3, 5}, lead = 3;
    double xv[15], tv[3] = {1, 7, -3};
    filo_test_fill_random(xv, 15, 4, -1, 1);
    for (int b = 0; b < nb; b++) {
        filo_tensor *x = filo_test_upload(devs[b], FILO_F32, 2, shape, xv);
        filo_tensor *t = filo_test_upload(devs[b], FILO_I64, 1, &lead, tv);
        filo_cross_entropy_options o = filo_cross_entropy_defaults();
        o.reduction = FILO_LOSS_NONE;
        filo_tensor *loss, *lse, *dx, *dl;
        if (devs[b].type == FILO_DEVICE_CPU) {
            FILO_CHECK_FAILS(filo_cross_entropy_forward(x, t, &o, &loss, &lse), FILO_ERR_INVALID_ARG,
                             "target 7 at row 1 is outside [0, 5)");
            o.reduction = FILO_LOSS_MEAN;
            FILO_CHECK_FAILS(filo_cross_entropy_fused(x, t, &o, 1.0, &loss, &dx), FILO_ERR_INVALID_ARG,
                             "filo_cross_entropy_fused");
        } else {
            FILO_CHECK(filo_cross_entropy_forward(x, t, &o, &loss, &lse));
            FILO_CHECK(filo_cross_entropy_backward(loss, x, t, lse, &o, &dx));
            double *lv = filo_test_download(loss), *dv = filo_test_download(dx);
            cr_assert(isfinite(lv[0]) && isnan(lv[1]) && isnan(lv[2]), "losses %g %g %g", lv[0], lv[1], lv[2]);
            for (int j = 0; j < 5; j++)
                cr_assert(isfinite(dv[j]) && isnan(dv[5 + j]) && isnan(dv[10 + j]), "dlogits column %d", j);
            free(lv);
            free(dv);
            filo_tensor_free(loss);
            filo_tensor_free(lse);
            filo_tensor_free(dx);
            o.reduction = FILO_LOSS_SUM;
            FILO_CHECK(filo_cross_entropy_fused(x, t, &o, 1.0, &dl, &dx));
            lv = filo_test_download(dl);
            cr_assert(isnan(lv[0]));
            free(lv);
            filo_tensor_free(dl);
            filo_tensor_free(dx);
        }
        filo_tensor_free(x);
        filo_tensor_free(t);
    }
}

/* ---- bad inputs ---- */

static filo_tensor *cpu_tensor(filo_dtype t, int ndim, const int64_t *shape)
{
    filo_tensor *r;
    FILO_CHECK(filo_tensor_full(filo_cpu(), t, ndim, shape, 1.0, &r));
    return r;
}

Test(loss, bad_inputs)
{
    int64_t s47[2] = {4, 7}, s40[2] = {4, 0}, s4[1] = {4}, s5[1] = {5}, c7[1] = {7}, c8[1] = {8};
    filo_tensor *x = cpu_tensor(FILO_F32, 2, s47), *xi = cpu_tensor(FILO_I32, 2, s47), *x0 = cpu_tensor(FILO_F32, 0, NULL);
    filo_tensor *xe = cpu_tensor(FILO_F32, 2, s40), *x64 = cpu_tensor(FILO_F64, 2, s47);
    filo_tensor *t = cpu_tensor(FILO_I64, 1, s4), *t5 = cpu_tensor(FILO_I64, 1, s5), *tf = cpu_tensor(FILO_F32, 1, s4);
    filo_tensor *tu8 = cpu_tensor(FILO_U8, 1, s4);
    filo_tensor *w = cpu_tensor(FILO_F32, 1, c7), *w8 = cpu_tensor(FILO_F32, 1, c8), *w64 = cpu_tensor(FILO_F64, 1, c7);
    filo_tensor *st4 = cpu_tensor(FILO_F32, 1, s4), *st5 = cpu_tensor(FILO_F32, 1, s5), *st64 = cpu_tensor(FILO_F64, 1, s4);
    filo_tensor *sc = cpu_tensor(FILO_F32, 0, NULL);
    filo_tensor *loss, *lse, *dx;
    filo_cross_entropy_options o = filo_cross_entropy_defaults();

    FILO_CHECK_FAILS(filo_cross_entropy_forward(NULL, t, NULL, &loss, &lse), FILO_ERR_INVALID_ARG,
                     "filo_cross_entropy_forward: logits is NULL");
    FILO_CHECK_FAILS(filo_cross_entropy_forward(xi, t, NULL, &loss, &lse), FILO_ERR_DTYPE, "i32[4, 7]");
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x0, t, NULL, &loss, &lse), FILO_ERR_SHAPE, "at least one class");
    FILO_CHECK_FAILS(filo_cross_entropy_forward(xe, t, NULL, &loss, &lse), FILO_ERR_SHAPE, "f32[4, 0]");
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x, NULL, NULL, &loss, &lse), FILO_ERR_INVALID_ARG, "target is NULL");
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x, t5, NULL, &loss, &lse), FILO_ERR_SHAPE,
                     "target i64[5] cpu must have the leading shape of logits f32[4, 7]");
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x, tf, NULL, &loss, &lse), FILO_ERR_DTYPE, "target f32[4] cpu must be i64 or i32");
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x, tu8, NULL, &loss, &lse), FILO_ERR_DTYPE, "u8[4]");
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x, t, NULL, NULL, &lse), FILO_ERR_INVALID_ARG, "loss is NULL");
    o.weight = w8;
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x, t, &o, &loss, &lse), FILO_ERR_SHAPE, "weight f32[8] cpu must have shape [7]");
    o.weight = w64;
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x, t, &o, &loss, &lse), FILO_ERR_DTYPE, "weight f64[7] cpu must be f32");
    o.weight = w;
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x64, t, &o, &loss, &lse), FILO_ERR_DTYPE, "must be f64 for logits f64[4, 7]");
    o.weight = NULL;
    o.label_smoothing = 1.5;
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x, t, &o, &loss, &lse), FILO_ERR_INVALID_ARG, "label_smoothing must be in [0, 1]");
    o.label_smoothing = NAN;
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x, t, &o, &loss, &lse), FILO_ERR_INVALID_ARG, "label_smoothing");
    o.label_smoothing = -0.1;
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x, t, &o, &loss, &lse), FILO_ERR_INVALID_ARG, "label_smoothing");
    o.label_smoothing = 0;
    o.reduction = (filo_loss_reduction)7;
    FILO_CHECK_FAILS(filo_cross_entropy_forward(x, t, &o, &loss, &lse), FILO_ERR_INVALID_ARG, "reduction");
    o.reduction = FILO_LOSS_MEAN;

    /* backward */
    FILO_CHECK_FAILS(filo_cross_entropy_backward(sc, x, t, NULL, &o, &dx), FILO_ERR_INVALID_ARG, "lse is NULL");
    FILO_CHECK_FAILS(filo_cross_entropy_backward(sc, x, t, st5, &o, &dx), FILO_ERR_SHAPE,
                     "filo_cross_entropy_backward: lse f32[5] cpu must have the leading shape");
    FILO_CHECK_FAILS(filo_cross_entropy_backward(sc, x, t, st64, &o, &dx), FILO_ERR_DTYPE, "lse f64[4] cpu must be f32");
    FILO_CHECK_FAILS(filo_cross_entropy_backward(st4, x, t, st4, &o, &dx), FILO_ERR_SHAPE,
                     "dloss f32[4] cpu must be 0-dim for a SUM/MEAN reduction");
    o.reduction = FILO_LOSS_NONE;
    FILO_CHECK_FAILS(filo_cross_entropy_backward(sc, x, t, st4, &o, &dx), FILO_ERR_SHAPE, "dloss f32[] cpu must have the leading shape");
    FILO_CHECK_FAILS(filo_cross_entropy_backward(st4, x, t, st4, &o, NULL), FILO_ERR_INVALID_ARG, "dlogits is NULL");
    FILO_CHECK_FAILS(filo_cross_entropy_backward(NULL, x, t, st4, &o, &dx), FILO_ERR_INVALID_ARG, "dloss is NULL");

    /* fused */
    FILO_CHECK_FAILS(filo_cross_entropy_fused(x, t, &o, 1.0, &loss, &dx), FILO_ERR_INVALID_ARG, "needs a 0-dim loss");
    o.reduction = FILO_LOSS_SUM;
    FILO_CHECK_FAILS(filo_cross_entropy_fused(x, t, &o, INFINITY, &loss, &dx), FILO_ERR_INVALID_ARG, "grad_scale");
    FILO_CHECK_FAILS(filo_cross_entropy_fused(x, t, &o, 1.0, &loss, NULL), FILO_ERR_INVALID_ARG, "output pointer");
    FILO_CHECK_FAILS(filo_cross_entropy_fused(x, t5, &o, 1.0, &loss, &dx), FILO_ERR_SHAPE, "filo_cross_entropy_fused: target i64[5]");

    if (filo_cuda_device_count() > 0) {
        filo_tensor *tc, *wc;
        FILO_CHECK(filo_tensor_to(t, filo_cuda(0), &tc));
        FILO_CHECK(filo_tensor_to(w, filo_cuda(0), &wc));
        FILO_CHECK_FAILS(filo_cross_entropy_forward(x, tc, NULL, &loss, &lse), FILO_ERR_DEVICE,
                         "target i64[4] cuda:0 is not on the device of logits f32[4, 7] cpu");
        o.weight = wc;
        FILO_CHECK_FAILS(filo_cross_entropy_fused(x, t, &o, 1.0, &loss, &dx), FILO_ERR_DEVICE, "weight f32[7] cuda:0");
        filo_tensor_free(tc);
        filo_tensor_free(wc);
    }

    filo_tensor *all[] = {x, xi, x0, xe, x64, t, t5, tf, tu8, w, w8, w64, st4, st5, st64, sc};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}
