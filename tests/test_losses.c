/* The losses of filo/losses.h on every backend: forward values against float64 references of
 * PyTorch's formulas (soft targets, weight broadcasting, pos_weight, the three reductions, strided
 * targets) and against numbers PyTorch 1.13 printed (logits of +-100 included); gradients by
 * float64 finite differences and f32/bf16 parity; extreme logits stay finite; SUM/MEAN are
 * reproducible run to run; empty and 0-dim inputs; bad arguments. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "filo/losses.h"
#include "gradcheck.h"

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        filo_status try_s_ = (expr);                                                               \
        if (try_s_ != FILO_OK)                                                                     \
            return try_s_;                                                                         \
    } while (0)

enum { BCE, FOCAL, MSE };

/* ---- float64 references, written as PyTorch / torchvision write them ---- */

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* -w (pw y log s + (1 - y) log(1 - s)): the textbook form (inputs here stay within |x| < 20). */
static double ref_bce(double x, double y, double w, double pw)
{
    double s = sigmoid(x);
    return -w * (pw * y * log(s) + (1 - y) * log(1 - s));
}

/* torchvision.ops.sigmoid_focal_loss */
static double ref_focal(double x, double y, double alpha, double gamma)
{
    double p = sigmoid(x), ce = ref_bce(x, y, 1, 1);
    double p_t = p * y + (1 - p) * (1 - y);
    double l = ce * pow(1 - p_t, gamma);
    if (alpha >= 0)
        l *= alpha * y + (1 - alpha) * (1 - y);
    return l;
}

/* ---- forward against the references ---- */

typedef struct fwd_case {
    int kind;
    int w_ndim;          /* -1: no weight */
    int64_t w_shape[3];
    int pos_weight;
    double alpha, gamma;
    int strided_target;  /* the target is a permuted view */
} fwd_case;

#define D0 3
#define D1 5
#define D2 7
#define N_EL (D0 * D1 * D2)

/* Flat index of the weight element that broadcasts to x's element (i0, i1, i2). */
static int64_t weight_index(const fwd_case *c, int64_t i0, int64_t i1, int64_t i2)
{
    int64_t idx[3] = {i0, i1, i2}, flat = 0;
    for (int j = 0; j < c->w_ndim; j++) {
        int64_t n = c->w_shape[j], k = idx[3 - c->w_ndim + j];
        flat = flat * n + (n == 1 ? 0 : k);
    }
    return flat;
}

/* Runs the case's loss; loss_out receives the loss's values (NONE: N_EL, else 1). */
static filo_status run_forward(const fwd_case *c, filo_loss_reduction red, filo_var *xv, const filo_tensor *y,
                               const filo_tensor *w, const filo_tensor *pw, filo_var **loss)
{
    if (c->kind == BCE) {
        filo_bce_options o = filo_bce_defaults();
        o.reduction = red;
        o.weight = w;
        o.pos_weight = pw;
        return filo_loss_bce_with_logits(xv, y, &o, loss);
    }
    if (c->kind == FOCAL)
        return filo_loss_focal(xv, y, c->alpha, c->gamma, red, loss);
    return filo_loss_mse(xv, NULL, y, red, loss);
}

static void check_forward(const fwd_case *c, filo_device dev, filo_dtype dt, uint64_t seed)
{
    const int64_t shape[3] = {D0, D1, D2}, tshape[3] = {D2, D1, D0};
    double xh[N_EL], yh[N_EL], wh[N_EL], pwh[D2];
    filo_test_fill_random(xh, N_EL, seed, -6.0, 6.0);
    filo_test_fill_random(yh, N_EL, seed + 1, c->kind == MSE ? -3.0 : 0.0, c->kind == MSE ? 3.0 : 1.0);
    filo_test_fill_random(wh, N_EL, seed + 2, 0.1, 2.0);
    filo_test_fill_random(pwh, D2, seed + 3, 0.2, 3.0);
    /* Some hard labels among the soft ones. */
    if (c->kind != MSE)
        for (int i = 0; i < N_EL; i += 4)
            yh[i] = (i / 4) % 2;
    filo_tensor *x = filo_test_upload(dev, dt, 3, shape, xh), *y = NULL, *w = NULL, *pw = NULL;
    if (c->strided_target) {
        /* Stored [D2, D1, D0] and permuted back: element (i, j, k) of the view is yh's. */
        double yt[N_EL];
        for (int i = 0; i < D0; i++)
            for (int j = 0; j < D1; j++)
                for (int k = 0; k < D2; k++)
                    yt[(k * D1 + j) * D0 + i] = yh[(i * D1 + j) * D2 + k];
        filo_tensor *base = filo_test_upload(dev, dt, 3, tshape, yt);
        const int perm[3] = {2, 1, 0};
        FILO_CHECK(filo_tensor_permute(base, perm, &y));
        filo_tensor_free(base);
        cr_assert(!filo_tensor_is_contiguous(y));
    } else {
        y = filo_test_upload(dev, dt, 3, shape, yh);
    }
    if (c->w_ndim >= 0)
        w = filo_test_upload(dev, FILO_F32, c->w_ndim, c->w_shape, wh);
    if (c->pos_weight) {
        const int64_t C = D2;
        pw = filo_test_upload(dev, FILO_F32, 1, &C, pwh);
    }
    /* The references use the values as stored (rounded to dt / f32). */
    double *xr = filo_test_download(x), *yr = filo_test_download(y);
    double *wr = w ? filo_test_download(w) : NULL, *pwr = pw ? filo_test_download(pw) : NULL;
    double ref[N_EL], sum = 0, sum_abs = 0;
    for (int64_t i0 = 0; i0 < D0; i0++)
        for (int64_t i1 = 0; i1 < D1; i1++)
            for (int64_t i2 = 0; i2 < D2; i2++) {
                int64_t i = (i0 * D1 + i1) * D2 + i2;
                double l;
                if (c->kind == BCE)
                    l = ref_bce(xr[i], yr[i], wr ? wr[weight_index(c, i0, i1, i2)] : 1, pwr ? pwr[i2] : 1);
                else if (c->kind == FOCAL)
                    l = ref_focal(xr[i], yr[i], c->alpha, c->gamma);
                else
                    l = (xr[i] - yr[i]) * (xr[i] - yr[i]);
                ref[i] = l;
                sum += l;
                sum_abs += fabs(l);
            }
    /* f32: (1 - y) x + softplus(-x) cancels for a small loss at large |x|, as PyTorch's: the
     * error scales with |x|. */
    double rtol = dt == FILO_F64 ? 1e-12 : 2e-5;
    filo_var *xv;
    FILO_CHECK(filo_var_new(x, 0, &xv));
    for (int red = FILO_LOSS_NONE; red <= FILO_LOSS_MEAN; red++) {
        filo_var *loss = NULL;
        FILO_CHECK(run_forward(c, (filo_loss_reduction)red, xv, y, w, pw, &loss));
        const filo_tensor *lt = filo_var_value(loss);
        cr_assert_eq(lt->dtype, dt == FILO_F64 ? FILO_F64 : FILO_F32);
        cr_assert(filo_device_equal(lt->device, dev));
        double *got = filo_test_download(lt);
        if (red == FILO_LOSS_NONE) {
            cr_assert_eq(lt->ndim, 3);
            for (int i = 0; i < N_EL; i++)
                cr_assert(fabs(got[i] - ref[i]) <= rtol * (fabs(ref[i]) + 0.05 * (1 + fabs(xr[i]))), "kind %d %s %s elem %d: %.9g vs %.9g",
                          c->kind, filo_test_backend_name(dev), filo_dtype_name(dt), i, got[i], ref[i]);
        } else {
            cr_assert_eq(lt->ndim, 0);
            double want = red == FILO_LOSS_SUM ? sum : sum / N_EL;
            double scale = red == FILO_LOSS_SUM ? sum_abs : sum_abs / N_EL;
            cr_assert(fabs(got[0] - want) <= rtol * scale, "kind %d %s %s reduction %d: %.12g vs %.12g", c->kind,
                      filo_test_backend_name(dev), filo_dtype_name(dt), red, got[0], want);
        }
        free(got);
        filo_var_free(loss);
    }
    filo_var_free(xv);
    free(xr);
    free(yr);
    free(wr);
    free(pwr);
    filo_tensor_free(x);
    filo_tensor_free(y);
    filo_tensor_free(w);
    filo_tensor_free(pw);
}

static void check_forward_all(const fwd_case *c, uint64_t seed)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        check_forward(c, devs[d], FILO_F32, seed);
        check_forward(c, devs[d], FILO_F64, seed);
    }
}

Test(losses, bce_forward_weights_and_pos_weight)
{
    const fwd_case cases[] = {
        {.kind = BCE, .w_ndim = -1},
        {.kind = BCE, .w_ndim = -1, .pos_weight = 1},
        {.kind = BCE, .w_ndim = 1, .w_shape = {D2}},
        {.kind = BCE, .w_ndim = 2, .w_shape = {D1, 1}, .pos_weight = 1},
        {.kind = BCE, .w_ndim = 3, .w_shape = {D0, 1, 1}},
        {.kind = BCE, .w_ndim = 0},
        {.kind = BCE, .w_ndim = 3, .w_shape = {D0, D1, D2}, .pos_weight = 1, .strided_target = 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_forward_all(&cases[i], 100 + i);
}

Test(losses, focal_forward)
{
    const fwd_case cases[] = {
        {.kind = FOCAL, .alpha = 0.25, .gamma = 2.0},
        {.kind = FOCAL, .alpha = -1.0, .gamma = 0.0},
        {.kind = FOCAL, .alpha = 0.5, .gamma = 0.5},
        {.kind = FOCAL, .alpha = 0.75, .gamma = 1.5, .strided_target = 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_forward_all(&cases[i], 200 + i);
}

Test(losses, mse_forward)
{
    const fwd_case plain = {.kind = MSE, .w_ndim = -1}, strided = {.kind = MSE, .w_ndim = -1, .strided_target = 1};
    check_forward_all(&plain, 300);
    check_forward_all(&strided, 301);
}

/* ---- PyTorch 1.13's own numbers (float64), printed by
 *   F.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw, reduction=...),
 *   torchvision's sigmoid_focal_loss formula (alpha 0.25, gamma 2) and F.mse_loss ---- */

static const double torch_x[12] = {-2.5, -0.75, 0.0, 0.4, 1.7, 3.2, 100.0, -100.0, 12.0, -9.5, 0.05, -0.3};
static const double torch_y[12] = {0.0, 1.0, 0.3, 0.9, 1.0, 0.0, 1.0, 0.0, 0.25, 0.6, 0.0, 1.0};
static const double torch_w[2] = {0.5, 2.0}; /* [2, 1] */
static const double torch_pw[6] = {1.0, 3.0, 0.5, 2.0, 1.5, 0.25};
static const double torch_bce_none[12] = {
    0.03944486714627482, 1.7053065091723498, 0.29458755173797674, 0.50736448977995485,
    0.12583952203969945, 1.6199766665812152, 0, 0, 18.000010752338586, 22.800239516891612,
    1.4369192960265726, 0.42717762223426348};
static const double torch_bce_mean_grad[12] = {
    0.0031607575008851477, -0.084897337396924122, 0.011458333333333329, -0.027603893574430882,
    -0.0096540790677209221, 0.040034761550134822, 0, 6.2001266267013923e-45, 0.12499910397453717,
    -0.19998004100599717, 0.085416232747368384, -0.023935104867152456};
static const double torch_focal_none[12] = {
    0.00034047607097137693, 0.13110501756948614, 0.10397207708399177, 0.02941206000736446,
    0.001000823451993979, 2.2433497828381324, 0, 0, 3.1640387393668079, 0.92336605017471651,
    0.14152949973322188, 0.070480934059207551};
static const double torch_focal_sum_grad[12] = {
    0.00095668869649717116, -0.16244608131095095, 0.071588830833596698, -0.04287838337225524,
    -0.0026138286820493869, 0.84100829250562925, 0, 0, 0.26369347538821586, -0.097229096885733945,
    0.23894895667322025, -0.10737661714643758};
static const double torch_mse_target[12] = {0.5, -1.0, 2.0, 0.0, 1.0, -3.0, 1, 2, 3, 4, 5, 6};
static const double torch_mse_mean = 1715.3829166666667;

static void check_values(const char *what, filo_device dev, filo_dtype dt, const double *got, const double *want,
                         int n, double rtol, double atol)
{
    for (int i = 0; i < n; i++) {
        cr_assert(isfinite(got[i]), "%s %s %s [%d] is %g", what, filo_test_backend_name(dev), filo_dtype_name(dt), i,
                  got[i]);
        cr_assert(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]), "%s %s %s [%d]: %.12g vs torch %.12g", what,
                  filo_test_backend_name(dev), filo_dtype_name(dt), i, got[i], want[i]);
    }
}

/* Loss (NONE) and the gradient of a reduced loss for the torch case, as doubles. */
static void torch_case_run(filo_device dev, filo_dtype dt, int kind, double *loss_none, double *grad)
{
    const int64_t shape[2] = {2, 6}, wshape[2] = {2, 1}, C = 6;
    filo_tensor *x = filo_test_upload(dev, dt, 2, shape, torch_x);
    /* Targets of 0.3 and 0.6 are exact only in f64. */
    filo_dtype ydt = dt == FILO_F64 ? FILO_F64 : FILO_F32;
    filo_tensor *y = filo_test_upload(dev, ydt, 2, shape, kind == MSE ? torch_mse_target : torch_y);
    filo_tensor *w = filo_test_upload(dev, FILO_F32, 2, wshape, torch_w);
    filo_tensor *pw = filo_test_upload(dev, FILO_F32, 1, &C, torch_pw);
    fwd_case c = {.kind = kind, .alpha = 0.25, .gamma = 2.0};
    filo_loss_reduction red = kind == BCE ? FILO_LOSS_MEAN : kind == FOCAL ? FILO_LOSS_SUM : FILO_LOSS_MEAN;
    filo_var *xv, *l0 = NULL, *l1 = NULL;
    FILO_CHECK(filo_var_new(x, 1, &xv));
    FILO_CHECK(run_forward(&c, FILO_LOSS_NONE, xv, y, kind == BCE ? w : NULL, kind == BCE ? pw : NULL, &l0));
    FILO_CHECK(run_forward(&c, red, xv, y, kind == BCE ? w : NULL, kind == BCE ? pw : NULL, &l1));
    FILO_CHECK(filo_backward(l1, NULL, 0));
    double *a = filo_test_download(filo_var_value(l0)), *g = filo_test_download(filo_var_grad(xv));
    double *r = filo_test_download(filo_var_value(l1));
    if (kind == MSE) {
        loss_none[0] = r[0];
    } else {
        memcpy(loss_none, a, sizeof(double) * 12);
        memcpy(grad, g, sizeof(double) * 12);
    }
    free(a);
    free(g);
    free(r);
    filo_var_free(l0);
    filo_var_free(l1);
    filo_var_free(xv);
    filo_tensor_free(x);
    filo_tensor_free(y);
    filo_tensor_free(w);
    filo_tensor_free(pw);
}

Test(losses, torch_numbers_and_extreme_logits)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    const filo_dtype dts[3] = {FILO_F64, FILO_F32, FILO_BF16};
    for (int d = 0; d < nd; d++)
        for (int k = 0; k < 3; k++) {
            /* torch_x is exact in bf16 but 0.05 and -0.3 (elements 10, 11): bf16 compares with loose tolerances. */
            double rtol = dts[k] == FILO_F64 ? 1e-12 : dts[k] == FILO_F32 ? 1e-5 : 2e-2;
            double atol = dts[k] == FILO_F64 ? 1e-40 : dts[k] == FILO_F32 ? 1e-6 : 1e-2;
            double l[12], g[12];
            torch_case_run(devs[d], dts[k], BCE, l, g);
            check_values("bce", devs[d], dts[k], l, torch_bce_none, 12, rtol, atol);
            check_values("bce grad", devs[d], dts[k], g, torch_bce_mean_grad, 12, rtol, atol);
            torch_case_run(devs[d], dts[k], FOCAL, l, g);
            check_values("focal", devs[d], dts[k], l, torch_focal_none, 12, rtol, atol);
            check_values("focal grad", devs[d], dts[k], g, torch_focal_sum_grad, 12, rtol, atol);
            torch_case_run(devs[d], dts[k], MSE, l, g);
            check_values("mse", devs[d], dts[k], l, &torch_mse_mean, 1, rtol, 0);
        }
}

/* Logits of +-100 and +-1e4 with hard and soft labels: loss and gradient finite for every loss
 * and gamma (including gamma < 1, where (1 - p_t)^(gamma - 1) itself would overflow). */
Test(losses, extreme_logits_stay_finite)
{
    const int64_t shape[1] = {8};
    const double xh[8] = {100, -100, 100, -100, 1e4, -1e4, 1e4, -1e4};
    const double yh[8] = {1, 0, 0, 1, 1, 0, 0.3, 0.7};
    const double gammas[3] = {0.0, 0.5, 2.0};
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    const filo_dtype dts[3] = {FILO_F32, FILO_BF16, FILO_F64};
    for (int d = 0; d < nd; d++)
        for (int k = 0; k < 3; k++)
            for (int kind = BCE; kind <= FOCAL; kind++)
                for (int gi = 0; gi < 3; gi++) {
                    filo_tensor *x = filo_test_upload(devs[d], dts[k], 1, shape, xh);
                    filo_tensor *y = filo_test_upload(devs[d], FILO_F32, 1, shape, yh);
                    filo_var *xv, *loss = NULL;
                    FILO_CHECK(filo_var_new(x, 1, &xv));
                    fwd_case c = {.kind = kind, .alpha = 0.25, .gamma = gammas[gi]};
                    FILO_CHECK(run_forward(&c, FILO_LOSS_SUM, xv, y, NULL, NULL, &loss));
                    FILO_CHECK(filo_backward(loss, NULL, 0));
                    double *l = filo_test_download(filo_var_value(loss)), *g = filo_test_download(filo_var_grad(xv));
                    cr_assert(isfinite(l[0]), "kind %d gamma %g %s %s: loss %g", kind, gammas[gi],
                              filo_test_backend_name(devs[d]), filo_dtype_name(dts[k]), l[0]);
                    for (int i = 0; i < 8; i++)
                        cr_assert(isfinite(g[i]) && fabs(g[i]) <= 1.0, "kind %d gamma %g %s %s: grad[%d] %g", kind,
                                  gammas[gi], filo_test_backend_name(devs[d]), filo_dtype_name(dts[k]), i, g[i]);
                    /* The confident right answers (elements 0, 1, 4, 5) have gradient ~0. */
                    cr_assert(fabs(g[0]) < 1e-30 && fabs(g[4]) == 0.0);
                    free(l);
                    free(g);
                    filo_var_free(loss);
                    filo_var_free(xv);
                    filo_tensor_free(x);
                    filo_tensor_free(y);
                }
}

/* ---- gradients: float64 finite differences on the CPU, f32 and bf16 parity everywhere ---- */

typedef struct grad_args {
    int kind;
    filo_loss_reduction red;
    int has_weight, has_pos_weight; /* inputs 2 and 3 (BCE) */
    double alpha, gamma;
    int target_var;                 /* MSE: the target is input 1 and needs a gradient */
} grad_args;

static filo_status run_grad(void *ctx, filo_var *const *in, filo_var **out)
{
    const grad_args *a = ctx;
    const filo_tensor *y = filo_var_value(in[1]);
    if (a->kind == BCE) {
        filo_bce_options o = filo_bce_defaults();
        o.reduction = a->red;
        o.weight = a->has_weight ? filo_var_value(in[2]) : NULL;
        o.pos_weight = a->has_pos_weight ? filo_var_value(in[a->has_weight ? 3 : 2]) : NULL;
        return filo_loss_bce_with_logits(in[0], y, &o, out);
    }
    if (a->kind == FOCAL)
        return filo_loss_focal(in[0], y, a->alpha, a->gamma, a->red, out);
    return a->target_var ? filo_loss_mse(in[0], in[1], NULL, a->red, out) : filo_loss_mse(in[0], NULL, y, a->red, out);
}

static gradcheck_case grad_case(const char *name, grad_args *a)
{
    gradcheck_case c = {.name = name, .n_inputs = 2, .fn = run_grad, .ctx = a};
    c.inputs[0] = (gradcheck_input){.ndim = 3, .shape = {2, 3, 5}, .lo = -3.0, .hi = 3.0};
    c.inputs[1] = (gradcheck_input){.ndim = 3, .shape = {2, 3, 5}, .lo = 0.05, .hi = 0.95, .no_grad = !a->target_var};
    if (a->kind == MSE)
        c.inputs[1].lo = -2.0, c.inputs[1].hi = 2.0;
    if (a->has_weight)
        c.inputs[c.n_inputs++] = (gradcheck_input){.ndim = 2, .shape = {3, 1}, .lo = 0.2, .hi = 2.0, .no_grad = 1};
    if (a->has_pos_weight)
        c.inputs[c.n_inputs++] = (gradcheck_input){.ndim = 1, .shape = {5}, .lo = 0.2, .hi = 3.0, .no_grad = 1};
    return c;
}

static void check_grads(const char *name, grad_args *a)
{
    gradcheck_case c = grad_case(name, a);
    gradcheck_fd(&c);
    gradcheck_parity(&c, FILO_F32);
}

Test(losses, bce_gradients)
{
    for (int red = FILO_LOSS_NONE; red <= FILO_LOSS_MEAN; red++)
        for (int opt = 0; opt < 4; opt++) {
            grad_args a = {.kind = BCE, .red = (filo_loss_reduction)red, .has_weight = opt & 1, .has_pos_weight = opt >> 1};
            check_grads("bce", &a);
        }
}

Test(losses, focal_gradients)
{
    const double ag[4][2] = {{0.25, 2.0}, {-1.0, 0.0}, {0.5, 0.5}, {0.75, 1.5}};
    for (int red = FILO_LOSS_NONE; red <= FILO_LOSS_MEAN; red++)
        for (int k = 0; k < 4; k++) {
            grad_args a = {.kind = FOCAL, .red = (filo_loss_reduction)red, .alpha = ag[k][0], .gamma = ag[k][1]};
            check_grads("focal", &a);
        }
}

Test(losses, mse_gradients)
{
    for (int red = FILO_LOSS_NONE; red <= FILO_LOSS_MEAN; red++)
        for (int tv = 0; tv < 2; tv++) {
            grad_args a = {.kind = MSE, .red = (filo_loss_reduction)red, .target_var = tv};
            check_grads(tv ? "mse target variable" : "mse target tensor", &a);
        }
}

/* bf16 logits (and targets, weights): the loss is f32, the logits' gradient bf16. */
Test(losses, bf16_parity)
{
    grad_args cases[3] = {{.kind = BCE, .red = FILO_LOSS_MEAN, .has_weight = 1, .has_pos_weight = 1},
                          {.kind = FOCAL, .red = FILO_LOSS_SUM, .alpha = 0.25, .gamma = 2.0},
                          {.kind = MSE, .red = FILO_LOSS_NONE, .target_var = 1}};
    for (int k = 0; k < 3; k++) {
        gradcheck_case c = grad_case("bf16", &cases[k]);
        gradcheck_parity(&c, FILO_BF16);
    }
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    const int64_t shape[2] = {3, 4};
    double xh[12];
    filo_test_fill_random(xh, 12, 9, 0.0, 1.0);
    for (int d = 0; d < nd; d++) {
        filo_tensor *x = filo_test_upload(devs[d], FILO_BF16, 2, shape, xh);
        filo_var *xv, *loss;
        FILO_CHECK(filo_var_new(x, 1, &xv));
        FILO_CHECK(filo_loss_bce_with_logits(xv, x, NULL, &loss));
        cr_assert_eq(filo_var_value(loss)->dtype, FILO_F32);
        FILO_CHECK(filo_backward(loss, NULL, 0));
        cr_assert_eq(filo_var_grad(xv)->dtype, FILO_BF16);
        filo_var_free(loss);
        filo_var_free(xv);
        filo_tensor_free(x);
    }
}

/* ---- reductions: reproducible, empty and 0-dim inputs ---- */

Test(losses, sums_are_reproducible)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    const int64_t shape[2] = {61, 331};
    int64_t n = shape[0] * shape[1];
    double *xh = malloc(sizeof(double) * (size_t)n), *yh = malloc(sizeof(double) * (size_t)n);
    filo_test_fill_random(xh, n, 5, -4.0, 4.0);
    filo_test_fill_random(yh, n, 6, 0.0, 1.0);
    for (int d = 0; d < nd; d++) {
        filo_tensor *x = filo_test_upload(devs[d], FILO_F32, 2, shape, xh), *y = filo_test_upload(devs[d], FILO_F32, 2, shape, yh);
        double *xr = filo_test_download(x), *yr = filo_test_download(y), want = 0, scale = 0;
        for (int64_t i = 0; i < n; i++) {
            double l = ref_bce(xr[i], yr[i], 1, 1);
            want += l;
            scale += fabs(l);
        }
        filo_var *xv;
        FILO_CHECK(filo_var_new(x, 0, &xv));
        float first = 0;
        for (int rep = 0; rep < 3; rep++) {
            filo_bce_options o = filo_bce_defaults();
            filo_var *loss;
            FILO_CHECK(filo_loss_bce_with_logits(xv, y, &o, &loss));
            float v;
            FILO_CHECK(filo_tensor_to_host(filo_var_value(loss), &v, sizeof v));
            if (rep == 0)
                first = v;
            cr_assert(memcmp(&v, &first, sizeof v) == 0, "%s: MEAN %.9g then %.9g", filo_test_backend_name(devs[d]),
                      first, v);
            cr_assert(fabs(v - want / (double)n) <= 1e-5 * scale / (double)n, "%s: %.9g vs %.9g",
                      filo_test_backend_name(devs[d]), v, want / (double)n);
            filo_var_free(loss);
        }
        filo_var_free(xv);
        free(xr);
        free(yr);
        filo_tensor_free(x);
        filo_tensor_free(y);
    }
    free(xh);
    free(yh);
}

Test(losses, empty_and_scalar_inputs)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        const int64_t eshape[2] = {0, 4};
        filo_tensor *x, *y;
        FILO_CHECK(filo_tensor_zeros(devs[d], FILO_F32, 2, eshape, &x));
        FILO_CHECK(filo_tensor_zeros(devs[d], FILO_F32, 2, eshape, &y));
        filo_var *xv, *loss;
        FILO_CHECK(filo_var_new(x, 1, &xv));
        for (int red = FILO_LOSS_NONE; red <= FILO_LOSS_MEAN; red++) {
            FILO_CHECK(filo_loss_mse(xv, NULL, y, (filo_loss_reduction)red, &loss));
            const filo_tensor *lt = filo_var_value(loss);
            if (red == FILO_LOSS_NONE) {
                cr_assert_eq(filo_tensor_numel(lt), 0);
            } else {
                float v;
                FILO_CHECK(filo_tensor_to_host(lt, &v, sizeof v));
                /* PyTorch: the sum of nothing is 0, its mean NaN. */
                cr_assert(red == FILO_LOSS_SUM ? v == 0.0f : isnan(v), "%s reduction %d: %g",
                          filo_test_backend_name(devs[d]), red, v);
                FILO_CHECK(filo_backward(loss, NULL, 0));
                cr_assert_eq(filo_tensor_numel(filo_var_grad(xv)), 0);
            }
            filo_var_free(loss);
        }
        filo_var_free(xv);
        filo_tensor_free(x);
        filo_tensor_free(y);

        /* A 0-dim logit with a [1] pos_weight. */
        const double xs = 0.7, ys = 1.0, pws = 2.0;
        const int64_t one = 1;
        x = filo_test_upload(devs[d], FILO_F32, 0, NULL, &xs);
        y = filo_test_upload(devs[d], FILO_F32, 0, NULL, &ys);
        filo_tensor *pw = filo_test_upload(devs[d], FILO_F32, 1, &one, &pws);
        FILO_CHECK(filo_var_new(x, 1, &xv));
        filo_bce_options o = filo_bce_defaults();
        o.pos_weight = pw;
        o.reduction = FILO_LOSS_NONE;
        FILO_CHECK(filo_loss_bce_with_logits(xv, y, &o, &loss));
        cr_assert_eq(filo_var_value(loss)->ndim, 0);
        float v;
        FILO_CHECK(filo_tensor_to_host(filo_var_value(loss), &v, sizeof v));
        cr_assert(fabs(v - ref_bce((float)xs, 1, 1, 2)) < 1e-6, "%g", v);
        filo_var_free(loss);
        filo_var_free(xv);
        filo_tensor_free(x);
        filo_tensor_free(y);
        filo_tensor_free(pw);
    }
}

/* ---- bad arguments ---- */

Test(losses, bad_arguments)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    const int64_t shape[2] = {2, 3}, other[2] = {3, 2}, c4 = 4, c3 = 3;
    filo_tensor *x, *y, *yo, *yi, *w, *pw4, *xi;
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, shape, &x));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, shape, &y));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, other, &yo));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_I64, 2, shape, &yi));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 2, other, &w));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 1, &c4, &pw4));
    FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_I32, 2, shape, &xi));
    filo_var *xv, *xiv, *loss = NULL;
    FILO_CHECK(filo_var_new(x, 1, &xv));
    FILO_CHECK(filo_var_new(xi, 0, &xiv));
    filo_bce_options o = filo_bce_defaults();

    FILO_CHECK_FAILS(filo_loss_bce_with_logits(NULL, y, NULL, &loss), FILO_ERR_INVALID_ARG, "must not be NULL");
    FILO_CHECK_FAILS(filo_loss_bce_with_logits(xv, NULL, NULL, &loss), FILO_ERR_INVALID_ARG, "target is NULL");
    FILO_CHECK_FAILS(filo_loss_bce_with_logits(xv, yo, NULL, &loss), FILO_ERR_SHAPE, "must have the shape of logits");
    FILO_CHECK_FAILS(filo_loss_bce_with_logits(xv, yi, NULL, &loss), FILO_ERR_DTYPE, "target");
    FILO_CHECK_FAILS(filo_loss_bce_with_logits(xiv, y, NULL, &loss), FILO_ERR_DTYPE, "logits must be");
    o.weight = w;
    FILO_CHECK_FAILS(filo_loss_bce_with_logits(xv, y, &o, &loss), FILO_ERR_SHAPE, "does not broadcast");
    o.weight = NULL;
    o.pos_weight = pw4;
    FILO_CHECK_FAILS(filo_loss_bce_with_logits(xv, y, &o, &loss), FILO_ERR_SHAPE, "pos_weight");
    o.pos_weight = NULL;
    o.reduction = (filo_loss_reduction)7;
    FILO_CHECK_FAILS(filo_loss_bce_with_logits(xv, y, &o, &loss), FILO_ERR_INVALID_ARG, "reduction");
    FILO_CHECK_FAILS(filo_loss_focal(xv, y, 0.25, -1.0, FILO_LOSS_MEAN, &loss), FILO_ERR_INVALID_ARG, "gamma");
    FILO_CHECK_FAILS(filo_loss_focal(xv, y, NAN, 2.0, FILO_LOSS_MEAN, &loss), FILO_ERR_INVALID_ARG, "alpha");
    FILO_CHECK_FAILS(filo_loss_mse(xv, NULL, NULL, FILO_LOSS_MEAN, &loss), FILO_ERR_INVALID_ARG, "neither");
    FILO_CHECK_FAILS(filo_loss_mse(xv, xv, y, FILO_LOSS_MEAN, &loss), FILO_ERR_INVALID_ARG, "both");
    FILO_CHECK_FAILS(filo_loss_mse(xv, NULL, yo, FILO_LOSS_MEAN, &loss), FILO_ERR_SHAPE, "input");
    FILO_CHECK_FAILS(filo_loss_bce_with_logits(xv, y, NULL, NULL), FILO_ERR_INVALID_ARG, "must not be NULL");
    cr_assert(!loss);
    /* A target on another device than the logits. */
    if (nd > 1) {
        filo_tensor *xd;
        FILO_CHECK(filo_tensor_zeros(devs[1], FILO_F32, 2, shape, &xd));
        filo_var *xdv;
        FILO_CHECK(filo_var_new(xd, 1, &xdv));
        FILO_CHECK_FAILS(filo_loss_bce_with_logits(xdv, y, NULL, &loss), FILO_ERR_DEVICE, "not on the device");
        filo_tensor *pwc;
        FILO_CHECK(filo_tensor_zeros(filo_cpu(), FILO_F32, 1, &c3, &pwc));
        filo_tensor *yd;
        FILO_CHECK(filo_tensor_zeros(devs[1], FILO_F32, 2, shape, &yd));
        o = filo_bce_defaults();
        o.pos_weight = pwc;
        FILO_CHECK_FAILS(filo_loss_bce_with_logits(xdv, yd, &o, &loss), FILO_ERR_DEVICE, "pos_weight");
        cr_assert(!loss);
        filo_tensor_free(pwc);
        filo_tensor_free(yd);
        filo_var_free(xdv);
        filo_tensor_free(xd);
    }
    filo_var_free(xv);
    filo_var_free(xiv);
    filo_tensor_free(x);
    filo_tensor_free(y);
    filo_tensor_free(yo);
    filo_tensor_free(yi);
    filo_tensor_free(w);
    filo_tensor_free(pw4);
    filo_tensor_free(xi);
}

/* filo_loss_cross_entropy is filo_ag_cross_entropy: the same values. */
Test(losses, cross_entropy_wrapper)
{
    const int64_t shape[2] = {3, 4}, rows = 3;
    double xh[12];
    const double th[3] = {0, 3, 1};
    filo_test_fill_random(xh, 12, 4, -2.0, 2.0);
    filo_tensor *x = filo_test_upload(filo_cpu(), FILO_F64, 2, shape, xh), *t = filo_test_upload(filo_cpu(), FILO_I64, 1, &rows, th);
    filo_var *xv, *a, *b;
    FILO_CHECK(filo_var_new(x, 0, &xv));
    FILO_CHECK(filo_loss_cross_entropy(xv, t, NULL, &a));
    FILO_CHECK(filo_ag_cross_entropy(xv, t, NULL, &b));
    double va, vb;
    FILO_CHECK(filo_tensor_to_host(filo_var_value(a), &va, sizeof va));
    FILO_CHECK(filo_tensor_to_host(filo_var_value(b), &vb, sizeof vb));
    cr_assert_eq(va, vb);
    filo_var_free(a);
    filo_var_free(b);
    filo_var_free(xv);
    filo_tensor_free(x);
    filo_tensor_free(t);
}
