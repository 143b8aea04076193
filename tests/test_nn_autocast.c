/* Mixed precision through the nn modules on every backend: a small BERT-style encoder (word and
 * position embeddings, 2 post-LN encoder layers, a linear head) learns a copy task with
 * filo_adam_step in f32 and under bf16 autocast from the same initialization. The bf16 loss curve
 * tracks the f32 one at every logged step, both fall substantially, and the parameters, their
 * gradients and the optimizer state stay f32. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo/nn.h"
#include "filo_test.h"

#define TRY(expr)                    \
    do {                             \
        filo_status try_s_ = (expr); \
        if (try_s_ != FILO_OK)       \
            return try_s_;           \
    } while (0)

enum { B = 8, L = 8, V = 12, D = 32, HEADS = 1, FF = 64, LAYERS = 2, STEPS = 20, LOG_EVERY = 2 };
#define MAX_PARAMS 48
/* bf16 keeps 8 significant bits: its loss may stray from f32's by this much at a logged step */
#define TRACK_ATOL 0.01
#define TRACK_RTOL 0.02

typedef struct model {
    filo_params *ps;
    filo_nn_embedding word, pos;
    filo_nn_transformer_layer layers[LAYERS];
    filo_nn_linear head;
    int n;
    filo_var *p[MAX_PARAMS];
    filo_tensor *m[MAX_PARAMS], *v[MAX_PARAMS], *step_count;
    filo_tensor *ids, *pos_ids, *target;
} model;

static void model_init(model *md, filo_device dev)
{
    memset(md, 0, sizeof *md);
    FILO_CHECK(filo_params_new(dev, 1234, &md->ps));
    FILO_CHECK(filo_nn_embedding_init(&md->word, md->ps, "embeddings.word_embeddings", V, D, -1));
    FILO_CHECK(filo_nn_embedding_init(&md->pos, md->ps, "embeddings.position_embeddings", L, D, -1));
    filo_nn_transformer_config cfg = {D, HEADS, FF, FILO_ACT_GELU, 0.0, 0.0, 1e-12, 1};
    for (int l = 0; l < LAYERS; l++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "encoder.layer.%d", l);
        FILO_CHECK(filo_nn_transformer_layer_init(&md->layers[l], md->ps, prefix, &cfg));
    }
    FILO_CHECK(filo_nn_linear_init(&md->head, md->ps, "classifier", D, V, 1));
    FILO_CHECK(filo_params_trainable(md->ps, MAX_PARAMS, md->p, &md->n));
    for (int i = 0; i < md->n; i++) {
        const filo_tensor *t = filo_var_value(md->p[i]);
        FILO_CHECK(filo_tensor_zeros(dev, FILO_F32, t->ndim, t->shape, &md->m[i]));
        FILO_CHECK(filo_tensor_zeros(dev, FILO_F32, t->ndim, t->shape, &md->v[i]));
    }
    FILO_CHECK(filo_tensor_zeros(dev, FILO_F32, 0, NULL, &md->step_count));
    /* copy task: every position outputs its sequence's first token (only attention can fetch it) */
    double ids[B * L], target[B * L], r[B * L], pos[L];
    filo_test_fill_random(r, B * L, 55, 0, 1);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < L; i++)
            ids[b * L + i] = (int)(r[b * L + i] * V) % V;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < L; i++)
            target[b * L + i] = ids[b * L];
    for (int i = 0; i < L; i++)
        pos[i] = i;
    md->ids = filo_test_upload(dev, FILO_I64, 2, (int64_t[]){B, L}, ids);
    md->pos_ids = filo_test_upload(dev, FILO_I64, 1, (int64_t[]){L}, pos);
    md->target = filo_test_upload(dev, FILO_I64, 1, (int64_t[]){B * L}, target);
}

static void model_free(model *md)
{
    for (int i = 0; i < md->n; i++) {
        filo_tensor_free(md->m[i]);
        filo_tensor_free(md->v[i]);
    }
    filo_tensor_free(md->step_count);
    filo_tensor_free(md->ids);
    filo_tensor_free(md->pos_ids);
    filo_tensor_free(md->target);
    filo_params_free(md->ps);
}

/* Forward, backward and an Adam step; the loss (f32, 0-dim) into *loss_out. */
static filo_status train_step(model *md, const filo_nn_ctx *ctx, double *loss_out)
{
    filo_params_zero_grad(md->ps);
    filo_var *we = NULL, *pe = NULL, *x = NULL, *h[LAYERS] = {NULL}, *logits = NULL, *flat = NULL, *lf = NULL,
             *loss = NULL;
    filo_status s = filo_nn_embedding_forward(&md->word, ctx, md->ids, &we);
    if (s == FILO_OK)
        s = filo_nn_embedding_forward(&md->pos, ctx, md->pos_ids, &pe);
    if (s == FILO_OK)
        s = filo_ag_add(we, pe, &x); /* [B, L, D] + [L, D] */
    filo_var *cur = x;
    for (int l = 0; l < LAYERS && s == FILO_OK; l++) {
        s = filo_nn_transformer_layer_forward(&md->layers[l], ctx, cur, NULL, &h[l]);
        cur = h[l];
    }
    if (s == FILO_OK)
        s = filo_nn_linear_forward(&md->head, ctx, cur, &logits);
    if (s == FILO_OK)
        cr_assert_eq(filo_var_value(logits)->dtype, ctx->autocast, "the head runs in the autocast dtype");
    if (s == FILO_OK)
        s = filo_ag_reshape(logits, 2, (int64_t[]){B * L, V}, &flat);
    if (s == FILO_OK)
        s = filo_autocast_for_f32(ctx, flat, &lf); /* the loss runs in f32 */
    if (s == FILO_OK)
        s = filo_ag_cross_entropy(lf, md->target, NULL, &loss);
    if (s == FILO_OK)
        s = filo_backward(loss, NULL, 0);
    if (s == FILO_OK)
        s = filo_tensor_to_host_as(filo_var_value(loss), FILO_F64, loss_out, sizeof *loss_out);
    filo_var *all[] = {we, pe, x, h[0], h[1], logits, flat, lf, loss};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_var_free(all[i]);
    TRY(s);
    filo_tensor *params[MAX_PARAMS];
    const filo_tensor *grads[MAX_PARAMS];
    for (int i = 0; i < md->n; i++) {
        params[i] = filo_var_value(md->p[i]);
        grads[i] = filo_var_grad(md->p[i]);
        cr_assert(grads[i] && grads[i]->dtype == FILO_F32 && params[i]->dtype == FILO_F32,
                  "%s: the parameter and its gradient must be f32", filo_params_name_at(md->ps, i));
    }
    filo_adam_options o = filo_adam_defaults(1);
    o.lr = 5e-3;
    o.step_count = md->step_count;
    return filo_adam_step(md->n, params, grads, md->m, md->v, NULL, &o);
}

Test(nn_autocast, bf16_training_tracks_f32)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        double curve[2][STEPS];
        for (int run = 0; run < 2; run++) {
            model md;
            model_init(&md, devs[d]);
            cr_assert_eq(md.n, 2 + 16 * LAYERS + 2);
            filo_nn_ctx ctx = filo_nn_ctx_make(1, NULL);
            ctx.autocast = run ? FILO_BF16 : FILO_F32;
            for (int step = 0; step < STEPS; step++)
                FILO_CHECK(train_step(&md, &ctx, &curve[run][step]));
            for (int i = 0; i < md.n; i++)
                cr_assert_eq(filo_var_value(md.p[i])->dtype, FILO_F32, "%s is no longer f32",
                             filo_params_name_at(md.ps, i));
            model_free(&md);
        }
        for (int step = 0; step < STEPS; step += LOG_EVERY) {
            double f = curve[0][step], h = curve[1][step];
            cr_log_info("%s: step %2d loss f32 %.4f bf16 %.4f", filo_test_backend_name(devs[d]), step, f, h);
            cr_assert(fabs(h - f) <= TRACK_ATOL + TRACK_RTOL * f,
                      "%s: step %d bf16 loss %.4f strays from f32 loss %.4f", filo_test_backend_name(devs[d]), step,
                      h, f);
        }
        for (int run = 0; run < 2; run++)
            cr_assert_lt(curve[run][STEPS - 1], 0.3 * curve[run][0], "%s %s: loss %.4f -> %.4f",
                         filo_test_backend_name(devs[d]), run ? "bf16" : "f32", curve[run][0], curve[run][STEPS - 1]);
        cr_log_info("%s: loss f32 %.4f -> %.4f, bf16 %.4f -> %.4f", filo_test_backend_name(devs[d]), curve[0][0],
                    curve[0][STEPS - 1], curve[1][0], curve[1][STEPS - 1]);
    }
}
