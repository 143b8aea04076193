/* The nn modules (filo/nn.h) on every backend: forwards against float64 references computed here
 * from the definitions (odd sizes, random non-zero inputs, random norm gains), attention masks,
 * cross-attention, eval vs training dropout, post-LN vs pre-LN, Hugging Face BERT parameter names
 * and counts, freezing, gradients (float64 finite differences and every backend against float64),
 * autocast dtypes, and clear errors on bad arguments. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "filo/nn.h"
#include "filo_test.h"
#include "gradcheck.h"

#define TRY(expr)                    \
    do {                             \
        filo_status try_s_ = (expr); \
        if (try_s_ != FILO_OK)       \
            return try_s_;           \
    } while (0)

/* ---- helpers ---- */

static int64_t numel_of(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

/* A variable of random values in [lo, hi) (host copy in *host when non-NULL, caller frees). */
static filo_var *rand_var(filo_device dev, filo_dtype dt, int ndim, const int64_t *shape, uint64_t seed, double lo,
                          double hi, int requires_grad, double **host)
{
    int64_t n = numel_of(ndim, shape);
    double *v = malloc(sizeof *v * (size_t)(n ? n : 1));
    filo_test_fill_random(v, n, seed, lo, hi);
    filo_tensor *t = filo_test_upload(dev, dt, ndim, shape, v);
    filo_var *x;
    FILO_CHECK(filo_var_new(t, requires_grad, &x));
    filo_tensor_free(t);
    if (host)
        *host = v;
    else
        free(v);
    return x;
}

static double *vals(const filo_var *v) { return filo_test_download(filo_var_value(v)); }

/* Overwrites a parameter with random values (so norms are tested with non-trivial gains). */
static void randomize(filo_var *p, uint64_t seed, double lo, double hi)
{
    filo_tensor *t = filo_var_value(p);
    int64_t n = filo_tensor_numel(t);
    double *v = malloc(sizeof *v * (size_t)n);
    filo_test_fill_random(v, n, seed, lo, hi);
    filo_tensor *u = filo_test_upload(t->device, t->dtype, t->ndim, t->shape, v);
    FILO_CHECK(filo_tensor_copy(t, u));
    filo_tensor_free(u);
    free(v);
}

static void expect_close(const char *what, filo_device dev, const double *got, const double *want, int64_t n,
                         double rtol, double atol)
{
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]), "%s on %s: element %lld is %.9g, want %.9g",
                  what, filo_test_backend_name(dev), (long long)i, got[i], want[i]);
}

static void expect_close_var(const char *what, filo_device dev, const filo_var *v, const double *want, double rtol,
                             double atol)
{
    double *got = vals(v);
    expect_close(what, dev, got, want, filo_tensor_numel(filo_var_value(v)), rtol, atol);
    free(got);
}

/* ---- float64 references ---- */

/* y[r][o] = sum_i x[r][i] w[o][i] + b[o] */
static void ref_linear(const double *x, const double *w, const double *b, int64_t rows, int64_t in, int64_t out,
                       double *y)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0;
            for (int64_t i = 0; i < in; i++)
                s += x[r * in + i] * w[o * in + i];
            y[r * out + o] = s;
        }
}

static double ref_act(filo_activation a, double x)
{
    switch (a) {
    case FILO_ACT_GELU:
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case FILO_ACT_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
    case FILO_ACT_RELU:
        return x > 0 ? x : 0;
    case FILO_ACT_TANH:
        return tanh(x);
    case FILO_ACT_SILU:
        return x / (1.0 + exp(-x));
    case FILO_ACT_SIGMOID:
        return 1.0 / (1.0 + exp(-x));
    default:
        return x;
    }
}

/* LayerNorm (beta non-NULL) or RMSNorm (beta NULL) of each row of x (+ r). */
static void ref_norm(const double *x, const double *r, const double *g, const double *beta, int64_t rows, int64_t c,
                     double eps, double *y)
{
    for (int64_t i = 0; i < rows; i++) {
        double h[1024], mean = 0, var = 0;
        for (int64_t j = 0; j < c; j++) {
            h[j] = x[i * c + j] + (r ? r[i * c + j] : 0.0);
            mean += h[j];
        }
        mean = beta ? mean / (double)c : 0.0;
        for (int64_t j = 0; j < c; j++)
            var += (h[j] - mean) * (h[j] - mean);
        double rstd = 1.0 / sqrt(var / (double)c + eps);
        for (int64_t j = 0; j < c; j++)
            y[i * c + j] = (h[j] - mean) * rstd * g[j] + (beta ? beta[j] : 0.0);
    }
}

/* Multi-head attention core on row-major projections q [B, Lq, H*D], k and v [B, Lk, H*D];
 * klen NULL or key lengths; out [B, Lq, H*D]. */
static void ref_attention(const double *q, const double *k, const double *v, int64_t B, int64_t Lq, int64_t Lk,
                          int64_t H, int64_t D, const int64_t *klen, int causal, double *out)
{
    int64_t dim = H * D;
    double *s = malloc(sizeof *s * (size_t)Lk);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                double mx = -INFINITY;
                for (int64_t j = 0; j < Lk; j++) {
                    int masked = (klen && j >= klen[b]) || (causal && j > i);
                    double acc = 0;
                    for (int64_t d = 0; d < D; d++)
                        acc += q[(b * Lq + i) * dim + h * D + d] * k[(b * Lk + j) * dim + h * D + d];
                    s[j] = masked ? -INFINITY : acc / sqrt((double)D);
                    mx = fmax(mx, s[j]);
                }
                double z = 0;
                for (int64_t j = 0; j < Lk; j++) {
                    s[j] = isinf(s[j]) ? 0.0 : exp(s[j] - mx);
                    z += s[j];
                }
                for (int64_t d = 0; d < D; d++) {
                    double acc = 0;
                    for (int64_t j = 0; j < Lk; j++)
                        acc += s[j] / z * v[(b * Lk + j) * dim + h * D + d];
                    out[(b * Lq + i) * dim + h * D + d] = acc;
                }
            }
    free(s);
}

/* A Linear's parameters on the host. */
typedef struct host_linear {
    double *w, *b;
    int64_t in, out;
} host_linear;

static host_linear host_of(const filo_nn_linear *m)
{
    return (host_linear){vals(m->weight), m->bias ? vals(m->bias) : NULL, m->in_features, m->out_features};
}

static void host_free(host_linear *h)
{
    free(h->w);
    free(h->b);
}

/* MHA in float64: x [B, Lq, dim], kv NULL or [B, Lk, dim]. */
static void ref_mha(const filo_nn_mha *m, const double *x, const double *kv, int64_t B, int64_t Lq, int64_t Lk,
                    const int64_t *klen, int causal, double *y)
{
    int64_t dim = m->dim;
    host_linear hq = host_of(&m->query), hk = host_of(&m->key), hv = host_of(&m->value), ho = host_of(&m->out);
    const double *src = kv ? kv : x;
    double *q = malloc(sizeof(double) * (size_t)(B * Lq * dim)), *k = malloc(sizeof(double) * (size_t)(B * Lk * dim));
    double *v = malloc(sizeof(double) * (size_t)(B * Lk * dim)), *c = malloc(sizeof(double) * (size_t)(B * Lq * dim));
    ref_linear(x, hq.w, hq.b, B * Lq, dim, dim, q);
    ref_linear(src, hk.w, hk.b, B * Lk, dim, dim, k);
    ref_linear(src, hv.w, hv.b, B * Lk, dim, dim, v);
    ref_attention(q, k, v, B, Lq, Lk, m->heads, dim / m->heads, klen, causal, c);
    ref_linear(c, ho.w, ho.b, B * Lq, dim, dim, y);
    host_free(&hq);
    host_free(&hk);
    host_free(&hv);
    host_free(&ho);
    free(q);
    free(k);
    free(v);
    free(c);
}

static filo_tensor *lengths_on(filo_device dev, int64_t B, const int64_t *klen)
{
    double l[16];
    for (int64_t b = 0; b < B; b++)
        l[b] = (double)klen[b];
    return filo_test_upload(dev, FILO_I64, 1, (int64_t[]){B}, l);
}

/* ---- activation parsing ---- */

Test(nn_modules, activation_parse)
{
    const char *names[] = {"gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh", "silu", "swish", "sigmoid"};
    filo_activation want[] = {FILO_ACT_GELU, FILO_ACT_GELU_TANH, FILO_ACT_GELU_TANH, FILO_ACT_RELU,
                              FILO_ACT_TANH, FILO_ACT_SILU,      FILO_ACT_SILU,      FILO_ACT_SIGMOID};
    for (int i = 0; i < 8; i++) {
        filo_activation a;
        FILO_CHECK(filo_activation_parse(names[i], &a));
        cr_assert_eq(a, want[i], "%s", names[i]);
    }
    filo_activation a;
    FILO_CHECK_FAILS(filo_activation_parse("gelu_fast2", &a), FILO_ERR_INVALID_ARG, "gelu_fast2");
    FILO_CHECK_FAILS(filo_activation_parse(NULL, &a), FILO_ERR_INVALID_ARG, "NULL");
}

/* ---- Linear ---- */

Test(nn_modules, linear_forward_init_and_activations)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_params *ps;
        FILO_CHECK(filo_params_new(devs[d], 11, &ps));
        filo_nn_linear lin, nob;
        FILO_CHECK(filo_nn_linear_init(&lin, ps, "fc", 37, 23, 1));
        FILO_CHECK(filo_nn_linear_init(&nob, ps, "nob", 37, 23, 0));
        cr_assert_null(nob.bias);
        cr_assert_eq(filo_params_count(ps), 3);
        cr_assert_str_eq(filo_params_name_at(ps, 0), "fc.weight");
        cr_assert_str_eq(filo_params_name_at(ps, 1), "fc.bias");
        cr_assert_eq(filo_params_role_at(ps, 0), FILO_PARAM_WEIGHT);
        cr_assert_eq(filo_params_role_at(ps, 1), FILO_PARAM_BIAS);
        host_linear h = host_of(&lin);
        /* kaiming_uniform(a = sqrt 5) and the bias both draw from U(+-1/sqrt(in)) */
        double bound = 1.0 / sqrt(37.0), wmax = 0, bmax = 0;
        for (int i = 0; i < 37 * 23; i++)
            wmax = fmax(wmax, fabs(h.w[i]));
        for (int i = 0; i < 23; i++)
            bmax = fmax(bmax, fabs(h.b[i]));
        cr_assert(wmax <= bound && wmax > 0.9 * bound, "weight max %g, bound %g", wmax, bound);
        cr_assert(bmax <= bound && bmax > 0.5 * bound, "bias max %g, bound %g", bmax, bound);

        filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
        /* ranks 2, 3 and 4 */
        const int64_t shapes[3][4] = {{7, 37}, {3, 5, 37}, {2, 3, 2, 37}};
        const int ranks[3] = {2, 3, 4};
        for (int r = 0; r < 3; r++) {
            double *xh;
            filo_var *x = rand_var(devs[d], FILO_F32, ranks[r], shapes[r], 20 + r, -2, 2, 0, &xh);
            int64_t rows = numel_of(ranks[r], shapes[r]) / 37;
            double *want = malloc(sizeof(double) * (size_t)(rows * 23));
            double *want_act = malloc(sizeof(double) * (size_t)(rows * 23));
            ref_linear(xh, h.w, h.b, rows, 37, 23, want);
            filo_var *y;
            FILO_CHECK(filo_nn_linear_forward(&lin, &ctx, x, &y));
            cr_assert_eq(filo_var_value(y)->ndim, ranks[r]);
            cr_assert_eq(filo_var_value(y)->shape[ranks[r] - 1], 23);
            cr_assert_eq(filo_var_value(y)->shape[0], shapes[r][0]);
            expect_close_var("linear", devs[d], y, want, 1e-5, 1e-5);
            filo_var_free(y);
            for (int a = FILO_ACT_GELU; a <= FILO_ACT_NONE; a++) {
                for (int64_t i = 0; i < rows * 23; i++)
                    want_act[i] = ref_act((filo_activation)a, want[i]);
                FILO_CHECK(filo_nn_linear_forward_act(&lin, &ctx, x, (filo_activation)a, &y));
                expect_close_var("linear_act", devs[d], y, want_act, 1e-5, 1e-5);
                filo_var_free(y);
            }
            host_linear hn = host_of(&nob);
            ref_linear(xh, hn.w, NULL, rows, 37, 23, want);
            for (int64_t i = 0; i < rows * 23; i++)
                want_act[i] = ref_act(FILO_ACT_GELU, want[i]);
            FILO_CHECK(filo_nn_linear_forward_act(&nob, &ctx, x, FILO_ACT_GELU, &y));
            expect_close_var("linear_nobias_gelu", devs[d], y, want_act, 1e-5, 1e-5);
            filo_var_free(y);
            host_free(&hn);
            free(want);
            free(want_act);
            free(xh);
            filo_var_free(x);
        }
        host_free(&h);
        filo_params_free(ps);
    }
}

/* ---- Embedding ---- */

Test(nn_modules, embedding_padding_row)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_params *ps;
        FILO_CHECK(filo_params_new(devs[d], 3, &ps));
        filo_nn_embedding e;
        FILO_CHECK(filo_nn_embedding_init(&e, ps, "word_embeddings", 53, 41, 2));
        cr_assert_eq(filo_params_role_at(ps, 0), FILO_PARAM_EMBEDDING);
        double *w = vals(e.weight), sum = 0, sq = 0;
        for (int j = 0; j < 41; j++)
            cr_assert_eq(w[2 * 41 + j], 0.0, "padding row starts at zero");
        for (int i = 0; i < 53 * 41; i++) {
            sum += w[i];
            sq += w[i] * w[i];
        }
        double n = 52 * 41, mean = sum / n, sd = sqrt(sq / n - mean * mean);
        cr_assert(fabs(mean) < 0.08 && fabs(sd - 1.0) < 0.08, "N(0, 1) init: mean %g sd %g", mean, sd);
        const double ids[7] = {5, 2, 52, 0, 2, 17, 5};
        filo_tensor *t = filo_test_upload(devs[d], FILO_I64, 2, (int64_t[]){7, 1}, ids);
        filo_nn_ctx ctx = filo_nn_ctx_make(1, NULL);
        filo_var *y;
        FILO_CHECK(filo_nn_embedding_forward(&e, &ctx, t, &y));
        double want[7 * 41];
        for (int i = 0; i < 7; i++)
            for (int j = 0; j < 41; j++)
                want[i * 41 + j] = w[(int)ids[i] * 41 + j];
        cr_assert_eq(filo_var_value(y)->ndim, 3);
        expect_close_var("embedding", devs[d], y, want, 0, 0);
        filo_var *s;
        FILO_CHECK(filo_ag_sum(y, -1, 0, &s));
        filo_var *tot;
        FILO_CHECK(filo_ag_sum(s, 0, 0, &tot));
        filo_var *tot2;
        FILO_CHECK(filo_ag_sum(tot, 0, 0, &tot2));
        FILO_CHECK(filo_backward(tot2, NULL, 0));
        double *g = filo_test_download(filo_var_grad(e.weight));
        for (int j = 0; j < 41; j++) {
            cr_assert_eq(g[2 * 41 + j], 0.0, "the padding row gets no gradient");
            cr_assert_eq(g[5 * 41 + j], 2.0);
            cr_assert_eq(g[17 * 41 + j], 1.0);
            cr_assert_eq(g[1 * 41 + j], 0.0);
        }
        filo_tensor *bad = filo_test_upload(devs[d], FILO_F32, 1, (int64_t[]){2}, ids);
        filo_var *z = NULL;
        FILO_CHECK_FAILS(filo_nn_embedding_forward(&e, &ctx, bad, &z), FILO_ERR_DTYPE, "i32 or i64");
        filo_nn_embedding e2;
        FILO_CHECK_FAILS(filo_nn_embedding_init(&e2, ps, "x", 5, 4, 5), FILO_ERR_INVALID_ARG, "padding_idx");
        filo_tensor_free(bad);
        free(g);
        free(w);
        filo_var_free(s);
        filo_var_free(tot);
        filo_var_free(tot2);
        filo_var_free(y);
        filo_tensor_free(t);
        filo_params_free(ps);
    }
}

/* ---- LayerNorm, RMSNorm ---- */

Test(nn_modules, norms_with_residual_and_h_out)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_params *ps;
        FILO_CHECK(filo_params_new(devs[d], 5, &ps));
        filo_nn_layernorm ln;
        filo_nn_rmsnorm rms;
        FILO_CHECK(filo_nn_layernorm_init(&ln, ps, "ln", 33, 1e-5));
        FILO_CHECK(filo_nn_rmsnorm_init(&rms, ps, "rms", 33, 1e-6));
        cr_assert_eq(filo_params_role_at(ps, 0), FILO_PARAM_NORM);
        cr_assert_eq(filo_params_role_at(ps, 1), FILO_PARAM_NORM);
        cr_assert_eq(filo_params_role_at(ps, 2), FILO_PARAM_NORM);
        double *g0 = vals(ln.weight), *b0 = vals(ln.bias);
        for (int j = 0; j < 33; j++)
            cr_assert(g0[j] == 1.0 && b0[j] == 0.0, "LayerNorm starts at ones / zeros");
        free(g0);
        free(b0);
        randomize(ln.weight, 1, 0.5, 1.5);
        randomize(ln.bias, 2, -0.5, 0.5);
        randomize(rms.weight, 3, 0.5, 1.5);
        double *g = vals(ln.weight), *b = vals(ln.bias), *gr = vals(rms.weight), *xh, *rh;
        const int64_t shape[3] = {4, 5, 33};
        filo_var *x = rand_var(devs[d], FILO_F32, 3, shape, 31, -2, 3, 0, &xh);
        filo_var *r = rand_var(devs[d], FILO_F32, 3, shape, 32, -1, 1, 0, &rh);
        double want[4 * 5 * 33], hw[4 * 5 * 33];
        filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
        filo_var *y, *h;
        ref_norm(xh, NULL, g, b, 20, 33, 1e-5, want);
        FILO_CHECK(filo_nn_layernorm_forward(&ln, &ctx, x, NULL, &y, NULL));
        expect_close_var("layernorm", devs[d], y, want, 1e-5, 1e-5);
        filo_var_free(y);
        ref_norm(xh, rh, g, b, 20, 33, 1e-5, want);
        FILO_CHECK(filo_nn_layernorm_forward(&ln, &ctx, x, r, &y, &h));
        expect_close_var("layernorm+residual", devs[d], y, want, 1e-5, 1e-5);
        for (int i = 0; i < 660; i++)
            hw[i] = xh[i] + rh[i];
        expect_close_var("layernorm h_out", devs[d], h, hw, 1e-6, 1e-6);
        filo_var_free(y);
        filo_var_free(h);
        ref_norm(xh, rh, gr, NULL, 20, 33, 1e-6, want);
        FILO_CHECK(filo_nn_rmsnorm_forward(&rms, &ctx, x, r, &y, &h));
        expect_close_var("rmsnorm+residual", devs[d], y, want, 1e-5, 1e-5);
        filo_var_free(y);
        filo_var_free(h);
        ref_norm(xh, NULL, gr, NULL, 20, 33, 1e-6, want);
        FILO_CHECK(filo_nn_rmsnorm_forward(&rms, &ctx, x, NULL, &y, NULL));
        expect_close_var("rmsnorm", devs[d], y, want, 1e-5, 1e-5);
        filo_var_free(y);

        /* errors */
        filo_var *bad = rand_var(devs[d], FILO_F32, 2, (int64_t[]){4, 32}, 1, -1, 1, 0, NULL);
        FILO_CHECK_FAILS(filo_nn_layernorm_forward(&ln, &ctx, bad, NULL, &y, NULL), FILO_ERR_SHAPE, "last dim must be 33");
        FILO_CHECK_FAILS(filo_nn_layernorm_forward(&ln, &ctx, x, NULL, &y, &h), FILO_ERR_INVALID_ARG, "residual");
        FILO_CHECK_FAILS(filo_nn_rmsnorm_forward(&rms, NULL, x, NULL, &y, NULL), FILO_ERR_INVALID_ARG, "ctx");
        filo_var_free(bad);
        free(g);
        free(b);
        free(gr);
        free(xh);
        free(rh);
        filo_var_free(x);
        filo_var_free(r);
        filo_params_free(ps);
    }
}

/* ---- Dropout ---- */

Test(nn_modules, dropout_eval_identity_and_training_statistics)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        const int64_t n = 40001;
        double *xh;
        filo_var *x = rand_var(devs[d], FILO_F32, 1, &n, 9, 0.5, 2, 0, &xh);
        filo_nn_dropout m = {0.3};
        filo_nn_ctx ev = filo_nn_ctx_make(0, NULL);
        filo_var *y;
        FILO_CHECK(filo_nn_dropout_forward(&m, &ev, x, &y));
        expect_close_var("eval dropout", devs[d], y, xh, 1e-7, 0);
        filo_var_free(y);
        filo_generator gen;
        filo_generator_init(&gen, 77);
        filo_nn_ctx tr = filo_nn_ctx_make(1, &gen);
        FILO_CHECK(filo_nn_dropout_forward(&m, &tr, x, &y));
        double *yh = vals(y);
        int64_t zeros = 0;
        for (int64_t i = 0; i < n; i++) {
            if (yh[i] == 0.0)
                zeros++;
            else
                cr_assert(fabs(yh[i] - xh[i] / 0.7) <= 1e-6 * fabs(yh[i]), "kept values are scaled by 1 / (1 - p)");
        }
        double frac = (double)zeros / (double)n;
        cr_log_info("%s: dropout p 0.3 dropped %.4f", filo_test_backend_name(devs[d]), frac);
        cr_assert(fabs(frac - 0.3) < 0.01, "dropped fraction %g for p = 0.3", frac);
        free(yh);
        filo_var_free(y);
        filo_nn_ctx nogen = filo_nn_ctx_make(1, NULL);
        FILO_CHECK_FAILS(filo_nn_dropout_forward(&m, &nogen, x, &y), FILO_ERR_INVALID_ARG, "ctx->gen");
        filo_nn_dropout bad = {1.5};
        FILO_CHECK_FAILS(filo_nn_dropout_forward(&bad, &tr, x, &y), FILO_ERR_INVALID_ARG, "1.5");
        free(xh);
        filo_var_free(x);
    }
}

/* ---- FeedForward ---- */

Test(nn_modules, feedforward_forward)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_params *ps;
        FILO_CHECK(filo_params_new(devs[d], 8, &ps));
        filo_nn_feedforward ff;
        FILO_CHECK(filo_nn_feedforward_init(&ff, ps, "intermediate.dense", "output.dense", 35, 47, FILO_ACT_GELU, 0.1));
        cr_assert_str_eq(filo_params_name_at(ps, 2), "output.dense.weight");
        double *xh;
        const int64_t shape[3] = {2, 3, 35};
        filo_var *x = rand_var(devs[d], FILO_F32, 3, shape, 4, -1, 1, 0, &xh);
        host_linear up = host_of(&ff.up), dn = host_of(&ff.down);
        double hid[6 * 47], want[6 * 35];
        ref_linear(xh, up.w, up.b, 6, 35, 47, hid);
        for (int i = 0; i < 6 * 47; i++)
            hid[i] = ref_act(FILO_ACT_GELU, hid[i]);
        ref_linear(hid, dn.w, dn.b, 6, 47, 35, want);
        filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
        filo_var *y;
        FILO_CHECK(filo_nn_feedforward_forward(&ff, &ctx, x, &y));
        expect_close_var("feedforward (eval)", devs[d], y, want, 1e-5, 1e-5);
        filo_var_free(y);
        /* training: bias + dropout fused; kept elements equal the reference / (1 - p) */
        filo_generator gen;
        filo_generator_init(&gen, 1);
        filo_nn_ctx tr = filo_nn_ctx_make(1, &gen);
        FILO_CHECK(filo_nn_feedforward_forward(&ff, &tr, x, &y));
        double *yh = vals(y);
        int dropped = 0;
        for (int i = 0; i < 6 * 35; i++) {
            if (yh[i] == 0.0)
                dropped++;
            else
                cr_assert(fabs(yh[i] - want[i] / 0.9) <= 1e-5 + 1e-5 * fabs(want[i]));
        }
        cr_assert(dropped > 0 && dropped < 60, "%d of 210 dropped at p = 0.1", dropped);
        free(yh);
        filo_var_free(y);
        host_free(&up);
        host_free(&dn);
        free(xh);
        filo_var_free(x);
        filo_params_free(ps);
    }
}

/* ---- MultiHeadAttention ---- */

Test(nn_modules, mha_self_and_cross_with_masks)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_params *ps;
        FILO_CHECK(filo_params_new(devs[d], 21, &ps));
        filo_nn_mha m;
        FILO_CHECK(filo_nn_mha_init(&m, ps, "attention.self", "attention.output.dense", 64, 2, 0.0));
        const int64_t B = 2, Lq = 5, Lk = 7;
        double *xh, *kvh;
        filo_var *x = rand_var(devs[d], FILO_F32, 3, (int64_t[]){B, Lq, 64}, 40, -1, 1, 0, &xh);
        filo_var *kv = rand_var(devs[d], FILO_F32, 3, (int64_t[]){B, Lk, 64}, 41, -1, 1, 0, &kvh);
        filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
        double want[2 * 5 * 64];
        const int64_t klen_self[2] = {5, 3}, klen_cross[2] = {4, 7};
        filo_tensor *ls = lengths_on(devs[d], B, klen_self), *lc = lengths_on(devs[d], B, klen_cross);
        struct {
            const char *name;
            int cross;
            const int64_t *klen;
            filo_tensor *lt;
            int causal;
        } cases[] = {
            {"self", 0, NULL, NULL, 0},           {"self+padding", 0, klen_self, ls, 0},
            {"self+causal", 0, NULL, NULL, 1},    {"self+padding+causal", 0, klen_self, ls, 1},
            {"cross", 1, NULL, NULL, 0},          {"cross+padding", 1, klen_cross, lc, 0},
            {"cross+causal", 1, klen_cross, lc, 1},
        };
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            filo_attention_mask mask = {cases[c].lt, cases[c].causal};
            int use_mask = cases[c].lt || cases[c].causal;
            ref_mha(&m, xh, cases[c].cross ? kvh : NULL, B, Lq, cases[c].cross ? Lk : Lq, cases[c].klen,
                    cases[c].causal, want);
            filo_var *y;
            FILO_CHECK(filo_nn_mha_forward(&m, &ctx, x, cases[c].cross ? kv : NULL, use_mask ? &mask : NULL, &y));
            const int64_t ys[3] = {B, Lq, 64};
            FILO_CHECK(filo_tensor_check_shape(filo_var_value(y), "y", 3, ys));
            expect_close_var(cases[c].name, devs[d], y, want, 1e-4, 1e-5);
            filo_var_free(y);
        }
        /* training with attention dropout changes the output; eval does not */
        filo_nn_mha md = m;
        md.dropout = 0.5;
        filo_generator gen;
        filo_generator_init(&gen, 5);
        filo_nn_ctx tr = filo_nn_ctx_make(1, &gen);
        filo_var *y0, *y1;
        FILO_CHECK(filo_nn_mha_forward(&md, &ctx, x, NULL, NULL, &y0));
        ref_mha(&m, xh, NULL, B, Lq, Lq, NULL, 0, want);
        expect_close_var("eval ignores attention dropout", devs[d], y0, want, 1e-4, 1e-5);
        FILO_CHECK(filo_nn_mha_forward(&md, &tr, x, NULL, NULL, &y1));
        double *a = vals(y1), diff = 0;
        for (int i = 0; i < B * Lq * 64; i++)
            diff = fmax(diff, fabs(a[i] - want[i]));
        cr_assert_gt(diff, 1e-3, "attention dropout had no effect");
        free(a);
        filo_var_free(y0);
        filo_var_free(y1);

        /* bad arguments */
        filo_var *y = NULL;
        filo_var *x2 = rand_var(devs[d], FILO_F32, 2, (int64_t[]){5, 64}, 1, -1, 1, 0, NULL);
        filo_var *x63 = rand_var(devs[d], FILO_F32, 3, (int64_t[]){2, 5, 63}, 1, -1, 1, 0, NULL);
        filo_var *kv3 = rand_var(devs[d], FILO_F32, 3, (int64_t[]){3, 7, 64}, 1, -1, 1, 0, NULL);
        FILO_CHECK_FAILS(filo_nn_mha_forward(&m, &ctx, x2, NULL, NULL, &y), FILO_ERR_SHAPE, "[B, L, 64]");
        FILO_CHECK_FAILS(filo_nn_mha_forward(&m, &ctx, x63, NULL, NULL, &y), FILO_ERR_SHAPE, "x is");
        FILO_CHECK_FAILS(filo_nn_mha_forward(&m, &ctx, x, kv3, NULL, &y), FILO_ERR_SHAPE, "batch 3");
        FILO_CHECK_FAILS(filo_nn_mha_forward(&m, &ctx, NULL, NULL, NULL, &y), FILO_ERR_INVALID_ARG, "NULL");
        FILO_CHECK_FAILS(filo_nn_mha_forward(&md, &(filo_nn_ctx){1, NULL, FILO_F32}, x, NULL, NULL, &y),
                         FILO_ERR_INVALID_ARG, "ctx->gen");
        filo_nn_mha bad;
        FILO_CHECK_FAILS(filo_nn_mha_init(&bad, ps, "b", "bo", 48, 2, 0.0), FILO_ERR_UNSUPPORTED, "head_dim");
        FILO_CHECK_FAILS(filo_nn_mha_init(&bad, ps, "b", "bo", 64, 3, 0.0), FILO_ERR_INVALID_ARG, "multiple of heads");
        FILO_CHECK_FAILS(filo_nn_mha_init(&bad, ps, "b", "bo", 512, 2, 0.0), FILO_ERR_UNSUPPORTED, "256");
        filo_var_free(x2);
        filo_var_free(x63);
        filo_var_free(kv3);
        filo_tensor_free(ls);
        filo_tensor_free(lc);
        free(xh);
        free(kvh);
        filo_var_free(x);
        filo_var_free(kv);
        filo_params_free(ps);
    }
}

/* ---- TransformerEncoderLayer ---- */

static const char *const bert_layer_names[16] = {
    "encoder.layer.0.attention.self.query.weight",     "encoder.layer.0.attention.self.query.bias",
    "encoder.layer.0.attention.self.key.weight",       "encoder.layer.0.attention.self.key.bias",
    "encoder.layer.0.attention.self.value.weight",     "encoder.layer.0.attention.self.value.bias",
    "encoder.layer.0.attention.output.dense.weight",   "encoder.layer.0.attention.output.dense.bias",
    "encoder.layer.0.attention.output.LayerNorm.weight", "encoder.layer.0.attention.output.LayerNorm.bias",
    "encoder.layer.0.intermediate.dense.weight",       "encoder.layer.0.intermediate.dense.bias",
    "encoder.layer.0.output.dense.weight",             "encoder.layer.0.output.dense.bias",
    "encoder.layer.0.output.LayerNorm.weight",         "encoder.layer.0.output.LayerNorm.bias",
};

Test(nn_modules, transformer_layer_names_counts_roles)
{
    filo_params *ps;
    FILO_CHECK(filo_params_new(filo_cpu(), 1, &ps));
    filo_nn_transformer_layer l;
    filo_nn_transformer_config cfg = {64, 2, 96, FILO_ACT_GELU, 0.1, 0.1, 1e-12, 1};
    FILO_CHECK(filo_nn_transformer_layer_init(&l, ps, "encoder.layer.0", &cfg));
    cr_assert_eq(filo_params_count(ps), 16);
    for (int i = 0; i < 16; i++)
        cr_assert_str_eq(filo_params_name_at(ps, i), bert_layer_names[i]);
    const filo_param_role roles[16] = {FILO_PARAM_WEIGHT, FILO_PARAM_BIAS, FILO_PARAM_WEIGHT, FILO_PARAM_BIAS,
                                       FILO_PARAM_WEIGHT, FILO_PARAM_BIAS, FILO_PARAM_WEIGHT, FILO_PARAM_BIAS,
                                       FILO_PARAM_NORM,   FILO_PARAM_NORM, FILO_PARAM_WEIGHT, FILO_PARAM_BIAS,
                                       FILO_PARAM_WEIGHT, FILO_PARAM_BIAS, FILO_PARAM_NORM,   FILO_PARAM_NORM};
    for (int i = 0; i < 16; i++)
        cr_assert_eq(filo_params_role_at(ps, i), roles[i], "%s", bert_layer_names[i]);
    int64_t D = 64, F = 96;
    cr_assert_eq(filo_params_numel(ps, 0), 4 * (D * D + D) + 4 * D + (D * F + F) + (F * D + D));
    /* BERT-base's per-layer count, as Hugging Face reports it */
    filo_params *big;
    FILO_CHECK(filo_params_new(filo_cpu(), 1, &big));
    filo_nn_transformer_config base = {768, 12, 3072, FILO_ACT_GELU, 0.1, 0.1, 1e-12, 1};
    FILO_CHECK(filo_nn_transformer_layer_init(&l, big, "encoder.layer.0", &base));
    cr_assert_eq(filo_params_numel(big, 0), 7087872);
    filo_params_free(big);
    cr_assert_eq(l.attn.heads, 12);
    FILO_CHECK_FAILS(filo_nn_transformer_layer_init(&l, ps, "encoder.layer.0", &cfg), FILO_ERR_INVALID_ARG,
                     "already exists");
    filo_nn_transformer_config bad = cfg;
    bad.heads = 4; /* head_dim 16 */
    FILO_CHECK_FAILS(filo_nn_transformer_layer_init(&l, ps, "encoder.layer.1", &bad), FILO_ERR_UNSUPPORTED,
                     "head_dim");
    filo_params_free(ps);
}

/* float64 layer: post-LN or pre-LN, eval mode. */
static void ref_layer(const filo_nn_transformer_layer *l, const double *x, int64_t B, int64_t L, const int64_t *klen,
                      double *y)
{
    int64_t D = l->attn.dim, F = l->intermediate.out_features, n = B * L;
    double *g1 = vals(l->attn_norm.weight), *b1 = vals(l->attn_norm.bias), *g2 = vals(l->ffn_norm.weight),
           *b2 = vals(l->ffn_norm.bias);
    double *a = malloc(sizeof(double) * (size_t)(n * D)), *h = malloc(sizeof(double) * (size_t)(n * D));
    double *t = malloc(sizeof(double) * (size_t)(n * D)), *f = malloc(sizeof(double) * (size_t)(n * F));
    host_linear hi = host_of(&l->intermediate), ho = host_of(&l->output);
    double eps = l->attn_norm.eps;
    if (l->post_ln) {
        ref_mha(&l->attn, x, NULL, B, L, L, klen, 0, a);
        ref_norm(a, x, g1, b1, n, D, eps, h);
        ref_linear(h, hi.w, hi.b, n, D, F, f);
        for (int64_t i = 0; i < n * F; i++)
            f[i] = ref_act(l->act, f[i]);
        ref_linear(f, ho.w, ho.b, n, F, D, t);
        ref_norm(t, h, g2, b2, n, D, eps, y);
    } else {
        ref_norm(x, NULL, g1, b1, n, D, eps, t);
        ref_mha(&l->attn, t, NULL, B, L, L, klen, 0, a);
        for (int64_t i = 0; i < n * D; i++)
            h[i] = x[i] + a[i];
        ref_norm(h, NULL, g2, b2, n, D, eps, t);
        ref_linear(t, hi.w, hi.b, n, D, F, f);
        for (int64_t i = 0; i < n * F; i++)
            f[i] = ref_act(l->act, f[i]);
        ref_linear(f, ho.w, ho.b, n, F, D, y);
        for (int64_t i = 0; i < n * D; i++)
            y[i] += h[i];
    }
    host_free(&hi);
    host_free(&ho);
    free(g1);
    free(b1);
    free(g2);
    free(b2);
    free(a);
    free(h);
    free(t);
    free(f);
}

Test(nn_modules, transformer_layer_post_ln_and_pre_ln)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        const int64_t B = 2, L = 5, D = 64;
        double *xh;
        filo_var *x = rand_var(devs[d], FILO_F32, 3, (int64_t[]){B, L, D}, 60, -1, 1, 0, &xh);
        const int64_t klen[2] = {5, 2};
        filo_tensor *lt = lengths_on(devs[d], B, klen);
        filo_attention_mask mask = {lt, 0};
        double *outs[2];
        for (int post = 0; post < 2; post++) {
            filo_params *ps;
            FILO_CHECK(filo_params_new(devs[d], 99, &ps));
            filo_nn_transformer_layer l;
            filo_nn_transformer_config cfg = {D, 2, 96, post ? FILO_ACT_GELU : FILO_ACT_GELU_TANH, 0.2, 0.1, 1e-5,
                                              post};
            FILO_CHECK(filo_nn_transformer_layer_init(&l, ps, "layer", &cfg));
            randomize(l.attn_norm.weight, 1, 0.5, 1.5);
            randomize(l.attn_norm.bias, 2, -0.3, 0.3);
            randomize(l.ffn_norm.weight, 3, 0.5, 1.5);
            randomize(l.ffn_norm.bias, 4, -0.3, 0.3);
            double want[2 * 5 * 64];
            ref_layer(&l, xh, B, L, klen, want);
            filo_nn_ctx ev = filo_nn_ctx_make(0, NULL);
            filo_var *y;
            FILO_CHECK(filo_nn_transformer_layer_forward(&l, &ev, x, &mask, &y));
            expect_close_var(post ? "post-LN layer" : "pre-LN layer", devs[d], y, want, 1e-4, 1e-4);
            outs[post] = vals(y);
            filo_var_free(y);
            /* the training path (bias + dropout + residual fused, LayerNorm after) with a dropout too
             * small to drop anything gives the eval result */
            filo_nn_transformer_layer lt = l;
            lt.dropout = 1e-9;
            lt.attn.dropout = 0.0;
            filo_generator g0;
            filo_generator_init(&g0, 9);
            filo_nn_ctx tr0 = filo_nn_ctx_make(1, &g0);
            FILO_CHECK(filo_nn_transformer_layer_forward(&lt, &tr0, x, &mask, &y));
            expect_close_var(post ? "post-LN layer, fused dropout path" : "pre-LN layer, fused dropout path", devs[d],
                             y, want, 1e-4, 1e-4);
            filo_var_free(y);
            /* training: dropout makes it differ, and the backward reaches every parameter */
            filo_generator gen;
            filo_generator_init(&gen, 3);
            filo_nn_ctx tr = filo_nn_ctx_make(1, &gen);
            FILO_CHECK(filo_nn_transformer_layer_forward(&l, &tr, x, &mask, &y));
            double *yt = vals(y), diff = 0;
            for (int i = 0; i < B * L * D; i++)
                diff = fmax(diff, fabs(yt[i] - want[i]));
            cr_assert_gt(diff, 1e-2, "training-mode dropout had no effect");
            free(yt);
            filo_var *s1, *s2, *s3;
            FILO_CHECK(filo_ag_sum(y, 2, 0, &s1));
            FILO_CHECK(filo_ag_sum(s1, 1, 0, &s2));
            FILO_CHECK(filo_ag_sum(s2, 0, 0, &s3));
            FILO_CHECK(filo_backward(s3, NULL, 0));
            for (int i = 0; i < filo_params_count(ps); i++)
                cr_assert_not_null(filo_var_grad(filo_params_at(ps, i)), "%s has no gradient",
                                   filo_params_name_at(ps, i));
            filo_var_free(s1);
            filo_var_free(s2);
            filo_var_free(s3);
            filo_var_free(y);
            filo_params_free(ps);
        }
        double diff = 0;
        for (int i = 0; i < B * L * D; i++)
            diff = fmax(diff, fabs(outs[0][i] - outs[1][i]));
        cr_assert_gt(diff, 0.1, "pre-LN and post-LN gave the same output");
        free(outs[0]);
        free(outs[1]);
        filo_tensor_free(lt);
        free(xh);
        filo_var_free(x);
    }
}

/* ---- freezing ---- */

Test(nn_modules, freezing_a_prefix_stops_its_gradients)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_params *ps;
        FILO_CHECK(filo_params_new(devs[d], 4, &ps));
        filo_nn_embedding e;
        filo_nn_transformer_layer l0, l1;
        filo_nn_linear head;
        filo_nn_transformer_config cfg = {32, 1, 40, FILO_ACT_GELU, 0.0, 0.0, 1e-12, 1};
        FILO_CHECK(filo_nn_embedding_init(&e, ps, "embeddings.word_embeddings", 11, 32, 0));
        FILO_CHECK(filo_nn_transformer_layer_init(&l0, ps, "encoder.layer.0", &cfg));
        FILO_CHECK(filo_nn_transformer_layer_init(&l1, ps, "encoder.layer.1", &cfg));
        FILO_CHECK(filo_nn_linear_init(&head, ps, "classifier", 32, 3, 1));
        int64_t per_layer = 4 * (32 * 32 + 32) + 4 * 32 + (32 * 40 + 40) + (40 * 32 + 32);
        cr_assert_eq(filo_params_numel(ps, 0), 11 * 32 + 2 * per_layer + 32 * 3 + 3);
        int n;
        FILO_CHECK(filo_params_freeze(ps, "embeddings", 1, &n));
        cr_assert_eq(n, 1);
        FILO_CHECK(filo_params_freeze(ps, "encoder.layer.0", 1, &n));
        cr_assert_eq(n, 16);
        cr_assert_eq(filo_params_numel(ps, 1), per_layer + 32 * 3 + 3);
        const double ids[6] = {1, 4, 0, 9, 3, 3};
        filo_tensor *t = filo_test_upload(devs[d], FILO_I64, 2, (int64_t[]){2, 3}, ids);
        filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
        filo_var *a, *b, *c, *y, *s1, *s2, *s3;
        FILO_CHECK(filo_nn_embedding_forward(&e, &ctx, t, &a));
        FILO_CHECK(filo_nn_transformer_layer_forward(&l0, &ctx, a, NULL, &b));
        FILO_CHECK(filo_nn_transformer_layer_forward(&l1, &ctx, b, NULL, &c));
        FILO_CHECK(filo_nn_linear_forward(&head, &ctx, c, &y));
        FILO_CHECK(filo_ag_sum(y, 2, 0, &s1));
        FILO_CHECK(filo_ag_sum(s1, 1, 0, &s2));
        FILO_CHECK(filo_ag_sum(s2, 0, 0, &s3));
        FILO_CHECK(filo_backward(s3, NULL, 0));
        for (int i = 0; i < filo_params_count(ps); i++) {
            const char *name = filo_params_name_at(ps, i);
            int frozen = strncmp(name, "embeddings.", 11) == 0 || strncmp(name, "encoder.layer.0.", 16) == 0;
            if (frozen)
                cr_assert_null(filo_var_grad(filo_params_at(ps, i)), "frozen %s got a gradient", name);
            else
                cr_assert_not_null(filo_var_grad(filo_params_at(ps, i)), "%s got no gradient", name);
        }
        filo_var *all[] = {a, b, c, y, s1, s2, s3};
        for (int i = 0; i < 7; i++)
            filo_var_free(all[i]);
        filo_tensor_free(t);
        filo_params_free(ps);
    }
}

/* ---- gradients ---- */

/* Linear on explicit variables: inputs x, weight, bias (dtype from the test). */
static filo_status linear_fn(void *user, filo_var *const *in, filo_var **out)
{
    const filo_activation *act = user;
    filo_tensor *w = filo_var_value(in[1]);
    filo_nn_linear m = {in[1], in[2], w->shape[1], w->shape[0]};
    filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
    return filo_nn_linear_forward_act(&m, &ctx, in[0], *act, out);
}

Test(nn_modules, linear_gradients)
{
    filo_activation acts[3] = {FILO_ACT_NONE, FILO_ACT_GELU, FILO_ACT_GELU_TANH};
    for (int a = 0; a < 3; a++) {
        gradcheck_case c = {
            .name = "linear",
            .n_inputs = 3,
            .inputs = {{3, {2, 3, 7}, -1, 1, NULL, 0}, {2, {5, 7}, -1, 1, NULL, 0}, {1, {5}, -0.5, 0.5, NULL, 0}},
            .fn = linear_fn,
            .ctx = &acts[a],
            .seed = 3 + (uint64_t)a,
        };
        gradcheck_fd(&c);
        cr_assert_geq(gradcheck_parity(&c, FILO_F32), 1);
    }
}

/* MHA on explicit variables: x, Wq, bq, Wk, bk, Wv, bv, Wo (no output bias, to fit 8 inputs). */
typedef struct mha_case {
    int64_t heads;
    int causal;
    int64_t klen[2];
    int padded;
} mha_case;

static filo_status mha_fn(void *user, filo_var *const *in, filo_var **out)
{
    const mha_case *mc = user;
    int64_t dim = filo_var_value(in[0])->shape[2];
    filo_nn_mha m = {
        .query = {in[1], in[2], dim, dim},
        .key = {in[3], in[4], dim, dim},
        .value = {in[5], in[6], dim, dim},
        .out = {in[7], NULL, dim, dim},
        .dim = dim,
        .heads = mc->heads,
    };
    filo_tensor *lt = mc->padded ? lengths_on(filo_var_value(in[0])->device, 2, mc->klen) : NULL;
    filo_attention_mask mask = {lt, mc->causal};
    filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
    filo_status s = filo_nn_mha_forward(&m, &ctx, in[0], NULL, &mask, out);
    filo_tensor_free(lt);
    return s;
}

#define MHA_INPUTS(D)                                                                                     \
    {{3, {2, 3, D}, -1, 1, NULL, 0},       {2, {D, D}, -0.3, 0.3, NULL, 0}, {1, {D}, -0.1, 0.1, NULL, 0}, \
     {2, {D, D}, -0.3, 0.3, NULL, 0},      {1, {D}, -0.1, 0.1, NULL, 0},    {2, {D, D}, -0.3, 0.3, NULL, 0}, \
     {1, {D}, -0.1, 0.1, NULL, 0},         {2, {D, D}, -0.3, 0.3, NULL, 0}}

Test(nn_modules, mha_gradients)
{
    /* float64 finite differences (one head of 32: the smallest the kernel runs) */
    mha_case fd_case = {1, 1, {3, 2}, 1};
    gradcheck_case c = {
        .name = "mha causal+padding",
        .n_inputs = 8,
        .inputs = MHA_INPUTS(32),
        .fn = mha_fn,
        .ctx = &fd_case,
        .seed = 17,
        .rtol = 1e-5,
        .atol = 1e-6,
    };
    gradcheck_fd(&c);
    /* every backend in f32 against float64 gradients, two heads */
    mha_case par_case = {2, 0, {3, 1}, 1};
    gradcheck_case p = {
        .name = "mha 2 heads padding",
        .n_inputs = 8,
        .inputs = MHA_INPUTS(64),
        .fn = mha_fn,
        .ctx = &par_case,
        .seed = 18,
        .atol = 2e-5, /* the key bias's gradient is exactly 0 (softmax ignores a shift): f32 leaves ~1e-7 */
    };
    cr_assert_geq(gradcheck_parity(&p, FILO_F32), 1);
}

/* ---- Highway ---- */

Test(nn_modules, highway_forward)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_params *ps;
        FILO_CHECK(filo_params_new(devs[d], 2, &ps));
        filo_nn_highway hw;
        FILO_CHECK(filo_nn_highway_init(&hw, ps, "highway.0", 19, FILO_ACT_RELU));
        cr_assert_str_eq(filo_params_name_at(ps, 0), "highway.0.transform.weight");
        cr_assert_str_eq(filo_params_name_at(ps, 3), "highway.0.gate.bias");
        double *gb = vals(hw.gate.bias);
        for (int i = 0; i < 19; i++)
            cr_assert_eq(gb[i], -1.0, "the gate bias starts at -1");
        free(gb);
        double *xh;
        filo_var *x = rand_var(devs[d], FILO_F32, 2, (int64_t[]){6, 19}, 5, -2, 2, 0, &xh);
        host_linear ht = host_of(&hw.transform), hg = host_of(&hw.gate);
        double tr[6 * 19], gt[6 * 19], want[6 * 19];
        ref_linear(xh, ht.w, ht.b, 6, 19, 19, tr);
        ref_linear(xh, hg.w, hg.b, 6, 19, 19, gt);
        for (int i = 0; i < 6 * 19; i++) {
            double t = 1.0 / (1.0 + exp(-gt[i]));
            want[i] = t * ref_act(FILO_ACT_RELU, tr[i]) + (1 - t) * xh[i];
        }
        filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
        filo_var *y;
        FILO_CHECK(filo_nn_highway_forward(&hw, &ctx, x, &y));
        expect_close_var("highway", devs[d], y, want, 1e-5, 1e-5);
        filo_var_free(y);
        host_free(&ht);
        host_free(&hg);
        free(xh);
        filo_var_free(x);
        filo_params_free(ps);
    }
}

/* ---- Conv2d, pooling, Flatten ---- */

Test(nn_modules, conv_pool_flatten)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_params *ps;
        FILO_CHECK(filo_params_new(devs[d], 6, &ps));
        filo_nn_conv2d cv;
        filo_conv2d_params cp = {.stride_h = 2, .stride_w = 1, .pad_h = 1, .pad_w = 1};
        const int64_t N = 2, C = 3, H = 7, W = 6, K = 5, R = 3, S = 3;
        FILO_CHECK(filo_nn_conv2d_init(&cv, ps, "conv1", C, K, R, S, &cp, 1));
        double *w = vals(cv.weight), *b = vals(cv.bias), bound = 1.0 / sqrt((double)(C * R * S)), wmax = 0;
        for (int i = 0; i < K * C * R * S; i++)
            wmax = fmax(wmax, fabs(w[i]));
        cr_assert(wmax <= bound && wmax > 0.8 * bound, "conv weight max %g, bound %g", wmax, bound);
        double *xh;
        filo_var *x = rand_var(devs[d], FILO_F32, 4, (int64_t[]){N, C, H, W}, 8, -1, 1, 0, &xh);
        const int64_t OH = (H + 2 - R) / 2 + 1, OW = (W + 2 - S) + 1;
        double *want = malloc(sizeof(double) * (size_t)(N * K * OH * OW));
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++)
                for (int64_t oh = 0; oh < OH; oh++)
                    for (int64_t ow = 0; ow < OW; ow++) {
                        double s = b[k];
                        for (int64_t c = 0; c < C; c++)
                            for (int64_t r = 0; r < R; r++)
                                for (int64_t q = 0; q < S; q++) {
                                    int64_t ih = oh * 2 - 1 + r, iw = ow - 1 + q;
                                    if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                        s += xh[((n * C + c) * H + ih) * W + iw] * w[((k * C + c) * R + r) * S + q];
                                }
                        want[((n * K + k) * OH + oh) * OW + ow] = s;
                    }
        filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
        filo_var *y;
        FILO_CHECK(filo_nn_conv2d_forward(&cv, &ctx, x, &y));
        expect_close_var("conv2d", devs[d], y, want, 1e-5, 1e-5);
        filo_var_free(y);
        free(want);

        /* 2x2 max and avg pooling of x, stride 2 (7x6 -> 3x3) */
        filo_pool2d_params pp = {.kernel_h = 2, .kernel_w = 2};
        double mx[2 * 3 * 3 * 3], av[2 * 3 * 3 * 3];
        for (int64_t nc = 0; nc < N * C; nc++)
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) {
                    double m = -INFINITY, s = 0;
                    for (int r = 0; r < 2; r++)
                        for (int q = 0; q < 2; q++) {
                            double v = xh[(nc * H + 2 * i + r) * W + 2 * j + q];
                            m = fmax(m, v);
                            s += v;
                        }
                    mx[(nc * 3 + i) * 3 + j] = m;
                    av[(nc * 3 + i) * 3 + j] = s / 4;
                }
        FILO_CHECK(filo_nn_maxpool2d_forward(&pp, x, &y));
        expect_close_var("maxpool", devs[d], y, mx, 1e-7, 0);
        filo_var *f;
        FILO_CHECK(filo_nn_flatten(y, 1, -1, &f));
        const int64_t fs[2] = {2, 27};
        FILO_CHECK(filo_tensor_check_shape(filo_var_value(f), "flatten(1, -1)", 2, fs));
        expect_close_var("flatten", devs[d], f, mx, 1e-7, 0);
        filo_var_free(f);
        FILO_CHECK(filo_nn_flatten(y, 1, 2, &f));
        const int64_t fs3[3] = {2, 9, 3};
        FILO_CHECK(filo_tensor_check_shape(filo_var_value(f), "flatten(1, 2)", 3, fs3));
        filo_var_free(f);
        FILO_CHECK_FAILS(filo_nn_flatten(y, 3, 1, &f), FILO_ERR_INVALID_ARG, "start_dim = 3");
        FILO_CHECK_FAILS(filo_nn_flatten(y, 0, 4, &f), FILO_ERR_INVALID_ARG, "end_dim = 4");
        filo_var_free(y);
        FILO_CHECK(filo_nn_avgpool2d_forward(&pp, x, &y));
        expect_close_var("avgpool", devs[d], y, av, 1e-6, 1e-7);
        filo_var_free(y);

        filo_var *x4 = rand_var(devs[d], FILO_F32, 4, (int64_t[]){N, 4, H, W}, 8, -1, 1, 0, NULL);
        FILO_CHECK_FAILS(filo_nn_conv2d_forward(&cv, &ctx, x4, &y), FILO_ERR_SHAPE, "[N, 3, H, W]");
        filo_nn_conv2d bad;
        filo_conv2d_params g2 = {.groups = 2};
        FILO_CHECK_FAILS(filo_nn_conv2d_init(&bad, ps, "c2", 3, 4, 3, 3, &g2, 1), FILO_ERR_INVALID_ARG, "groups = 2");
        filo_var_free(x4);
        free(w);
        free(b);
        free(xh);
        filo_var_free(x);
        filo_params_free(ps);
    }
}

/* ---- autocast ---- */

Test(nn_modules, autocast_dtypes_and_f32_master_gradients)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        for (int h = 0; h < 2; h++) {
            filo_dtype half = h ? FILO_F16 : FILO_BF16;
            double tol = h ? 4e-3 : 3e-2;
            filo_params *ps;
            FILO_CHECK(filo_params_new(devs[d], 12, &ps));
            filo_nn_linear lin;
            filo_nn_layernorm ln;
            filo_nn_mha m;
            FILO_CHECK(filo_nn_linear_init(&lin, ps, "fc", 64, 64, 1));
            FILO_CHECK(filo_nn_layernorm_init(&ln, ps, "ln", 64, 1e-5));
            FILO_CHECK(filo_nn_mha_init(&m, ps, "att", "att.out", 64, 2, 0.0));
            double *xh;
            filo_var *x = rand_var(devs[d], FILO_F32, 3, (int64_t[]){2, 5, 64}, 70, -1, 1, 0, &xh);
            filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
            ctx.autocast = half;
            double want[640], want2[640];
            host_linear hl = host_of(&lin);
            ref_linear(xh, hl.w, hl.b, 10, 64, 64, want);
            filo_var *y, *z, *zr, *a;
            FILO_CHECK(filo_nn_linear_forward(&lin, &ctx, x, &y));
            cr_assert_eq(filo_var_value(y)->dtype, half, "Linear under autocast gives the autocast dtype");
            expect_close_var("autocast linear", devs[d], y, want, tol, tol);
            /* LayerNorm reads the half x directly (its dtype out); with an f32 residual it is f32 */
            FILO_CHECK(filo_nn_layernorm_forward(&ln, &ctx, y, NULL, &z, NULL));
            cr_assert_eq(filo_var_value(z)->dtype, half);
            FILO_CHECK(filo_nn_layernorm_forward(&ln, &ctx, y, x, &zr, NULL));
            cr_assert_eq(filo_var_value(zr)->dtype, FILO_F32);
            double ones[64], zeros[64] = {0};
            for (int i = 0; i < 64; i++)
                ones[i] = 1;
            ref_norm(want, xh, ones, zeros, 10, 64, 1e-5, want2);
            expect_close_var("autocast layernorm+residual", devs[d], zr, want2, tol, tol);
            FILO_CHECK(filo_nn_mha_forward(&m, &ctx, x, NULL, NULL, &a));
            cr_assert_eq(filo_var_value(a)->dtype, half);
            ref_mha(&m, xh, NULL, 2, 5, 5, NULL, 0, want);
            expect_close_var("autocast mha", devs[d], a, want, 3 * tol, 3 * tol);
            /* gradients reach the f32 masters as f32 */
            filo_var *s1, *s2, *s3, *c;
            FILO_CHECK(filo_ag_cast(a, FILO_F32, &c));
            FILO_CHECK(filo_ag_add(c, zr, &s1));
            FILO_CHECK(filo_ag_sum(s1, 2, 0, &s2));
            filo_var_free(s1);
            FILO_CHECK(filo_ag_sum(s2, 1, 0, &s1));
            FILO_CHECK(filo_ag_sum(s1, 0, 0, &s3));
            FILO_CHECK(filo_backward(s3, NULL, 0));
            for (int i = 0; i < filo_params_count(ps); i++) {
                filo_var *p = filo_params_at(ps, i);
                cr_assert_eq(filo_var_value(p)->dtype, FILO_F32);
                cr_assert_not_null(filo_var_grad(p), "%s: no gradient", filo_params_name_at(ps, i));
                cr_assert_eq(filo_var_grad(p)->dtype, FILO_F32, "%s: gradient is not f32", filo_params_name_at(ps, i));
            }
            filo_var *all[] = {y, z, zr, a, s1, s2, s3, c};
            for (int i = 0; i < 8; i++)
                filo_var_free(all[i]);
            host_free(&hl);
            free(xh);
            filo_var_free(x);
            filo_params_free(ps);
        }
    }
}

/* ---- bad arguments common to the modules ---- */

Test(nn_modules, bad_arguments)
{
    filo_params *ps;
    FILO_CHECK(filo_params_new(filo_cpu(), 1, &ps));
    filo_nn_linear lin;
    FILO_CHECK(filo_nn_linear_init(&lin, ps, "fc", 8, 4, 1));
    filo_nn_linear l2;
    FILO_CHECK_FAILS(filo_nn_linear_init(&l2, ps, "fc", 8, 4, 1), FILO_ERR_INVALID_ARG, "already exists");
    FILO_CHECK_FAILS(filo_nn_linear_init(&l2, ps, "g", 0, 4, 1), FILO_ERR_INVALID_ARG, "in_features = 0");
    FILO_CHECK_FAILS(filo_nn_linear_init(&l2, NULL, "g", 3, 4, 1), FILO_ERR_INVALID_ARG, "NULL");
    filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
    filo_var *y = NULL;
    filo_var *x7 = rand_var(filo_cpu(), FILO_F32, 2, (int64_t[]){3, 7}, 1, -1, 1, 0, NULL);
    filo_var *x64 = rand_var(filo_cpu(), FILO_F64, 2, (int64_t[]){3, 8}, 1, -1, 1, 0, NULL);
    FILO_CHECK_FAILS(filo_nn_linear_forward(&lin, &ctx, x7, &y), FILO_ERR_SHAPE, "in_features = 8");
    FILO_CHECK_FAILS(filo_nn_linear_forward(&lin, &ctx, x64, &y), FILO_ERR_DTYPE, "x is f64 but the weight is f32");
    FILO_CHECK_FAILS(filo_nn_linear_forward(&lin, NULL, x7, &y), FILO_ERR_INVALID_ARG, "ctx is NULL");
    FILO_CHECK_FAILS(filo_nn_linear_forward(&lin, &ctx, NULL, &y), FILO_ERR_INVALID_ARG, "NULL");
    filo_nn_ctx badctx = ctx;
    badctx.autocast = FILO_I32;
    FILO_CHECK_FAILS(filo_nn_linear_forward(&lin, &badctx, x7, &y), FILO_ERR_INVALID_ARG, "ctx->autocast is i32");
    FILO_CHECK_FAILS(filo_nn_linear_forward_act(&lin, &ctx, x7, (filo_activation)42, &y), FILO_ERR_INVALID_ARG,
                     "unknown activation 42");
    filo_nn_linear empty = {0};
    FILO_CHECK_FAILS(filo_nn_linear_forward(&empty, &ctx, x7, &y), FILO_ERR_STATE, "not initialized");
    filo_nn_transformer_layer tl;
    filo_nn_transformer_config cfg = {64, 2, 0, FILO_ACT_GELU, 0.1, 0.1, 1e-12, 1};
    FILO_CHECK_FAILS(filo_nn_transformer_layer_init(&tl, ps, "l", &cfg), FILO_ERR_INVALID_ARG, "ffn_dim = 0");
    cfg.ffn_dim = 8;
    cfg.dropout = 2;
    FILO_CHECK_FAILS(filo_nn_transformer_layer_init(&tl, ps, "l", &cfg), FILO_ERR_INVALID_ARG, "dropout = 2");
    cr_assert_null(y);
    filo_var_free(x7);
    filo_var_free(x64);
    filo_params_free(ps);
}
