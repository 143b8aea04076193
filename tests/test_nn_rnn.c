/* LSTM and GRU layers (filo/rnn.h) on every backend: outputs and final states against a float64
 * reference written here from PyTorch's equations (1 and 2 layers, bidirectional, with and
 * without packed-sequence lengths, with and without h0/c0), gradients of every parameter, x, h0
 * and c0 against central differences of that reference, parameter names, shapes and init,
 * autocast, dropout between layers, a small sequence task that Adam learns, and bad inputs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo_test.h"

#define MAXL FILO_RNN_MAX_LAYERS

/* ---- the float64 reference ---- */

typedef struct ref_model {
    int gru, layers, dirs;
    int64_t I, H;
    double *w_ih[MAXL][2], *w_hh[MAXL][2], *b_ih[MAXL][2], *b_hh[MAXL][2];
} ref_model;

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }

/* x [B, L, I]; len NULL or [B]; h0, c0 NULL or [layers * dirs, B, H]. out [B, L, dirs * H],
 * hn and cn [layers * dirs, B, H] (cn ignored for a GRU). */
static void ref_forward(const ref_model *m, int64_t B, int64_t L, const double *x, const int64_t *len, const double *h0,
                        const double *c0, double *out, double *hn, double *cn)
{
    int64_t H = m->H, G = m->gru ? 3 : 4, GH = G * H, D = m->dirs;
    int64_t in_size = m->I;
    double *in = malloc(sizeof(double) * (size_t)(B * L * (m->I > D * H ? m->I : D * H)));
    double *lo = malloc(sizeof(double) * (size_t)(B * L * D * H));
    double *gx = malloc(sizeof(double) * (size_t)GH), *gh = malloc(sizeof(double) * (size_t)GH);
    double *h = malloc(sizeof(double) * (size_t)H), *c = malloc(sizeof(double) * (size_t)H);
    double *hnew = malloc(sizeof(double) * (size_t)H);
    memcpy(in, x, sizeof(double) * (size_t)(B * L * m->I));
    for (int l = 0; l < m->layers; l++) {
        for (int d = 0; d < D; d++) {
            int64_t s = (int64_t)(l * D + d);
            const double *wi = m->w_ih[l][d], *wh = m->w_hh[l][d], *bi = m->b_ih[l][d], *bh = m->b_hh[l][d];
            for (int64_t b = 0; b < B; b++) {
                for (int64_t j = 0; j < H; j++) {
                    h[j] = h0 ? h0[(s * B + b) * H + j] : 0.0;
                    c[j] = c0 ? c0[(s * B + b) * H + j] : 0.0;
                }
                int64_t lb = len ? len[b] : L;
                for (int64_t k = 0; k < L; k++) {
                    int64_t t = d ? L - 1 - k : k;
                    double *o = lo + (b * L + t) * D * H + d * H;
                    if (t >= lb) {
                        for (int64_t j = 0; j < H; j++)
                            o[j] = 0.0;
                        continue;
                    }
                    const double *xt = in + (b * L + t) * in_size;
                    for (int64_t r = 0; r < GH; r++) {
                        double sx = bi[r], sh = bh[r];
                        for (int64_t i = 0; i < in_size; i++)
                            sx += wi[r * in_size + i] * xt[i];
                        for (int64_t j = 0; j < H; j++)
                            sh += wh[r * H + j] * h[j];
                        gx[r] = sx;
                        gh[r] = sh;
                    }
                    for (int64_t j = 0; j < H; j++) {
                        if (m->gru) {
                            double rr = sig(gx[j] + gh[j]), z = sig(gx[H + j] + gh[H + j]);
                            double n = tanh(gx[2 * H + j] + rr * gh[2 * H + j]);
                            hnew[j] = (1 - z) * n + z * h[j];
                        } else {
                            double i = sig(gx[j] + gh[j]), f = sig(gx[H + j] + gh[H + j]);
                            double g = tanh(gx[2 * H + j] + gh[2 * H + j]), oo = sig(gx[3 * H + j] + gh[3 * H + j]);
                            c[j] = f * c[j] + i * g;
                            hnew[j] = oo * tanh(c[j]);
                        }
                    }
                    memcpy(h, hnew, sizeof(double) * (size_t)H);
                    memcpy(o, h, sizeof(double) * (size_t)H);
                }
                for (int64_t j = 0; j < H; j++) {
                    hn[(s * B + b) * H + j] = h[j];
                    if (!m->gru && cn)
                        cn[(s * B + b) * H + j] = c[j];
                }
            }
        }
        in_size = D * H;
        memcpy(in, lo, sizeof(double) * (size_t)(B * L * D * H));
    }
    memcpy(out, lo, sizeof(double) * (size_t)(B * L * D * H));
    free(in);
    free(lo);
    free(gx);
    free(gh);
    free(h);
    free(c);
    free(hnew);
}

/* The reference's parameters: the filo module's values as doubles. */
static void ref_from_module(ref_model *r, const filo_rnn *m)
{
    memset(r, 0, sizeof *r);
    r->gru = m->cfg.kind == FILO_RNN_GRU;
    r->layers = m->cfg.num_layers;
    r->dirs = m->cfg.bidirectional ? 2 : 1;
    r->I = m->cfg.input_size;
    r->H = m->cfg.hidden_size;
    for (int l = 0; l < r->layers; l++)
        for (int d = 0; d < r->dirs; d++) {
            r->w_ih[l][d] = filo_test_download(filo_var_value(m->w_ih[l][d]));
            r->w_hh[l][d] = filo_test_download(filo_var_value(m->w_hh[l][d]));
            r->b_ih[l][d] = filo_test_download(filo_var_value(m->b_ih[l][d]));
            r->b_hh[l][d] = filo_test_download(filo_var_value(m->b_hh[l][d]));
        }
}

static void ref_free(ref_model *r)
{
    for (int l = 0; l < r->layers; l++)
        for (int d = 0; d < r->dirs; d++) {
            free(r->w_ih[l][d]);
            free(r->w_hh[l][d]);
            free(r->b_ih[l][d]);
            free(r->b_hh[l][d]);
        }
}

static void expect_close(const char *what, const char *cs, filo_device dev, const filo_tensor *t, const double *want,
                         int64_t n, double tol)
{
    cr_assert_eq(filo_tensor_numel(t), n, "%s (%s) on %s: %lld elements, want %lld", what, cs,
                 filo_test_backend_name(dev), (long long)filo_tensor_numel(t), (long long)n);
    double *got = filo_test_download(t);
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= tol * (1 + fabs(want[i])), "%s (%s) on %s [%lld]: %.9g, float64 %.9g",
                  what, cs, filo_test_backend_name(dev), (long long)i, got[i], want[i]);
    free(got);
}

static filo_var *leaf(filo_device dev, filo_dtype dt, int ndim, const int64_t *shape, const double *v, int grad)
{
    filo_tensor *t = filo_test_upload(dev, dt, ndim, shape, v);
    filo_var *x;
    FILO_CHECK(filo_var_new(t, grad, &x));
    filo_tensor_free(t);
    return x;
}

typedef struct layer_case {
    int gru, layers, bidir, lengths, init_state;
    int64_t B, L, I, H;
} layer_case;

static const char *case_name(const layer_case *c, char *buf, size_t n)
{
    snprintf(buf, n, "%s layers %d%s%s%s", c->gru ? "GRU" : "LSTM", c->layers, c->bidir ? " bidirectional" : "",
             c->lengths ? " lengths" : "", c->init_state ? " h0/c0" : "");
    return buf;
}

/* The layer's outputs against the reference on every backend, in f32 or under autocast. */
static void forward_case(const layer_case *c, filo_dtype autocast, double tol)
{
    char cs[128];
    case_name(c, cs, sizeof cs);
    int D = c->bidir ? 2 : 1;
    int64_t S = (int64_t)c->layers * D, nx = c->B * c->L * c->I, ns = S * c->B * c->H, no = c->B * c->L * D * c->H;
    double *x = malloc(sizeof(double) * (size_t)nx), *h0 = malloc(sizeof(double) * (size_t)ns);
    double *c0 = malloc(sizeof(double) * (size_t)ns), *out = malloc(sizeof(double) * (size_t)no);
    double *hn = malloc(sizeof(double) * (size_t)ns), *cn = malloc(sizeof(double) * (size_t)ns);
    filo_test_fill_random(x, nx, 3, -1, 1);
    filo_test_fill_random(h0, ns, 4, -0.8, 0.8);
    filo_test_fill_random(c0, ns, 5, -0.8, 0.8);
    int64_t len[16];
    double lend[16];
    for (int64_t b = 0; b < c->B; b++) {
        len[b] = c->L - (b * 2) % c->L; /* L, L - 2, ... : one full, the others shorter */
        lend[b] = (double)len[b];
    }
    if (autocast != FILO_F32) {
        filo_tensor *t = filo_test_upload(filo_cpu(), autocast, 1, &nx, x);
        double *r = filo_test_download(t);
        memcpy(x, r, sizeof(double) * (size_t)nx);
        free(r);
        filo_tensor_free(t);
    }
    filo_rnn_config cfg = {c->gru ? FILO_RNN_GRU : FILO_RNN_LSTM, c->I, c->H, c->layers, c->bidir, 0.0};
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int k = 0; k < nd; k++) {
        filo_device dev = devs[k];
        filo_params *ps;
        FILO_CHECK(filo_params_new(dev, 17, &ps));
        filo_rnn m;
        FILO_CHECK(filo_rnn_init(&m, ps, "rnn", &cfg));
        ref_model r;
        ref_from_module(&r, &m);
        ref_forward(&r, c->B, c->L, x, c->lengths ? len : NULL, c->init_state ? h0 : NULL,
                    c->init_state && !c->gru ? c0 : NULL, out, hn, cn);
        int64_t xs[3] = {c->B, c->L, c->I}, ss[3] = {S, c->B, c->H};
        filo_var *vx = leaf(dev, FILO_F32, 3, xs, x, 0);
        filo_var *vh = c->init_state ? leaf(dev, FILO_F32, 3, ss, h0, 0) : NULL;
        filo_var *vc = c->init_state && !c->gru ? leaf(dev, FILO_F32, 3, ss, c0, 0) : NULL;
        filo_tensor *tl = c->lengths ? filo_test_upload(filo_cpu(), FILO_I64, 1, &c->B, lend) : NULL;
        filo_nn_ctx ctx = {0, NULL, autocast};
        filo_var *o = NULL, *h_n = NULL, *c_n = NULL;
        FILO_CHECK(filo_rnn_forward(&m, &ctx, vx, tl, vh, vc, &o, &h_n, &c_n));
        cr_assert_eq(filo_var_value(o)->dtype, autocast, "%s: out dtype", cs);
        expect_close("out", cs, dev, filo_var_value(o), out, no, tol);
        expect_close("h_n", cs, dev, filo_var_value(h_n), hn, ns, tol);
        if (c->gru)
            cr_assert_null(c_n, "%s: a GRU gives no c_n", cs);
        else
            expect_close("c_n", cs, dev, filo_var_value(c_n), cn, ns, tol);
        filo_var_free(o);
        filo_var_free(h_n);
        filo_var_free(c_n);
        filo_var_free(vx);
        filo_var_free(vh);
        filo_var_free(vc);
        filo_tensor_free(tl);
        ref_free(&r);
        filo_params_free(ps);
    }
    free(x);
    free(h0);
    free(c0);
    free(out);
    free(hn);
    free(cn);
}

Test(nn_rnn, forward_matches_float64)
{
    for (int gru = 0; gru < 2; gru++)
        for (int shape = 0; shape < 2; shape++)
            for (int lengths = 0; lengths < 2; lengths++)
                for (int init = 0; init < 2; init++) {
                    layer_case c = {gru, shape ? 2 : 1, shape, lengths, init, 3, 5, 4, 6};
                    forward_case(&c, FILO_F32, 2e-5);
                }
}

Test(nn_rnn, autocast_bf16)
{
    for (int gru = 0; gru < 2; gru++) {
        layer_case c = {gru, 2, 1, 1, 1, 3, 4, 5, 8};
        forward_case(&c, FILO_BF16, 4e-2);
    }
}

/* ---- gradients against central differences of the reference ---- */

/* L = sum(out * R1) + sum(h_n * R2) + sum(c_n * R3) of the reference. */
static double ref_loss(const ref_model *r, int64_t B, int64_t L, const double *x, const int64_t *len, const double *h0,
                       const double *c0, const double *R1, const double *R2, const double *R3)
{
    int64_t S = (int64_t)r->layers * r->dirs, no = B * L * r->dirs * r->H, ns = S * B * r->H;
    double *out = malloc(sizeof(double) * (size_t)no), *hn = malloc(sizeof(double) * (size_t)ns);
    double *cn = malloc(sizeof(double) * (size_t)ns);
    ref_forward(r, B, L, x, len, h0, c0, out, hn, cn);
    double s = 0;
    for (int64_t i = 0; i < no; i++)
        s += out[i] * R1[i];
    for (int64_t i = 0; i < ns; i++)
        s += hn[i] * R2[i] + (r->gru ? 0.0 : cn[i] * R3[i]);
    free(out);
    free(hn);
    free(cn);
    return s;
}

typedef struct fd_problem {
    ref_model *r;
    int64_t B, L;
    double *x, *h0, *c0, *R1, *R2, *R3;
    const int64_t *len;
} fd_problem;

/* The central difference of the reference's loss in element i of v (n elements). */
static double fd_grad(const fd_problem *p, double *v, int64_t i)
{
    const double h = 1e-6;
    double keep = v[i];
    v[i] = keep + h;
    double up = ref_loss(p->r, p->B, p->L, p->x, p->len, p->h0, p->c0, p->R1, p->R2, p->R3);
    v[i] = keep - h;
    double down = ref_loss(p->r, p->B, p->L, p->x, p->len, p->h0, p->c0, p->R1, p->R2, p->R3);
    v[i] = keep;
    return (up - down) / (2 * h);
}

static void check_grad(const char *what, const char *cs, filo_device dev, const fd_problem *p, filo_var *var, double *v)
{
    const filo_tensor *g = filo_var_grad(var);
    cr_assert(g, "%s (%s) on %s: no gradient", what, cs, filo_test_backend_name(dev));
    int64_t n = filo_tensor_numel(g);
    double *got = filo_test_download(g);
    for (int64_t i = 0; i < n; i++) {
        double want = fd_grad(p, v, i);
        cr_assert(fabs(got[i] - want) <= 2e-4 + 2e-3 * fabs(want), "%s (%s) on %s [%lld]: %.8g, finite differences %.8g",
                  what, cs, filo_test_backend_name(dev), (long long)i, got[i], want);
    }
    free(got);
}

static void grad_case(const layer_case *c)
{
    char cs[128];
    case_name(c, cs, sizeof cs);
    int D = c->bidir ? 2 : 1;
    int64_t S = (int64_t)c->layers * D, nx = c->B * c->L * c->I, ns = S * c->B * c->H, no = c->B * c->L * D * c->H;
    double x[64], h0[64], c0[64], R1[128], R2[64], R3[64], lend[8];
    int64_t len[8];
    filo_test_fill_random(x, nx, 8, -1, 1);
    filo_test_fill_random(h0, ns, 9, -0.8, 0.8);
    filo_test_fill_random(c0, ns, 10, -0.8, 0.8);
    filo_test_fill_random(R1, no, 11, -1, 1);
    filo_test_fill_random(R2, ns, 12, -1, 1);
    filo_test_fill_random(R3, ns, 13, -1, 1);
    for (int64_t b = 0; b < c->B; b++) {
        len[b] = c->L - b % c->L;
        lend[b] = (double)len[b];
    }
    filo_rnn_config cfg = {c->gru ? FILO_RNN_GRU : FILO_RNN_LSTM, c->I, c->H, c->layers, c->bidir, 0.0};
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int k = 0; k < nd; k++) {
        filo_device dev = devs[k];
        filo_params *ps;
        FILO_CHECK(filo_params_new(dev, 23, &ps));
        filo_rnn m;
        FILO_CHECK(filo_rnn_init(&m, ps, NULL, &cfg));
        ref_model r;
        ref_from_module(&r, &m);
        int64_t xs[3] = {c->B, c->L, c->I}, ss[3] = {S, c->B, c->H}, os[3] = {c->B, c->L, D * c->H};
        filo_var *vx = leaf(dev, FILO_F32, 3, xs, x, 1), *vh = leaf(dev, FILO_F32, 3, ss, h0, 1);
        filo_var *vc = c->gru ? NULL : leaf(dev, FILO_F32, 3, ss, c0, 1);
        filo_tensor *tl = c->lengths ? filo_test_upload(filo_cpu(), FILO_I64, 1, &c->B, lend) : NULL;
        filo_nn_ctx ctx = {1, NULL, FILO_F32};
        filo_var *o = NULL, *h_n = NULL, *c_n = NULL;
        FILO_CHECK(filo_rnn_forward(&m, &ctx, vx, tl, vh, vc, &o, &h_n, c->gru ? NULL : &c_n));
        filo_tensor *g1 = filo_test_upload(dev, FILO_F32, 3, os, R1), *g2 = filo_test_upload(dev, FILO_F32, 3, ss, R2);
        filo_tensor *g3 = filo_test_upload(dev, FILO_F32, 3, ss, R3);
        filo_var *roots[3] = {o, h_n, c_n};
        const filo_tensor *groots[3] = {g1, g2, g3};
        FILO_CHECK(filo_backward_many(c->gru ? 2 : 3, roots, groots, 0));
        fd_problem p = {&r, c->B, c->L, x, h0, c->gru ? NULL : c0, R1, R2, R3, c->lengths ? len : NULL};
        for (int l = 0; l < c->layers; l++)
            for (int d = 0; d < D; d++) {
                check_grad("weight_ih", cs, dev, &p, m.w_ih[l][d], r.w_ih[l][d]);
                check_grad("weight_hh", cs, dev, &p, m.w_hh[l][d], r.w_hh[l][d]);
                check_grad("bias_ih", cs, dev, &p, m.b_ih[l][d], r.b_ih[l][d]);
                check_grad("bias_hh", cs, dev, &p, m.b_hh[l][d], r.b_hh[l][d]);
            }
        check_grad("x", cs, dev, &p, vx, x);
        check_grad("h0", cs, dev, &p, vh, h0);
        if (!c->gru)
            check_grad("c0", cs, dev, &p, vc, c0);
        filo_var *vars[] = {o, h_n, c_n, vx, vh, vc};
        for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
            filo_var_free(vars[i]);
        filo_tensor_free(g1);
        filo_tensor_free(g2);
        filo_tensor_free(g3);
        filo_tensor_free(tl);
        ref_free(&r);
        filo_params_free(ps);
    }
}

Test(nn_rnn, gradients)
{
    for (int gru = 0; gru < 2; gru++) {
        layer_case c = {gru, 2, 1, 1, 1, 3, 3, 2, 3};
        grad_case(&c);
        layer_case u = {gru, 1, 0, 0, 1, 2, 4, 3, 2};
        grad_case(&u);
    }
}

/* ---- parameters ---- */

Test(nn_rnn, parameter_names_and_init)
{
    filo_params *ps;
    FILO_CHECK(filo_params_new(filo_cpu(), 1, &ps));
    filo_rnn m;
    filo_rnn_config cfg = {FILO_RNN_LSTM, 5, 16, 2, 1, 0.1};
    FILO_CHECK(filo_rnn_init(&m, ps, "encoder.lstm", &cfg));
    filo_rnn g;
    filo_rnn_config gcfg = {FILO_RNN_GRU, 3, 4, 1, 0, 0.0};
    FILO_CHECK(filo_rnn_init(&g, ps, "gru", &gcfg));
    const char *names[] = {
        "encoder.lstm.weight_ih_l0",         "encoder.lstm.weight_hh_l0",         "encoder.lstm.bias_ih_l0",
        "encoder.lstm.bias_hh_l0",           "encoder.lstm.weight_ih_l0_reverse", "encoder.lstm.weight_hh_l0_reverse",
        "encoder.lstm.bias_ih_l0_reverse",   "encoder.lstm.bias_hh_l0_reverse",   "encoder.lstm.weight_ih_l1",
        "encoder.lstm.weight_hh_l1",         "encoder.lstm.bias_ih_l1",           "encoder.lstm.bias_hh_l1",
        "encoder.lstm.weight_ih_l1_reverse", "encoder.lstm.weight_hh_l1_reverse", "encoder.lstm.bias_ih_l1_reverse",
        "encoder.lstm.bias_hh_l1_reverse",   "gru.weight_ih_l0",                  "gru.weight_hh_l0",
        "gru.bias_ih_l0",                    "gru.bias_hh_l0",
    };
    const int64_t shapes[][2] = {{64, 5}, {64, 16}, {64, 0}, {64, 0}, {64, 5},  {64, 16}, {64, 0},
                                 {64, 0}, {64, 32}, {64, 16}, {64, 0}, {64, 0}, {64, 32}, {64, 16},
                                 {64, 0}, {64, 0}, {12, 3}, {12, 4}, {12, 0}, {12, 0}};
    int n = (int)(sizeof names / sizeof names[0]);
    cr_assert_eq(filo_params_count(ps), n);
    for (int i = 0; i < n; i++) {
        cr_assert_str_eq(filo_params_name_at(ps, i), names[i]);
        const filo_tensor *t = filo_var_value(filo_params_at(ps, i));
        int ndim = shapes[i][1] ? 2 : 1;
        cr_assert_eq(t->ndim, ndim, "%s: %d dims", names[i], t->ndim);
        for (int d = 0; d < ndim; d++)
            cr_assert_eq(t->shape[d], shapes[i][d], "%s: dim %d is %lld", names[i], d, (long long)t->shape[d]);
        cr_assert_eq(filo_params_role_at(ps, i), ndim == 2 ? FILO_PARAM_WEIGHT : FILO_PARAM_BIAS, "%s: role", names[i]);
        /* U(-1/sqrt(H), 1/sqrt(H)), and it spreads over most of the range. */
        double k = 1.0 / sqrt(i < 16 ? 16.0 : 4.0), lo = 1, hi = -1;
        double *v = filo_test_download(t);
        for (int64_t e = 0; e < filo_tensor_numel(t); e++) {
            cr_assert(fabs(v[e]) <= k, "%s [%lld] = %g outside +-%g", names[i], (long long)e, v[e], k);
            lo = fmin(lo, v[e]);
            hi = fmax(hi, v[e]);
        }
        if (filo_tensor_numel(t) >= 64)
            cr_assert(lo < -0.7 * k && hi > 0.7 * k, "%s spans [%g, %g] of +-%g", names[i], lo, hi, k);
        free(v);
    }
    cr_assert_eq(m.w_ih[1][1], filo_params_find(ps, "encoder.lstm.weight_ih_l1_reverse"));
    cr_assert_eq(g.b_hh[0][0], filo_params_find(ps, "gru.bias_hh_l0"));
    filo_params_free(ps);
}

/* ---- dropout between layers ---- */

Test(nn_rnn, dropout_between_layers)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int k = 0; k < nd; k++) {
        filo_device dev = devs[k];
        for (int layers = 1; layers <= 2; layers++) {
            filo_params *ps;
            FILO_CHECK(filo_params_new(dev, 3, &ps));
            filo_rnn m;
            filo_rnn_config cfg = {FILO_RNN_LSTM, 4, 8, layers, 0, 0.5};
            FILO_CHECK(filo_rnn_init(&m, ps, "rnn", &cfg));
            double x[2 * 3 * 4];
            filo_test_fill_random(x, 24, 5, -1, 1);
            int64_t xs[3] = {2, 3, 4};
            filo_var *vx = leaf(dev, FILO_F32, 3, xs, x, 0), *train = NULL, *eval = NULL;
            filo_generator gen;
            filo_generator_init(&gen, 99);
            filo_nn_ctx tctx = {1, &gen, FILO_F32}, ectx = {0, NULL, FILO_F32};
            FILO_CHECK(filo_rnn_forward(&m, &tctx, vx, NULL, NULL, NULL, &train, NULL, NULL));
            FILO_CHECK(filo_rnn_forward(&m, &ectx, vx, NULL, NULL, NULL, &eval, NULL, NULL));
            double *a = filo_test_download(filo_var_value(train)), *b = filo_test_download(filo_var_value(eval));
            double diff = 0;
            for (int i = 0; i < 2 * 3 * 8; i++)
                diff = fmax(diff, fabs(a[i] - b[i]));
            /* One layer: no dropout at all (none after the last layer); two: the first layer's output is dropped. */
            if (layers == 1)
                cr_assert(diff == 0, "on %s: one layer changed by %g in training", filo_test_backend_name(dev), diff);
            else
                cr_assert(diff > 1e-3, "on %s: dropout between layers changed nothing", filo_test_backend_name(dev));
            free(a);
            free(b);
            filo_var_free(train);
            filo_var_free(eval);
            filo_var_free(vx);
            filo_params_free(ps);
        }
    }
}

/* ---- a small task: recall the first input of a sequence at its end ---- */

static filo_status train_step(const filo_rnn *m, filo_var *head, filo_var *vx, filo_var *vy, const filo_tensor *lengths,
                              double *loss_out)
{
    filo_nn_ctx ctx = {1, NULL, FILO_F32};
    filo_var *o = NULL, *hn = NULL, *last = NULL, *pred = NULL, *diff = NULL, *sq = NULL, *loss = NULL;
    filo_status s = filo_rnn_forward(m, &ctx, vx, lengths, NULL, NULL, &o, &hn, NULL);
    int64_t B = filo_var_value(vx)->shape[0];
    int64_t shape[2] = {B, m->cfg.hidden_size};
    /* The final state of each (packed) sequence, through the head. */
    if (s == FILO_OK)
        s = filo_ag_reshape(hn, 2, shape, &last);
    if (s == FILO_OK)
        s = filo_ag_matmul(last, head, 0, 1, NULL, FILO_MATMUL_EPILOGUE_NONE, &pred);
    if (s == FILO_OK)
        s = filo_ag_sub(pred, vy, &diff);
    if (s == FILO_OK)
        s = filo_ag_mul(diff, diff, &sq);
    if (s == FILO_OK)
        s = filo_ag_mean(sq, FILO_ALL_DIMS, 0, &loss);
    if (s == FILO_OK)
        s = filo_backward(loss, NULL, 0);
    if (s == FILO_OK) {
        double *v = filo_test_download(filo_var_value(loss));
        *loss_out = v[0];
        free(v);
    }
    filo_var *all[] = {o, hn, last, pred, diff, sq, loss};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_var_free(all[i]);
    return s;
}

Test(nn_rnn, learns_a_sequence_task)
{
    enum { B = 16, L = 5, STEPS = 60 };
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int k = 0; k < nd; k++)
        for (int gru = 0; gru < 2; gru++) {
            filo_device dev = devs[k];
            filo_params *ps;
            FILO_CHECK(filo_params_new(dev, 5, &ps));
            filo_rnn m;
            filo_rnn_config cfg = {gru ? FILO_RNN_GRU : FILO_RNN_LSTM, 1, 8, 1, 0, 0.0};
            FILO_CHECK(filo_rnn_init(&m, ps, "rnn", &cfg));
            filo_var *head;
            int64_t hs[2] = {1, 8};
            FILO_CHECK(filo_params_create(ps, "head.weight", 2, hs, (filo_init){FILO_INIT_UNIFORM, -0.3, 0.3},
                                          FILO_PARAM_WEIGHT, &head));
            double x[B * L], y[B], lend[B];
            filo_test_fill_random(x, B * L, 7, -1, 1);
            for (int b = 0; b < B; b++) {
                y[b] = x[b * L];
                lend[b] = 2 + b % (L - 1); /* 2..L: the answer is the first step, whatever the length */
            }
            int64_t xs[3] = {B, L, 1}, ys[2] = {B, 1};
            filo_var *vx = leaf(dev, FILO_F32, 3, xs, x, 0), *vy = leaf(dev, FILO_F32, 2, ys, y, 0);
            filo_tensor *tl = filo_test_upload(filo_cpu(), FILO_I32, 1, (const int64_t[]){B}, lend);
            filo_var *params[16];
            int np = 0;
            FILO_CHECK(filo_params_trainable(ps, 16, params, &np));
            filo_tensor *pv[16], *gv[16], *m1[16], *m2[16];
            for (int i = 0; i < np; i++) {
                pv[i] = filo_var_value(params[i]);
                FILO_CHECK(filo_tensor_zeros(dev, FILO_F32, pv[i]->ndim, pv[i]->shape, &m1[i]));
                FILO_CHECK(filo_tensor_zeros(dev, FILO_F32, pv[i]->ndim, pv[i]->shape, &m2[i]));
            }
            filo_adam_options opt = filo_adam_defaults(0);
            opt.lr = 0.03;
            double first = 0, last = 0;
            for (int s = 1; s <= STEPS; s++) {
                FILO_CHECK(train_step(&m, head, vx, vy, tl, &last));
                if (s == 1)
                    first = last;
                for (int i = 0; i < np; i++)
                    gv[i] = filo_var_grad(params[i]);
                opt.step = s;
                FILO_CHECK(filo_adam_step(np, pv, (const filo_tensor *const *)gv, m1, m2, NULL, &opt));
                filo_params_zero_grad(ps);
            }
            cr_assert(last < 0.2 * first, "%s on %s: loss %g -> %g", gru ? "GRU" : "LSTM", filo_test_backend_name(dev),
                      first, last);
            for (int i = 0; i < np; i++) {
                filo_tensor_free(m1[i]);
                filo_tensor_free(m2[i]);
            }
            filo_tensor_free(tl);
            filo_var_free(vx);
            filo_var_free(vy);
            filo_params_free(ps);
        }
}

/* ---- bad inputs ---- */

Test(nn_rnn, bad_inputs)
{
    filo_device cpu = filo_cpu();
    filo_params *ps;
    FILO_CHECK(filo_params_new(cpu, 1, &ps));
    filo_rnn lstm, gru, bad;
    filo_rnn_config lc = {FILO_RNN_LSTM, 4, 3, 2, 1, 0.0}, gc = {FILO_RNN_GRU, 4, 3, 1, 0, 0.0};
    FILO_CHECK(filo_rnn_init(&lstm, ps, "lstm", &lc));
    FILO_CHECK(filo_rnn_init(&gru, ps, "gru", &gc));
    filo_rnn_config zero_layers = lc, big_dropout = lc, bad_kind = lc;
    zero_layers.num_layers = 0;
    big_dropout.dropout = 1.0;
    bad_kind.kind = (filo_rnn_kind)7;
    FILO_CHECK_FAILS(filo_rnn_init(&bad, ps, "x", &zero_layers), FILO_ERR_INVALID_ARG, "num_layers");
    FILO_CHECK_FAILS(filo_rnn_init(&bad, ps, "x", &big_dropout), FILO_ERR_INVALID_ARG, "dropout");
    FILO_CHECK_FAILS(filo_rnn_init(&bad, ps, "x", &bad_kind), FILO_ERR_INVALID_ARG, "kind");
    FILO_CHECK_FAILS(filo_rnn_init(&bad, ps, "lstm", &lc), FILO_ERR_INVALID_ARG, "lstm.weight_ih_l0");

    double v[2 * 3 * 5] = {0};
    int64_t xs[3] = {2, 3, 4}, wrong[3] = {2, 3, 5}, ss[3] = {4, 2, 3}, sbad[3] = {2, 2, 3}, gs[3] = {1, 2, 3};
    filo_var *x = leaf(cpu, FILO_F32, 3, xs, v, 0), *xw = leaf(cpu, FILO_F32, 3, wrong, v, 0);
    filo_var *h0 = leaf(cpu, FILO_F32, 3, ss, v, 0), *h0bad = leaf(cpu, FILO_F32, 3, sbad, v, 0);
    filo_var *g0 = leaf(cpu, FILO_F32, 3, gs, v, 0);
    filo_nn_ctx ctx = {0, NULL, FILO_F32};
    filo_var *o = NULL, *hn = NULL, *cn = NULL;
    FILO_CHECK_FAILS(filo_rnn_forward(&lstm, &ctx, xw, NULL, NULL, NULL, &o, NULL, NULL), FILO_ERR_SHAPE,
                     "input_size 4");
    FILO_CHECK_FAILS(filo_rnn_forward(&lstm, &ctx, x, NULL, h0bad, NULL, &o, NULL, NULL), FILO_ERR_SHAPE,
                     "h0 f32[2, 2, 3]");
    FILO_CHECK_FAILS(filo_rnn_forward(&lstm, &ctx, x, NULL, NULL, h0bad, &o, NULL, NULL), FILO_ERR_SHAPE, "c0");
    FILO_CHECK_FAILS(filo_rnn_forward(&gru, &ctx, x, NULL, g0, g0, &o, NULL, NULL), FILO_ERR_INVALID_ARG,
                     "c0 was given to a GRU");
    const double l_zero[2] = {3, 0}, l_long[2] = {4, 1};
    filo_tensor *lz = filo_test_upload(cpu, FILO_I64, 1, (const int64_t[]){2}, l_zero);
    filo_tensor *ll = filo_test_upload(cpu, FILO_I32, 1, (const int64_t[]){2}, l_long);
    filo_tensor *l3 = filo_test_upload(cpu, FILO_I32, 1, (const int64_t[]){1}, l_long);
    filo_tensor *lf = filo_test_upload(cpu, FILO_F32, 1, (const int64_t[]){2}, l_long);
    FILO_CHECK_FAILS(filo_rnn_forward(&lstm, &ctx, x, lz, NULL, NULL, &o, NULL, NULL), FILO_ERR_INVALID_ARG,
                     "lengths[1] = 0 is outside [1, 3]");
    FILO_CHECK_FAILS(filo_rnn_forward(&lstm, &ctx, x, ll, NULL, NULL, &o, NULL, NULL), FILO_ERR_INVALID_ARG,
                     "lengths[0] = 4 is outside [1, 3]");
    FILO_CHECK_FAILS(filo_rnn_forward(&lstm, &ctx, x, l3, NULL, NULL, &o, NULL, NULL), FILO_ERR_SHAPE, "lengths");
    FILO_CHECK_FAILS(filo_rnn_forward(&lstm, &ctx, x, lf, NULL, NULL, &o, NULL, NULL), FILO_ERR_DTYPE, "i32 or i64");
    FILO_CHECK_FAILS(filo_rnn_forward(&lstm, &ctx, x, NULL, NULL, NULL, NULL, NULL, NULL), FILO_ERR_INVALID_ARG, "out");
    filo_rnn_config dc = lc;
    dc.dropout = 0.3;
    filo_rnn dm;
    FILO_CHECK(filo_rnn_init(&dm, ps, "dropped", &dc));
    filo_nn_ctx train = {1, NULL, FILO_F32};
    FILO_CHECK_FAILS(filo_rnn_forward(&dm, &train, x, NULL, NULL, NULL, &o, NULL, NULL), FILO_ERR_INVALID_ARG,
                     "needs a generator");
    /* A GRU asked for c_n gives NULL. */
    cn = (filo_var *)x;
    FILO_CHECK(filo_rnn_forward(&gru, &ctx, x, NULL, NULL, NULL, &o, &hn, &cn));
    cr_assert_null(cn);
    filo_var_free(o);
    filo_var_free(hn);
    filo_tensor_free(lz);
    filo_tensor_free(ll);
    filo_tensor_free(l3);
    filo_tensor_free(lf);
    filo_var *all[] = {x, xw, h0, h0bad, g0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_var_free(all[i]);
    filo_params_free(ps);
}
