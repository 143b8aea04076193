/* Training through autograd on every backend: a small MLP and a 2-layer transformer encoder
 * learn (the loss falls), a training step never synchronizes the host (emulated CUDA counts),
 * memory after a step is parameters + gradients + optimizer state, and a captured step replays
 * to the same parameters as eager steps (bitwise on the CPU). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "filo_test.h"

/* Present only in the emu/ build (the emulator's counters). */
unsigned long long filo_emu_host_sync_count(void) __attribute__((weak));
unsigned long long filo_emu_implicit_sync_count(void) __attribute__((weak));

#define MAX_PARAMS 32

#define TRY(expr)                          \
    do {                                   \
        filo_status try_s_ = (expr);       \
        if (try_s_ != FILO_OK)             \
            return try_s_;                 \
    } while (0)

/* Parameters with their Adam state and a device step counter. */
typedef struct model {
    filo_device dev;
    filo_var *p[MAX_PARAMS];
    filo_tensor *m[MAX_PARAMS], *v[MAX_PARAMS];
    int n;
    filo_tensor *step_count;
    double lr;
} model;

static filo_var *param(model *md, filo_dtype dt, int ndim, const int64_t *shape, double scale, uint64_t seed)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    double *v = malloc(sizeof *v * (size_t)n);
    filo_test_fill_random(v, n, seed, -scale, scale);
    filo_tensor *t = filo_test_upload(md->dev, dt, ndim, shape, v);
    free(v);
    filo_var *p;
    FILO_CHECK(filo_var_new(t, 1, &p));
    FILO_CHECK(filo_tensor_zeros(md->dev, FILO_F32, ndim, shape, &md->m[md->n]));
    FILO_CHECK(filo_tensor_zeros(md->dev, FILO_F32, ndim, shape, &md->v[md->n]));
    filo_tensor_free(t);
    md->p[md->n++] = p;
    return p;
}

static void model_init(model *md, filo_device dev, double lr)
{
    memset(md, 0, sizeof *md);
    md->dev = dev;
    md->lr = lr;
    FILO_CHECK(filo_tensor_zeros(dev, FILO_F32, 0, NULL, &md->step_count));
}

static void model_free(model *md)
{
    for (int i = 0; i < md->n; i++) {
        filo_var_free(md->p[i]);
        filo_tensor_free(md->m[i]);
        filo_tensor_free(md->v[i]);
    }
    filo_tensor_free(md->step_count);
}

/* Zeroes the gradients in place (their addresses stay: a captured step keeps using them). */
static filo_status zero_grads(model *md)
{
    for (int i = 0; i < md->n; i++)
        if (filo_var_grad(md->p[i]))
            TRY(filo_tensor_fill(filo_var_grad(md->p[i]), 0.0));
    return FILO_OK;
}

/* Global-norm clipping and AdamW, with no host synchronization. */
static filo_status optimizer_step(model *md)
{
    filo_tensor *params[MAX_PARAMS];
    const filo_tensor *grads[MAX_PARAMS];
    for (int i = 0; i < md->n; i++) {
        params[i] = filo_var_value(md->p[i]);
        grads[i] = filo_var_grad(md->p[i]);
    }
    filo_tensor *norm, *coef;
    TRY(filo_grad_norm(grads, md->n, 2.0, &norm, NULL));
    filo_status s = filo_clip_coef(norm, 1.0, &coef);
    filo_tensor_free(norm);
    TRY(s);
    filo_adam_options o = filo_adam_defaults(1);
    o.lr = md->lr;
    o.grad_scale = coef;
    o.step_count = md->step_count;
    s = filo_adam_step(md->n, params, grads, md->m, md->v, NULL, &o);
    filo_tensor_free(coef);
    return s;
}

/* ---- the MLP: logits = tanh(x W1 + b1) W2 + b2, cross-entropy over 5 classes ---- */

typedef struct mlp {
    model md;
    filo_var *w1, *b1, *w2, *b2;
    filo_tensor *x, *target, *loss; /* the batch and the last loss: persistent, for capture */
} mlp;

enum { MLP_N = 64, MLP_IN = 10, MLP_HIDDEN = 32, MLP_CLASSES = 5 };

static void mlp_init(mlp *m, filo_device dev)
{
    model_init(&m->md, dev, 0.02);
    m->w1 = param(&m->md, FILO_F32, 2, (int64_t[]){MLP_IN, MLP_HIDDEN}, 0.5, 1);
    m->b1 = param(&m->md, FILO_F32, 1, (int64_t[]){MLP_HIDDEN}, 0.1, 2);
    m->w2 = param(&m->md, FILO_F32, 2, (int64_t[]){MLP_HIDDEN, MLP_CLASSES}, 0.5, 3);
    m->b2 = param(&m->md, FILO_F32, 1, (int64_t[]){MLP_CLASSES}, 0.1, 4);
    /* Labels from a fixed random linear map: learnable by the MLP. */
    double xv[MLP_N * MLP_IN], proj[MLP_IN * MLP_CLASSES], tv[MLP_N];
    filo_test_fill_random(xv, MLP_N * MLP_IN, 7, -1, 1);
    filo_test_fill_random(proj, MLP_IN * MLP_CLASSES, 8, -1, 1);
    for (int i = 0; i < MLP_N; i++) {
        int best = 0;
        double best_v = -1e30;
        for (int c = 0; c < MLP_CLASSES; c++) {
            double s = 0;
            for (int k = 0; k < MLP_IN; k++)
                s += xv[i * MLP_IN + k] * proj[k * MLP_CLASSES + c];
            if (s > best_v) {
                best_v = s;
                best = c;
            }
        }
        tv[i] = best;
    }
    m->x = filo_test_upload(dev, FILO_F32, 2, (int64_t[]){MLP_N, MLP_IN}, xv);
    m->target = filo_test_upload(dev, FILO_I64, 1, (int64_t[]){MLP_N}, tv);
    FILO_CHECK(filo_tensor_zeros(dev, FILO_F32, 0, NULL, &m->loss));
}

static void mlp_free(mlp *m)
{
    model_free(&m->md);
    filo_tensor_free(m->x);
    filo_tensor_free(m->target);
    filo_tensor_free(m->loss);
}

/* One training step; the loss goes to m->loss. Everything it allocates it frees. */
static filo_status mlp_step(void *user)
{
    mlp *m = user;
    TRY(zero_grads(&m->md));
    filo_var *x = NULL, *h = NULL, *a = NULL, *logits = NULL, *loss = NULL;
    filo_status s = filo_var_new(m->x, 0, &x);
    if (s == FILO_OK)
        s = filo_ag_matmul(x, m->w1, 0, 0, m->b1, FILO_MATMUL_EPILOGUE_BIAS, &h);
    if (s == FILO_OK)
        s = filo_ag_unary(FILO_UNARY_TANH, h, &a);
    if (s == FILO_OK)
        s = filo_ag_matmul(a, m->w2, 0, 0, m->b2, FILO_MATMUL_EPILOGUE_BIAS, &logits);
    if (s == FILO_OK)
        s = filo_ag_cross_entropy(logits, m->target, NULL, &loss);
    if (s == FILO_OK)
        s = filo_backward(loss, NULL, 0);
    if (s == FILO_OK)
        s = filo_tensor_copy(m->loss, filo_var_value(loss));
    filo_var *all[5] = {x, h, a, logits, loss};
    for (int i = 0; i < 5; i++)
        filo_var_free(all[i]);
    TRY(s);
    return optimizer_step(&m->md);
}

static double read_scalar(const filo_tensor *t)
{
    double *v = filo_test_download(t);
    double x = v[0];
    free(v);
    return x;
}

Test(ag_training, mlp_learns_without_host_syncs)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        mlp m;
        mlp_init(&m, devs[d]);
        FILO_CHECK(mlp_step(&m));
        double first = read_scalar(m.loss);
        /* After the first step every gradient exists: memory is now parameters, gradients and
         * Adam state, and stays exactly that from step to step. */
        FILO_CHECK(filo_device_synchronize(devs[d]));
        filo_alloc_stats s0, s1;
        FILO_CHECK(filo_alloc_stats_get(devs[d], &s0));
        int counted = devs[d].type == FILO_DEVICE_CUDA && filo_emu_host_sync_count;
        unsigned long long syncs = counted ? filo_emu_host_sync_count() : 0;
        unsigned long long implicit = counted ? filo_emu_implicit_sync_count() : 0;
        for (int step = 1; step < 80; step++)
            FILO_CHECK(mlp_step(&m));
        if (counted) {
            cr_assert_eq(filo_emu_host_sync_count(), syncs, "training steps synchronized the host %llu times",
                         filo_emu_host_sync_count() - syncs);
            cr_assert_eq(filo_emu_implicit_sync_count(), implicit);
        }
        double last = read_scalar(m.loss);
        FILO_CHECK(filo_alloc_stats_get(devs[d], &s1));
        size_t expected = 0;
        for (int i = 0; i < m.md.n; i++) {
            size_t b = filo_tensor_nbytes(filo_var_value(m.md.p[i]));
            expected += 4 * ((b + 511) / 512 * 512); /* param, grad, exp_avg, exp_avg_sq */
        }
        expected += 3 * 512 + 2 * ((filo_tensor_nbytes(m.x) + 511) / 512 * 512); /* counter, loss, target; x */
        cr_assert_eq(s1.allocated_bytes, s0.allocated_bytes, "%s: memory grew from %zu to %zu bytes over 79 steps",
                     filo_test_backend_name(devs[d]), s0.allocated_bytes, s1.allocated_bytes);
        cr_assert_leq(s1.allocated_bytes, expected + 4096, "%s: %zu bytes allocated, parameters and state need %zu",
                      filo_test_backend_name(devs[d]), s1.allocated_bytes, expected);
        cr_log_info("%s: MLP loss %.4f -> %.4f", filo_test_backend_name(devs[d]), first, last);
        cr_assert_lt(last, 0.35 * first, "%s: loss %g -> %g", filo_test_backend_name(devs[d]), first, last);
        cr_assert_eq(read_scalar(m.md.step_count), 80.0);
        mlp_free(&m);
    }
}

/* Eager steps and a captured step replayed give the same parameters. */
Test(ag_training, captured_step_replays_like_eager)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        double *params[2][4], losses[2];
        for (int captured = 0; captured < 2; captured++) {
            mlp m;
            mlp_init(&m, devs[d]);
            FILO_CHECK(mlp_step(&m)); /* warm-up: gradients exist, libraries chose their algorithms */
            if (captured) {
                filo_captured_step *c;
                FILO_CHECK(filo_step_capture(devs[d], mlp_step, &m, &c));
                cr_assert_eq(filo_step_is_graph(c), devs[d].type == FILO_DEVICE_CUDA);
                for (int r = 0; r < 4; r++)
                    FILO_CHECK(filo_step_replay(c));
                FILO_CHECK(filo_device_synchronize(devs[d]));
                filo_step_free(c);
            } else {
                for (int r = 0; r < 4; r++)
                    FILO_CHECK(mlp_step(&m));
            }
            losses[captured] = read_scalar(m.loss);
            params[captured][0] = filo_test_download(filo_var_value(m.w1));
            params[captured][1] = filo_test_download(filo_var_value(m.b1));
            params[captured][2] = filo_test_download(filo_var_value(m.w2));
            params[captured][3] = filo_test_download(filo_var_value(m.b2));
            cr_assert_eq(read_scalar(m.md.step_count), 5.0);
            mlp_free(&m);
        }
        cr_assert_eq(losses[0], losses[1], "%s: loss after replay %.9g, eager %.9g", filo_test_backend_name(devs[d]),
                     losses[1], losses[0]);
        int64_t sizes[4] = {MLP_IN * MLP_HIDDEN, MLP_HIDDEN, MLP_HIDDEN * MLP_CLASSES, MLP_CLASSES};
        for (int k = 0; k < 4; k++) {
            cr_assert_eq(memcmp(params[0][k], params[1][k], sizeof(double) * (size_t)sizes[k]), 0,
                         "%s: parameter %d differs between replays and eager steps", filo_test_backend_name(devs[d]), k);
            free(params[0][k]);
            free(params[1][k]);
        }
    }
}

/* A host read inside a captured step is an error on CUDA, not a silent hang or wrong graph. */
static filo_status reading_step(void *user)
{
    mlp *m = user;
    double loss;
    return filo_tensor_to_host(m->loss, &loss, sizeof loss);
}

Test(ag_training, capture_rejects_host_reads)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        if (devs[d].type != FILO_DEVICE_CUDA)
            continue;
        mlp m;
        mlp_init(&m, devs[d]);
        filo_captured_step *c = NULL;
        cr_assert_neq(filo_step_capture(devs[d], reading_step, &m, &c), FILO_OK);
        cr_assert_null(c);
        cr_log_info("%s", filo_last_error());
        FILO_CHECK(mlp_step(&m)); /* the device still works */
        mlp_free(&m);
    }
}

/* ---- a 2-layer post-LN transformer encoder on a copy task: every position must output the
 * sequence's first token, which only attention can fetch ---- */

enum { TF_B = 8, TF_L = 8, TF_V = 12, TF_H = 2, TF_HD = 32, TF_D = TF_H * TF_HD, TF_FF = 96, TF_LAYERS = 2 };

typedef struct tf_layer {
    filo_var *wqkv, *bqkv, *wo, *bo, *g1, *be1, *w1, *b1, *w2, *b2, *g2, *be2;
} tf_layer;

typedef struct transformer {
    model md;
    filo_var *emb, *pos, *wout, *bout;
    tf_layer layers[TF_LAYERS];
    filo_tensor *ids, *target, *loss;
} transformer;

static void tf_init(transformer *t, filo_device dev)
{
    model_init(&t->md, dev, 3e-3);
    uint64_t seed = 100;
    double s = 1.0 / sqrt((double)TF_D);
    t->emb = param(&t->md, FILO_F32, 2, (int64_t[]){TF_V, TF_D}, 1.0, seed++);
    t->pos = param(&t->md, FILO_F32, 2, (int64_t[]){TF_L, TF_D}, 1.0, seed++);
    for (int l = 0; l < TF_LAYERS; l++) {
        tf_layer *y = &t->layers[l];
        y->wqkv = param(&t->md, FILO_F32, 2, (int64_t[]){TF_D, 3 * TF_D}, s, seed++);
        y->bqkv = param(&t->md, FILO_F32, 1, (int64_t[]){3 * TF_D}, 0.02, seed++);
        y->wo = param(&t->md, FILO_F32, 2, (int64_t[]){TF_D, TF_D}, s, seed++);
        y->bo = param(&t->md, FILO_F32, 1, (int64_t[]){TF_D}, 0.02, seed++);
        y->g1 = param(&t->md, FILO_F32, 1, (int64_t[]){TF_D}, 0.05, seed++);
        y->be1 = param(&t->md, FILO_F32, 1, (int64_t[]){TF_D}, 0.02, seed++);
        y->w1 = param(&t->md, FILO_F32, 2, (int64_t[]){TF_D, TF_FF}, s, seed++);
        y->b1 = param(&t->md, FILO_F32, 1, (int64_t[]){TF_FF}, 0.02, seed++);
        y->w2 = param(&t->md, FILO_F32, 2, (int64_t[]){TF_FF, TF_D}, 1.0 / sqrt((double)TF_FF), seed++);
        y->b2 = param(&t->md, FILO_F32, 1, (int64_t[]){TF_D}, 0.02, seed++);
        y->g2 = param(&t->md, FILO_F32, 1, (int64_t[]){TF_D}, 0.05, seed++);
        y->be2 = param(&t->md, FILO_F32, 1, (int64_t[]){TF_D}, 0.02, seed++);
        /* LayerNorm gains start near 1 */
        FILO_CHECK(filo_tensor_fill(filo_var_value(y->g1), 1.0));
        FILO_CHECK(filo_tensor_fill(filo_var_value(y->g2), 1.0));
    }
    t->wout = param(&t->md, FILO_F32, 2, (int64_t[]){TF_D, TF_V}, s, seed++);
    t->bout = param(&t->md, FILO_F32, 1, (int64_t[]){TF_V}, 0.02, seed++);
    double ids[TF_B * TF_L], target[TF_B * TF_L], r[TF_B * TF_L];
    filo_test_fill_random(r, TF_B * TF_L, 55, 0, 1);
    for (int b = 0; b < TF_B; b++)
        for (int i = 0; i < TF_L; i++) {
            ids[b * TF_L + i] = (int)(r[b * TF_L + i] * TF_V) % TF_V;
            target[b * TF_L + i] = ids[b * TF_L];
        }
    for (int b = 0; b < TF_B; b++)
        for (int i = 0; i < TF_L; i++)
            target[b * TF_L + i] = ids[b * TF_L];
    t->ids = filo_test_upload(dev, FILO_I64, 2, (int64_t[]){TF_B, TF_L}, ids);
    t->target = filo_test_upload(dev, FILO_I64, 1, (int64_t[]){TF_B * TF_L}, target);
    FILO_CHECK(filo_tensor_zeros(dev, FILO_F32, 0, NULL, &t->loss));
}

static void tf_free(transformer *t)
{
    model_free(&t->md);
    filo_tensor_free(t->ids);
    filo_tensor_free(t->target);
    filo_tensor_free(t->loss);
}

/* A list of temporaries freed together. */
typedef struct scratch {
    filo_var *v[64];
    int n;
} scratch;

static filo_var *keep(scratch *s, filo_var *v)
{
    cr_assert_lt(s->n, 64);
    s->v[s->n++] = v;
    return v;
}

static void scratch_free(scratch *s)
{
    for (int i = 0; i < s->n; i++)
        filo_var_free(s->v[i]);
    s->n = 0;
}

/* x [B*L, D] -> the layer's output [B*L, D] */
static filo_status tf_layer_forward(const tf_layer *y, filo_var *x, scratch *s, filo_var **out)
{
    filo_var *qkv, *r5, *parts[3], *att, *perm, *flat, *proj, *h1, *ff1, *ff2, *h2;
    TRY(filo_ag_matmul(x, y->wqkv, 0, 0, y->bqkv, FILO_MATMUL_EPILOGUE_BIAS, &qkv));
    keep(s, qkv);
    TRY(filo_ag_reshape(qkv, 5, (int64_t[]){TF_B, TF_L, 3, TF_H, TF_HD}, &r5));
    keep(s, r5);
    for (int k = 0; k < 3; k++) {
        filo_var *sl, *sq;
        TRY(filo_ag_slice(r5, 2, k, k + 1, 1, &sl));
        keep(s, sl);
        TRY(filo_ag_squeeze(sl, 2, &sq));
        keep(s, sq);
        TRY(filo_ag_permute(sq, (int[]){0, 2, 1, 3}, &parts[k])); /* [B, H, L, hd], a strided view */
        keep(s, parts[k]);
    }
    TRY(filo_ag_attention(parts[0], parts[1], parts[2], NULL, 1.0 / sqrt((double)TF_HD), 0.0, NULL, &att));
    keep(s, att);
    TRY(filo_ag_permute(att, (int[]){0, 2, 1, 3}, &perm));
    keep(s, perm);
    TRY(filo_ag_reshape(perm, 2, (int64_t[]){TF_B * TF_L, TF_D}, &flat));
    keep(s, flat);
    TRY(filo_ag_matmul(flat, y->wo, 0, 0, y->bo, FILO_MATMUL_EPILOGUE_BIAS, &proj));
    keep(s, proj);
    TRY(filo_ag_layernorm(proj, x, y->g1, y->be1, 1e-5, &h1, NULL));
    keep(s, h1);
    TRY(filo_ag_matmul(h1, y->w1, 0, 0, y->b1, FILO_MATMUL_EPILOGUE_BIAS_GELU, &ff1));
    keep(s, ff1);
    TRY(filo_ag_matmul(ff1, y->w2, 0, 0, y->b2, FILO_MATMUL_EPILOGUE_BIAS, &ff2));
    keep(s, ff2);
    TRY(filo_ag_layernorm(ff2, h1, y->g2, y->be2, 1e-5, &h2, NULL));
    keep(s, h2);
    *out = h2;
    return FILO_OK;
}

static filo_status tf_step(void *user)
{
    transformer *t = user;
    TRY(zero_grads(&t->md));
    scratch s = {.n = 0};
    filo_var *e, *pe, *x, *flat, *logits, *loss, *h;
    filo_status st = filo_ag_embedding(t->emb, t->ids, -1, &e);
    if (st == FILO_OK) {
        keep(&s, e);
        st = filo_ag_add(e, t->pos, &pe); /* [B, L, D] + [L, D] */
    }
    if (st == FILO_OK) {
        keep(&s, pe);
        st = filo_ag_reshape(pe, 2, (int64_t[]){TF_B * TF_L, TF_D}, &flat);
    }
    x = st == FILO_OK ? keep(&s, flat) : NULL;
    for (int l = 0; l < TF_LAYERS && st == FILO_OK; l++) {
        st = tf_layer_forward(&t->layers[l], x, &s, &h);
        x = h;
    }
    if (st == FILO_OK)
        st = filo_ag_matmul(x, t->wout, 0, 0, t->bout, FILO_MATMUL_EPILOGUE_BIAS, &logits);
    if (st == FILO_OK) {
        keep(&s, logits);
        st = filo_ag_cross_entropy(logits, t->target, NULL, &loss);
    }
    if (st == FILO_OK) {
        keep(&s, loss);
        st = filo_backward(loss, NULL, 0);
    }
    if (st == FILO_OK)
        st = filo_tensor_copy(t->loss, filo_var_value(loss));
    scratch_free(&s);
    TRY(st);
    return optimizer_step(&t->md);
}

Test(ag_training, transformer_learns_copy_task)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        transformer t;
        tf_init(&t, devs[d]);
        FILO_CHECK(tf_step(&t));
        double first = read_scalar(t.loss);
        int counted = devs[d].type == FILO_DEVICE_CUDA && filo_emu_host_sync_count;
        unsigned long long syncs = counted ? filo_emu_host_sync_count() : 0;
        for (int step = 1; step < 60; step++)
            FILO_CHECK(tf_step(&t));
        if (counted)
            cr_assert_eq(filo_emu_host_sync_count(), syncs, "transformer steps synchronized the host");
        double last = read_scalar(t.loss);
        cr_log_info("%s: transformer loss %.4f -> %.4f", filo_test_backend_name(devs[d]), first, last);
        cr_assert_lt(last, 0.3 * first, "%s: loss %g -> %g", filo_test_backend_name(devs[d]), first, last);
        tf_free(&t);
    }
}
