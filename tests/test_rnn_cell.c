/* Fused LSTM / GRU cells (filo/rnn_cell.h and filo_ag_lstm_cell / filo_ag_gru_cell): the forward
 * against a float64 reference written from the equations on every backend (f32 and bf16 gates,
 * with and without biases, with packed-sequence lengths, gates read from a row-strided view),
 * finite-difference gradients in float64, f32 gradient parity on every backend, bad arguments. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"

#define TRY(expr)                           \
    do {                                    \
        filo_status try_s_ = (expr);        \
        if (try_s_ != FILO_OK)              \
            return try_s_;                  \
    } while (0)

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }

/* The float64 reference of one step for row-major [B, G*H] xg and hg (biases may be NULL);
 * active[b] says whether row b takes the step. */
static void ref_lstm(int64_t B, int64_t H, const double *xg, const double *hg, const double *bi, const double *bh,
                     const double *hp, const double *cp, const int *active, double *h, double *c)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < H; j++) {
            int64_t u = b * H + j;
            if (!active[b]) {
                h[u] = hp[u];
                c[u] = cp[u];
                continue;
            }
            double a[4];
            for (int k = 0; k < 4; k++) {
                int64_t col = k * H + j;
                a[k] = xg[b * 4 * H + col] + hg[b * 4 * H + col] + (bi ? bi[col] : 0) + (bh ? bh[col] : 0);
            }
            double i = sig(a[0]), f = sig(a[1]), g = tanh(a[2]), o = sig(a[3]);
            c[u] = f * cp[u] + i * g;
            h[u] = o * tanh(c[u]);
        }
}

static void ref_gru(int64_t B, int64_t H, const double *xg, const double *hg, const double *bi, const double *bh,
                    const double *hp, const int *active, double *h)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < H; j++) {
            int64_t u = b * H + j;
            if (!active[b]) {
                h[u] = hp[u];
                continue;
            }
            double ax[3], ah[3];
            for (int k = 0; k < 3; k++) {
                int64_t col = k * H + j;
                ax[k] = xg[b * 3 * H + col] + (bi ? bi[col] : 0);
                ah[k] = hg[b * 3 * H + col] + (bh ? bh[col] : 0);
            }
            double r = sig(ax[0] + ah[0]), z = sig(ax[1] + ah[1]), n = tanh(ax[2] + r * ah[2]);
            h[u] = (1 - z) * n + z * hp[u];
        }
}

static double *rounded(filo_dtype dt, int64_t n, const double *v)
{
    filo_tensor *t = filo_test_upload(filo_cpu(), dt, 1, &n, v);
    double *r = filo_test_download(t);
    filo_tensor_free(t);
    return r;
}

static void expect_close(const char *what, filo_device dev, const filo_tensor *t, const double *want, int64_t n,
                         double tol)
{
    double *got = filo_test_download(t);
    cr_assert_eq(filo_tensor_numel(t), n, "%s on %s: %lld elements", what, filo_test_backend_name(dev),
                 (long long)filo_tensor_numel(t));
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= tol * (1 + fabs(want[i])), "%s on %s [%lld]: %.9g, float64 %.9g", what,
                  filo_test_backend_name(dev), (long long)i, got[i], want[i]);
    free(got);
}

/* One forward case on every backend: gates of `dt` (f32 state), xg as columns [2, 2 + G*H) of a
 * wider tensor (a row-strided view). */
static void forward_case(int gru, filo_dtype dt, int biases, int lengths, int64_t B, int64_t H, uint64_t seed)
{
    const int G = gru ? 3 : 4;
    const int64_t GH = G * H, W = GH + 5, step = 2;
    double *xw = malloc(sizeof(double) * (size_t)(B * W)), *hg = malloc(sizeof(double) * (size_t)(B * GH));
    double *xg = malloc(sizeof(double) * (size_t)(B * GH)), *bi = malloc(sizeof(double) * (size_t)GH);
    double *bh = malloc(sizeof(double) * (size_t)GH), *hp = malloc(sizeof(double) * (size_t)(B * H));
    double *cp = malloc(sizeof(double) * (size_t)(B * H)), *h = malloc(sizeof(double) * (size_t)(B * H));
    double *c = malloc(sizeof(double) * (size_t)(B * H));
    filo_test_fill_random(xw, B * W, seed, -2, 2);
    filo_test_fill_random(hg, B * GH, seed + 1, -2, 2);
    filo_test_fill_random(bi, GH, seed + 2, -0.5, 0.5);
    filo_test_fill_random(bh, GH, seed + 3, -0.5, 0.5);
    filo_test_fill_random(hp, B * H, seed + 4, -1, 1);
    filo_test_fill_random(cp, B * H, seed + 5, -1.5, 1.5);
    /* The reference sees the values the gate tensors hold. */
    double *xwr = rounded(dt, B * W, xw), *hgr = rounded(dt, B * GH, hg);
    for (int64_t b = 0; b < B; b++)
        memcpy(xg + b * GH, xwr + b * W + 2, sizeof(double) * (size_t)GH);
    int active[64];
    double lens[64];
    for (int64_t b = 0; b < B; b++) {
        lens[b] = (double)(1 + (b * 7) % 5); /* 1..5 around step 2 */
        active[b] = !lengths || step < (int64_t)lens[b];
    }
    if (gru)
        ref_gru(B, H, xg, hgr, biases ? bi : NULL, biases ? bh : NULL, hp, active, h);
    else
        ref_lstm(B, H, xg, hgr, biases ? bi : NULL, biases ? bh : NULL, hp, cp, active, h, c);
    double tol = dt == FILO_F32 ? 2e-6 : 1e-5;
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int k = 0; k < nd; k++) {
        filo_device dev = devs[k];
        int64_t ws[2] = {B, W}, gs[2] = {B, GH}, ss[2] = {B, H};
        filo_tensor *tw = filo_test_upload(dev, dt, 2, ws, xw), *thg = filo_test_upload(dev, dt, 2, gs, hg);
        filo_tensor *tbi = filo_test_upload(dev, FILO_F32, 1, &GH, bi), *tbh = filo_test_upload(dev, FILO_F32, 1, &GH, bh);
        filo_tensor *thp = filo_test_upload(dev, FILO_F32, 2, ss, hp), *tcp = filo_test_upload(dev, FILO_F32, 2, ss, cp);
        filo_tensor *tl = filo_test_upload(dev, FILO_I32, 1, &B, lens), *txg, *th = NULL, *tc = NULL, *sv = NULL;
        FILO_CHECK(filo_tensor_slice(tw, 1, 2, 2 + GH, 1, &txg));
        if (gru) {
            FILO_CHECK(filo_gru_cell_forward(txg, thg, biases ? tbi : NULL, biases ? tbh : NULL, thp,
                                             lengths ? tl : NULL, step, &th, &sv));
        } else {
            FILO_CHECK(filo_lstm_cell_forward(txg, thg, biases ? tbi : NULL, biases ? tbh : NULL, lengths ? thp : NULL,
                                              tcp, lengths ? tl : NULL, step, &th, &tc, &sv));
            expect_close("lstm c", dev, tc, c, B * H, tol);
        }
        expect_close(gru ? "gru h" : "lstm h", dev, th, h, B * H, tol);
        filo_tensor *all[] = {tw, thg, tbi, tbh, thp, tcp, tl, txg, th, tc, sv};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            filo_tensor_free(all[i]);
    }
    double *all[] = {xw, hg, xg, bi, bh, hp, cp, h, c, xwr, hgr};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

Test(rnn_cell, forward_matches_float64)
{
    for (int gru = 0; gru < 2; gru++)
        for (int biases = 0; biases < 2; biases++)
            for (int lengths = 0; lengths < 2; lengths++) {
                forward_case(gru, FILO_F32, biases, lengths, 5, 7, 11 + (uint64_t)(4 * gru + 2 * biases + lengths));
                forward_case(gru, FILO_BF16, biases, lengths, 3, 9, 31 + (uint64_t)(4 * gru + 2 * biases + lengths));
            }
    forward_case(0, FILO_F16, 1, 1, 4, 33, 5);
    forward_case(1, FILO_F16, 1, 1, 4, 33, 6);
}

/* ---- gradients ---- */

typedef struct cell_args {
    int gru;
    int biases;
    int lengths;
    int64_t B, step;
} cell_args;

/* Inputs: xg, hg, [b_ih, b_hh], h_prev, [c_prev]. Output: [h | c] (LSTM) or h (GRU). lengths
 * (when used) are uploaded to the inputs' device. */
static filo_status run_cell(void *ctx, filo_var *const *in, filo_var **out)
{
    const cell_args *a = ctx;
    int k = 2;
    filo_var *bi = a->biases ? in[k++] : NULL, *bh = a->biases ? in[k++] : NULL;
    filo_var *hp = in[k++], *cp = a->gru ? NULL : in[k++];
    filo_tensor *lengths = NULL;
    if (a->lengths) {
        int64_t len[16];
        for (int64_t b = 0; b < a->B; b++)
            len[b] = 1 + (b * 3) % 4; /* 1..4 around step 2 */
        TRY(filo_tensor_from_host(filo_var_value(in[0])->device, FILO_I64, 1, &a->B, len, &lengths));
    }
    filo_status s;
    if (a->gru) {
        s = filo_ag_gru_cell(in[0], in[1], bi, bh, hp, lengths, a->step, out);
    } else {
        filo_var *h = NULL, *c = NULL;
        s = filo_ag_lstm_cell(in[0], in[1], bi, bh, hp, cp, lengths, a->step, &h, &c);
        if (s == FILO_OK) {
            filo_var *both[2] = {h, c};
            s = filo_ag_concat(both, 2, 1, out);
        }
        filo_var_free(h);
        filo_var_free(c);
    }
    filo_tensor_free(lengths);
    return s;
}

static gradcheck_case cell_case(cell_args *a, int64_t H)
{
    int G = a->gru ? 3 : 4;
    gradcheck_case c = {.name = a->gru ? "gru_cell" : "lstm_cell", .fn = run_cell, .ctx = a};
    c.inputs[c.n_inputs++] = (gradcheck_input){.ndim = 2, .shape = {a->B, G * H}, .lo = -1.5, .hi = 1.5};
    c.inputs[c.n_inputs++] = (gradcheck_input){.ndim = 2, .shape = {a->B, G * H}, .lo = -1.5, .hi = 1.5};
    if (a->biases) {
        c.inputs[c.n_inputs++] = (gradcheck_input){.ndim = 1, .shape = {G * H}, .lo = -0.5, .hi = 0.5};
        c.inputs[c.n_inputs++] = (gradcheck_input){.ndim = 1, .shape = {G * H}, .lo = -0.5, .hi = 0.5};
    }
    /* The LSTM reads h_prev only with lengths: without them it is a constant. */
    c.inputs[c.n_inputs++] =
        (gradcheck_input){.ndim = 2, .shape = {a->B, H}, .lo = -1, .hi = 1, .no_grad = !a->gru && !a->lengths};
    if (!a->gru)
        c.inputs[c.n_inputs++] = (gradcheck_input){.ndim = 2, .shape = {a->B, H}, .lo = -1.5, .hi = 1.5};
    return c;
}

Test(rnn_cell, finite_differences)
{
    for (int gru = 0; gru < 2; gru++)
        for (int biases = 0; biases < 2; biases++)
            for (int lengths = 0; lengths < 2; lengths++) {
                cell_args a = {gru, biases, lengths, 4, 2};
                gradcheck_case c = cell_case(&a, 3);
                c.seed = (uint64_t)(1 + 4 * gru + 2 * biases + lengths);
                gradcheck_fd(&c);
            }
}

Test(rnn_cell, parity)
{
    for (int gru = 0; gru < 2; gru++)
        for (int lengths = 0; lengths < 2; lengths++) {
            cell_args a = {gru, 1, lengths, 5, 2};
            gradcheck_case c = cell_case(&a, 19);
            c.seed = (uint64_t)(40 + 2 * gru + lengths);
            gradcheck_parity(&c, FILO_F32);
        }
}

/* Only some inputs need gradients: the others get none and the rest are still right. */
Test(rnn_cell, constant_inputs)
{
    for (int gru = 0; gru < 2; gru++) {
        cell_args a = {gru, 1, 1, 3, 1};
        gradcheck_case c = cell_case(&a, 2);
        for (int only = 0; only < c.n_inputs; only++) {
            gradcheck_case d = c;
            for (int k = 0; k < d.n_inputs; k++)
                d.inputs[k].no_grad = k != only;
            gradcheck_fd(&d);
        }
    }
}

/* ---- bad arguments ---- */

Test(rnn_cell, bad_arguments)
{
    filo_device cpu = filo_cpu();
    const int64_t B = 2, H = 3, s4[2] = {B, 4 * H}, s3[2] = {B, 3 * H}, ss[2] = {B, H}, bad[2] = {B, 4 * H + 1};
    filo_tensor *xg, *hg, *xg3, *hp, *cp, *xbad, *c64, *i32, *h = NULL, *c = NULL, *sv = NULL;
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 2, s4, &xg));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 2, s4, &hg));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 2, s3, &xg3));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 2, ss, &hp));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 2, ss, &cp));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 2, bad, &xbad));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F64, 2, ss, &c64));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_I32, 2, s4, &i32));
    int64_t three = 3, one = 1;
    filo_tensor *len3, *len2, *lenf, *b_bad;
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_I64, 1, &three, &len3));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_I64, 1, &B, &len2));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 1, &B, &lenf));
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F32, 1, &one, &b_bad));

    FILO_CHECK_FAILS(filo_lstm_cell_forward(NULL, hg, NULL, NULL, NULL, cp, NULL, 0, &h, &c, &sv), FILO_ERR_INVALID_ARG,
                     "xg and hg");
    FILO_CHECK_FAILS(filo_lstm_cell_forward(xbad, hg, NULL, NULL, NULL, cp, NULL, 0, &h, &c, &sv), FILO_ERR_SHAPE,
                     "xg f32[2, 13]");
    FILO_CHECK_FAILS(filo_lstm_cell_forward(xg, xg3, NULL, NULL, NULL, cp, NULL, 0, &h, &c, &sv), FILO_ERR_SHAPE, "hg");
    FILO_CHECK_FAILS(filo_lstm_cell_forward(i32, hg, NULL, NULL, NULL, cp, NULL, 0, &h, &c, &sv), FILO_ERR_DTYPE,
                     "f32, f64, bf16 or f16");
    FILO_CHECK_FAILS(filo_lstm_cell_forward(xg, hg, NULL, NULL, NULL, c64, NULL, 0, &h, &c, &sv), FILO_ERR_DTYPE,
                     "c_prev");
    FILO_CHECK_FAILS(filo_lstm_cell_forward(xg, hg, b_bad, NULL, NULL, cp, NULL, 0, &h, &c, &sv), FILO_ERR_SHAPE,
                     "b_ih");
    FILO_CHECK_FAILS(filo_lstm_cell_forward(xg, hg, NULL, NULL, hp, cp, len3, 0, &h, &c, &sv), FILO_ERR_SHAPE,
                     "lengths");
    FILO_CHECK_FAILS(filo_lstm_cell_forward(xg, hg, NULL, NULL, hp, cp, lenf, 0, &h, &c, &sv), FILO_ERR_DTYPE,
                     "i32 or i64");
    FILO_CHECK_FAILS(filo_lstm_cell_forward(xg, hg, NULL, NULL, NULL, cp, len2, 0, &h, &c, &sv), FILO_ERR_INVALID_ARG,
                     "h_prev is needed");
    FILO_CHECK_FAILS(filo_lstm_cell_forward(xg, hg, NULL, NULL, NULL, cp, NULL, -1, &h, &c, &sv), FILO_ERR_INVALID_ARG,
                     "step");
    FILO_CHECK_FAILS(filo_lstm_cell_forward(xg, hg, NULL, NULL, NULL, cp, NULL, 0, &h, NULL, &sv), FILO_ERR_INVALID_ARG,
                     "output pointer");
    FILO_CHECK_FAILS(filo_gru_cell_forward(xg, hg, NULL, NULL, hp, NULL, 0, &h, &sv), FILO_ERR_SHAPE,
                     "3 gates of hidden 3");
    FILO_CHECK_FAILS(filo_gru_cell_forward(xg3, xg3, NULL, NULL, NULL, NULL, 0, &h, &sv), FILO_ERR_INVALID_ARG,
                     "h_prev is NULL");
    FILO_CHECK_FAILS(filo_lstm_cell_backward(hp, NULL, xg3, cp, cp, NULL, 0, FILO_F32, &h, NULL, NULL), FILO_ERR_SHAPE,
                     "saved");
    FILO_CHECK_FAILS(filo_lstm_cell_backward(hp, NULL, xg, cp, cp, NULL, 0, FILO_I32, &h, NULL, NULL), FILO_ERR_DTYPE,
                     "gates_dtype");
    FILO_CHECK_FAILS(filo_gru_cell_backward(hp, xg, c64, NULL, 0, FILO_F32, &h, &c, NULL), FILO_ERR_DTYPE, "h_prev");
    if (filo_cuda_device_count() > 0) {
        filo_tensor *hg_dev;
        FILO_CHECK(filo_tensor_to(hg, filo_cuda(0), &hg_dev));
        FILO_CHECK_FAILS(filo_lstm_cell_forward(xg, hg_dev, NULL, NULL, NULL, cp, NULL, 0, &h, &c, &sv),
                         FILO_ERR_DEVICE, "hg");
        filo_tensor_free(hg_dev);
    }
    filo_var *v, *vh = NULL, *vc = NULL;
    FILO_CHECK(filo_var_new(xg, 1, &v));
    FILO_CHECK_FAILS(filo_ag_lstm_cell(v, v, NULL, NULL, NULL, NULL, NULL, 0, &vh, &vc), FILO_ERR_INVALID_ARG, "c_prev");
    FILO_CHECK_FAILS(filo_ag_gru_cell(v, v, NULL, NULL, NULL, NULL, 0, &vh), FILO_ERR_INVALID_ARG, "h_prev");
    filo_var_free(v);
    filo_tensor *all[] = {xg, hg, xg3, hp, cp, xbad, c64, i32, len3, len2, lenf, b_bad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
}
