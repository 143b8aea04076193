/* BERT as transformers builds it: BertModel (embeddings, post-LN encoder, pooler) and the four
 * task heads, with transformers' _init_weights, forward and losses.
 *
 * The forward copies nothing it does not have to: position embeddings are the first L rows of
 * their table (a view) added by broadcasting, the token type embeddings enter as the embedding
 * LayerNorm's residual (or, without token types, row 0 joins the position rows before the
 * broadcast), the pooler reads h[:, 0] as a strided view, and the masked LM decoder multiplies
 * by the word embedding table itself (tied weights, one gradient). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/nn_internal.h"
#include "bert_internal.h"
#include "error.h"
#include "filo/losses.h"

const char *filo_bert_task_architecture(filo_bert_task task)
{
    switch (task) {
    case FILO_BERT_ENCODER: return "BertModel";
    case FILO_BERT_SEQUENCE_CLASSIFY: return "BertForSequenceClassification";
    case FILO_BERT_TOKEN_CLASSIFY: return "BertForTokenClassification";
    case FILO_BERT_QUESTION_ANSWER: return "BertForQuestionAnswering";
    case FILO_BERT_MASKED_LM: return "BertForMaskedLM";
    }
    return NULL;
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

int filo_bert_is_head_param(const filo_bert *m, const char *name)
{
    if (m->task == FILO_BERT_ENCODER)
        return starts_with(name, "pooler.");
    return starts_with(name, "bert.pooler.") || starts_with(name, "classifier.") || starts_with(name, "qa_outputs.") ||
           starts_with(name, "cls.");
}

/* "bert.<name>" for the task models, "<name>" for a bare BertModel. */
static const char *enc_name(char *buf, size_t size, const filo_bert *m, const char *name)
{
    return filo_param_name_join(buf, size, m->task == FILO_BERT_ENCODER ? NULL : "bert", name);
}

/* Every parameter in transformers' registration order. */
static filo_status build(filo_bert *m)
{
    const filo_bert_config *c = &m->config;
    filo_params *ps = m->params;
    char a[FILO_NN_NAME_MAX], b[64];
    FILO_TRY(filo_nn_embedding_init(&m->word_embeddings, ps, enc_name(a, sizeof a, m, "embeddings.word_embeddings"),
                                    c->vocab_size, c->hidden_size, c->pad_token_id));
    FILO_TRY(filo_nn_embedding_init(&m->position_embeddings, ps,
                                    enc_name(a, sizeof a, m, "embeddings.position_embeddings"),
                                    c->max_position_embeddings, c->hidden_size, -1));
    FILO_TRY(filo_nn_embedding_init(&m->token_type_embeddings, ps,
                                    enc_name(a, sizeof a, m, "embeddings.token_type_embeddings"), c->type_vocab_size,
                                    c->hidden_size, -1));
    FILO_TRY(filo_nn_layernorm_init(&m->embeddings_norm, ps, enc_name(a, sizeof a, m, "embeddings.LayerNorm"),
                                    c->hidden_size, c->layer_norm_eps));
    filo_nn_transformer_config tc = {
        .dim = c->hidden_size, .heads = c->num_attention_heads, .ffn_dim = c->intermediate_size,
        .act = c->hidden_act, .dropout = c->hidden_dropout_prob, .attn_dropout = c->attention_probs_dropout_prob,
        .eps = c->layer_norm_eps, .post_ln = 1,
    };
    for (int64_t i = 0; i < c->num_hidden_layers; i++) {
        snprintf(b, sizeof b, "encoder.layer.%lld", (long long)i);
        FILO_TRY(filo_nn_transformer_layer_init(&m->layers[i], ps, enc_name(a, sizeof a, m, b), &tc));
    }
    if (m->has_pooler)
        FILO_TRY(filo_nn_linear_init(&m->pooler, ps, enc_name(a, sizeof a, m, "pooler.dense"), c->hidden_size,
                                     c->hidden_size, 1));
    switch (m->task) {
    case FILO_BERT_SEQUENCE_CLASSIFY:
    case FILO_BERT_TOKEN_CLASSIFY:
        return filo_nn_linear_init(&m->head, ps, "classifier", c->hidden_size, c->num_labels, 1);
    case FILO_BERT_QUESTION_ANSWER:
        return filo_nn_linear_init(&m->head, ps, "qa_outputs", c->hidden_size, 2, 1);
    case FILO_BERT_MASKED_LM:
        FILO_TRY(filo_params_create(ps, "cls.predictions.bias", 1, &c->vocab_size, (filo_init){FILO_INIT_ZEROS, 0, 0},
                                    FILO_PARAM_BIAS, &m->mlm_bias));
        FILO_TRY(filo_nn_linear_init(&m->mlm_transform, ps, "cls.predictions.transform.dense", c->hidden_size,
                                     c->hidden_size, 1));
        return filo_nn_layernorm_init(&m->mlm_norm, ps, "cls.predictions.transform.LayerNorm", c->hidden_size,
                                      c->layer_norm_eps);
    case FILO_BERT_ENCODER:
        break;
    }
    return FILO_OK;
}

/* transformers' _init_weights: normal(0, initializer_range) for Linear and Embedding weights, zero
 * biases, LayerNorm 1 and 0 (as created), and a zero padding row. Without init_encoder the
 * encoder's draws are skipped (a checkpoint overwrites them) but the generator still advances
 * past them, so the heads get the values filo_bert_new gives them. */
static filo_status init_weights(filo_bert *m, int init_encoder)
{
    filo_generator *gen = filo_params_generator(m->params);
    for (int i = 0; i < filo_params_count(m->params); i++) {
        filo_tensor *v = filo_var_value(filo_params_at(m->params, i));
        int skip = !init_encoder && !filo_bert_is_head_param(m, filo_params_name_at(m->params, i));
        filo_status s = FILO_OK;
        switch (filo_params_role_at(m->params, i)) {
        case FILO_PARAM_WEIGHT:
        case FILO_PARAM_EMBEDDING:
            if (skip)
                filo_generator_advance(gen, (uint64_t)filo_tensor_numel(v));
            else
                s = filo_init_tensor(v, (filo_init){FILO_INIT_NORMAL, 0.0, m->config.initializer_range}, gen);
            break;
        case FILO_PARAM_BIAS:
            s = filo_tensor_fill(v, 0.0);
            break;
        case FILO_PARAM_NORM:
            break;
        }
        if (s != FILO_OK)
            return filo_error_wrap(s, filo_params_name_at(m->params, i));
    }
    int64_t pad = m->config.pad_token_id;
    if (pad < 0)
        return FILO_OK;
    filo_tensor *row;
    FILO_TRY(filo_tensor_slice(filo_var_value(m->word_embeddings.weight), 0, pad, pad + 1, 1, &row));
    filo_status s = filo_tensor_fill(row, 0.0);
    filo_tensor_free(row);
    return s;
}

filo_status filo_bert_create(const filo_bert_config *cfg, filo_bert_task task, filo_device device, uint64_t seed,
                             int init_encoder, filo_bert **out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    FILO_TRY(filo_bert_config_check(cfg));
    if (!filo_bert_task_architecture(task))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown task %d", (int)task);
    int64_t hd = cfg->hidden_size / cfg->num_attention_heads;
    if (hd != 32 && hd != 64 && hd != 128)
        return FILO_FAIL(FILO_ERR_UNSUPPORTED,
                         "head_dim = hidden_size / num_attention_heads = %lld / %lld = %lld; the fused attention "
                         "supports 32, 64 or 128",
                         (long long)cfg->hidden_size, (long long)cfg->num_attention_heads, (long long)hd);
    filo_bert *m = calloc(1, sizeof *m);
    if (!m)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for a BERT model");
    m->task = task;
    m->has_pooler = task == FILO_BERT_ENCODER || task == FILO_BERT_SEQUENCE_CLASSIFY;
    filo_status s = filo_bert_config_copy(cfg, &m->config);
    if (s == FILO_OK) {
        m->layers = calloc((size_t)cfg->num_hidden_layers, sizeof *m->layers);
        if (!m->layers)
            s = FILO_FAIL(FILO_ERR_OOM, "out of host memory for %lld layers", (long long)cfg->num_hidden_layers);
    }
    if (s == FILO_OK)
        s = filo_params_new(device, seed, &m->params);
    if (s == FILO_OK)
        s = build(m);
    if (s == FILO_OK)
        s = init_weights(m, init_encoder);
    if (s != FILO_OK) {
        filo_bert_free(m);
        return s;
    }
    *out = m;
    return FILO_OK;
}

filo_status filo_bert_new(const filo_bert_config *cfg, filo_bert_task task, filo_device device, uint64_t seed,
                          filo_bert **out)
{
    return filo_bert_create(cfg, task, device, seed, 1, out);
}

void filo_bert_free(filo_bert *m)
{
    if (!m)
        return;
    filo_params_free(m->params);
    free(m->layers);
    filo_bert_config_free(&m->config);
    free(m);
}

/* ---- forward ---- */

static int is_index_dtype(filo_dtype t) { return t == FILO_I32 || t == FILO_I64; }

/* An i32/i64 tensor of the given shape on the model's device. */
static filo_status check_index_tensor(const filo_bert *m, const filo_tensor *t, const char *what, int ndim,
                                      const int64_t *shape)
{
    char buf[96], want[64];
    filo_dims_format(ndim, shape, want, sizeof want);
    if (!is_index_dtype(t->dtype))
        return FILO_FAIL(FILO_ERR_DTYPE, "%s is %s; it must be i32 or i64 %s", what,
                         filo_tensor_describe(t, buf, sizeof buf), want);
    if (!filo_device_equal(t->device, filo_params_device(m->params)))
        return FILO_FAIL(FILO_ERR_DEVICE, "%s is %s, not on the model's device", what,
                         filo_tensor_describe(t, buf, sizeof buf));
    return filo_tensor_check_shape(t, what, ndim, shape);
}

static filo_status check_inputs(const filo_bert *m, const filo_bert_inputs *in)
{
    const filo_tensor *ids = in->input_ids;
    char buf[96];
    if (!ids)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "input_ids is NULL");
    if (ids->ndim != 2 || ids->shape[0] < 1 || ids->shape[1] < 1)
        return FILO_FAIL(FILO_ERR_SHAPE, "input_ids is %s; it must be [B, L] with B, L >= 1",
                         filo_tensor_describe(ids, buf, sizeof buf));
    FILO_TRY(check_index_tensor(m, ids, "input_ids", 2, ids->shape));
    if (ids->shape[1] > m->config.max_position_embeddings)
        return FILO_FAIL(FILO_ERR_SHAPE, "input_ids is %s: L = %lld is over max_position_embeddings = %lld",
                         filo_tensor_describe(ids, buf, sizeof buf), (long long)ids->shape[1],
                         (long long)m->config.max_position_embeddings);
    if (in->token_type_ids)
        FILO_TRY(check_index_tensor(m, in->token_type_ids, "token_type_ids", 2, ids->shape));
    if (in->lengths)
        FILO_TRY(check_index_tensor(m, in->lengths, "lengths", 1, ids->shape));
    return FILO_OK;
}

/* LayerNorm(word[ids] + position[0..L) + token_type[tt]), then dropout. */
static filo_status embed(const filo_bert *m, const filo_nn_ctx *ctx, const filo_bert_inputs *in, filo_var **out)
{
    int64_t L = in->input_ids->shape[1];
    filo_var *w = NULL, *pos = NULL, *t = NULL, *t0 = NULL, *pt = NULL, *sum = NULL, *e = NULL;
    filo_status s = filo_nn_embedding_forward(&m->word_embeddings, ctx, in->input_ids, &w);
    if (s == FILO_OK)
        s = filo_ag_slice(m->position_embeddings.weight, 0, 0, L, 1, &pos);
    if (in->token_type_ids) {
        if (s == FILO_OK)
            s = filo_nn_embedding_forward(&m->token_type_embeddings, ctx, in->token_type_ids, &t);
        if (s == FILO_OK)
            s = filo_ag_add(w, pos, &sum);
    } else {
        if (s == FILO_OK)
            s = filo_ag_slice(m->token_type_embeddings.weight, 0, 0, 1, 1, &t0);
        if (s == FILO_OK)
            s = filo_ag_add(pos, t0, &pt);
        if (s == FILO_OK)
            s = filo_ag_add(w, pt, &sum);
    }
    if (s == FILO_OK)
        s = filo_nn_layernorm_forward(&m->embeddings_norm, ctx, sum, t, &e, NULL);
    filo_nn_dropout drop = {m->config.hidden_dropout_prob};
    if (s == FILO_OK)
        s = filo_nn_dropout_forward(&drop, ctx, e, out);
    filo_var *all[] = {w, pos, t, t0, pt, sum, e};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_var_free(all[i]);
    return s;
}

/* tanh(dense(h[:, 0])). */
static filo_status pool(const filo_bert *m, const filo_nn_ctx *ctx, filo_var *h, filo_var **out)
{
    filo_var *first = NULL, *cls = NULL;
    filo_status s = filo_ag_slice(h, 1, 0, 1, 1, &first);
    if (s == FILO_OK)
        s = filo_ag_squeeze(first, 1, &cls);
    if (s == FILO_OK)
        s = filo_nn_linear_forward_act(&m->pooler, ctx, cls, FILO_ACT_TANH, out);
    filo_var_free(first);
    filo_var_free(cls);
    return s;
}

filo_status filo_bert_encode(const filo_bert *m, const filo_nn_ctx *ctx, const filo_bert_inputs *in,
                             filo_var **sequence, filo_var **pooled)
{
    if (sequence)
        *sequence = NULL;
    if (pooled)
        *pooled = NULL;
    if (!m || !in || !sequence)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, in and sequence must not be NULL");
    FILO_TRY(filo_nn_ctx_check(ctx));
    FILO_TRY(check_inputs(m, in));
    filo_var *h = NULL;
    FILO_TRY(embed(m, ctx, in, &h));
    filo_attention_mask mask = {in->lengths, 0};
    filo_status s = FILO_OK;
    for (int64_t i = 0; s == FILO_OK && i < m->config.num_hidden_layers; i++) {
        filo_var *y = NULL;
        s = filo_nn_transformer_layer_forward(&m->layers[i], ctx, h, in->lengths ? &mask : NULL, &y);
        filo_var_free(h);
        h = y;
    }
    if (s == FILO_OK && pooled && m->has_pooler)
        s = pool(m, ctx, h, pooled);
    if (s != FILO_OK) {
        filo_var_free(h);
        return s;
    }
    *sequence = h;
    return FILO_OK;
}

/* Masked LM: LayerNorm(act(dense(h))) times the word embedding table, plus cls.predictions.bias. */
static filo_status mlm_logits(const filo_bert *m, const filo_nn_ctx *ctx, filo_var *h, filo_var **out)
{
    filo_var *t = NULL, *n = NULL;
    filo_status s = filo_nn_linear_forward_act(&m->mlm_transform, ctx, h, m->config.hidden_act, &t);
    if (s == FILO_OK)
        s = filo_nn_layernorm_forward(&m->mlm_norm, ctx, t, NULL, &n, NULL);
    if (s == FILO_OK)
        s = filo_nn_affine(ctx, n, m->word_embeddings.weight, m->mlm_bias, FILO_MATMUL_EPILOGUE_BIAS, out);
    filo_var_free(t);
    filo_var_free(n);
    return s;
}

filo_status filo_bert_forward(const filo_bert *m, const filo_nn_ctx *ctx, const filo_bert_inputs *in,
                              filo_var **logits)
{
    if (!logits)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "logits is NULL");
    *logits = NULL;
    if (!m)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m is NULL");
    if (m->task == FILO_BERT_ENCODER)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "a BertModel (FILO_BERT_ENCODER) has no head: use filo_bert_encode");
    filo_var *seq = NULL, *pooled = NULL, *d = NULL, *out = NULL;
    int seq_cls = m->task == FILO_BERT_SEQUENCE_CLASSIFY;
    FILO_TRY(filo_bert_encode(m, ctx, in, &seq, seq_cls ? &pooled : NULL));
    double p = m->config.classifier_dropout >= 0.0 ? m->config.classifier_dropout : m->config.hidden_dropout_prob;
    filo_nn_dropout drop = {p};
    filo_status s;
    switch (m->task) {
    case FILO_BERT_SEQUENCE_CLASSIFY:
    case FILO_BERT_TOKEN_CLASSIFY:
        s = filo_nn_dropout_forward(&drop, ctx, seq_cls ? pooled : seq, &d);
        if (s == FILO_OK)
            s = filo_nn_linear_forward(&m->head, ctx, d, &out);
        break;
    case FILO_BERT_QUESTION_ANSWER:
        s = filo_nn_linear_forward(&m->head, ctx, seq, &out);
        break;
    default:
        s = mlm_logits(m, ctx, seq, &out);
        break;
    }
    if (s == FILO_OK)
        s = filo_autocast_for_f32(ctx, out, logits);
    filo_var *all[] = {seq, pooled, d, out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_var_free(all[i]);
    return s;
}

/* ---- losses ---- */

/* labels viewed as [n] (any shape of n elements, as transformers' labels.view(-1)). */
static filo_status flat_labels(const filo_tensor *labels, int64_t n, const char *want, filo_tensor **out)
{
    char buf[96];
    if (filo_tensor_numel(labels) != n)
        return FILO_FAIL(FILO_ERR_SHAPE, "labels are %s; they must be %s", filo_tensor_describe(labels, buf, sizeof buf),
                         want);
    return filo_tensor_reshape(labels, 1, &n, out);
}

static filo_status sequence_loss(const filo_bert *m, filo_var *logits, const filo_tensor *labels, filo_var **loss)
{
    const filo_tensor *x = filo_var_value(logits);
    int64_t B = x->shape[0], C = x->shape[1];
    int integer = is_index_dtype(labels->dtype);
    filo_bert_problem p = m->config.problem_type;
    if (p == FILO_PROBLEM_UNSET)
        p = C == 1 ? FILO_PROBLEM_REGRESSION : integer ? FILO_PROBLEM_SINGLE_LABEL : FILO_PROBLEM_MULTI_LABEL;
    char buf[96];
    int want_int = p == FILO_PROBLEM_SINGLE_LABEL;
    if (want_int ? !integer : !filo_dtype_is_float(labels->dtype))
        return FILO_FAIL(FILO_ERR_DTYPE, "labels are %s; %s needs %s labels", filo_tensor_describe(labels, buf, sizeof buf),
                         want_int                        ? "single-label classification"
                         : p == FILO_PROBLEM_MULTI_LABEL ? "multi-label classification"
                                                         : "regression",
                         want_int ? "i32/i64 class" : "float");
    filo_tensor *flat = NULL;
    filo_var *x1 = NULL;
    filo_status s;
    if (p == FILO_PROBLEM_SINGLE_LABEL) {
        s = flat_labels(labels, B, "[B] class indices", &flat);
        if (s == FILO_OK)
            s = filo_loss_cross_entropy(logits, flat, NULL, loss);
    } else if (p == FILO_PROBLEM_REGRESSION && C == 1) {
        /* mse_loss(logits.squeeze(), labels.squeeze()) */
        s = flat_labels(labels, B, "[B] (num_labels 1)", &flat);
        if (s == FILO_OK)
            s = filo_ag_reshape(logits, 1, &B, &x1);
        if (s == FILO_OK)
            s = filo_loss_mse(x1, NULL, flat, FILO_LOSS_MEAN, loss);
    } else {
        s = filo_tensor_check_shape(labels, "labels", 2, x->shape);
        if (s == FILO_OK)
            s = p == FILO_PROBLEM_MULTI_LABEL ? filo_loss_bce_with_logits(logits, labels, NULL, loss)
                                              : filo_loss_mse(logits, NULL, labels, FILO_LOSS_MEAN, loss);
    }
    filo_tensor_free(flat);
    filo_var_free(x1);
    return s;
}

/* t clamped to [0, hi] on the device (comparisons and where: no host read). */
static filo_status clamp_index(const filo_tensor *t, int64_t hi, filo_tensor **out)
{
    filo_tensor *lo_t = NULL, *hi_t = NULL, *below = NULL, *c1 = NULL, *above = NULL;
    filo_status s = filo_tensor_full(t->device, t->dtype, 0, NULL, 0.0, &lo_t);
    if (s == FILO_OK)
        s = filo_tensor_full(t->device, t->dtype, 0, NULL, (double)hi, &hi_t);
    if (s == FILO_OK)
        s = filo_binary(FILO_BINARY_LT, t, lo_t, &below);
    if (s == FILO_OK)
        s = filo_where(below, lo_t, t, &c1);
    if (s == FILO_OK)
        s = filo_binary(FILO_BINARY_GT, c1, hi_t, &above);
    if (s == FILO_OK)
        s = filo_where(above, hi_t, c1, out);
    filo_tensor *all[] = {lo_t, hi_t, below, c1, above};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_tensor_free(all[i]);
    return s;
}

/* (CE(start logits, start) + CE(end logits, end)) / 2, positions clamped to [0, L], L ignored. */
static filo_status qa_loss(filo_var *logits, const filo_tensor *labels, filo_var **loss)
{
    const filo_tensor *x = filo_var_value(logits);
    int64_t L = x->shape[1];
    FILO_TRY(filo_tensor_check_shape(labels, "labels (start and end positions)", 2, (int64_t[]){x->shape[0], 2}));
    filo_tensor *pos;
    FILO_TRY(clamp_index(labels, L, &pos));
    filo_cross_entropy_options o = filo_cross_entropy_defaults();
    o.ignore_index = L;
    filo_var *part[2] = {NULL, NULL}, *sum = NULL;
    filo_status s = FILO_OK;
    for (int k = 0; k < 2 && s == FILO_OK; k++) {
        filo_var *sl = NULL, *lg = NULL;
        filo_tensor *tsl = NULL, *tk = NULL;
        s = filo_ag_slice(logits, 2, k, k + 1, 1, &sl);
        if (s == FILO_OK)
            s = filo_ag_squeeze(sl, 2, &lg);
        if (s == FILO_OK)
            s = filo_tensor_slice(pos, 1, k, k + 1, 1, &tsl);
        if (s == FILO_OK)
            s = filo_tensor_squeeze(tsl, 1, &tk);
        if (s == FILO_OK)
            s = filo_loss_cross_entropy(lg, tk, &o, &part[k]);
        filo_var_free(sl);
        filo_var_free(lg);
        filo_tensor_free(tsl);
        filo_tensor_free(tk);
    }
    if (s == FILO_OK)
        s = filo_ag_add(part[0], part[1], &sum);
    if (s == FILO_OK)
        s = filo_ag_binary_scalar(FILO_BINARY_MUL, sum, 0.5, 0, loss);
    filo_var_free(part[0]);
    filo_var_free(part[1]);
    filo_var_free(sum);
    filo_tensor_free(pos);
    return s;
}

filo_status filo_bert_loss(const filo_bert *m, filo_var *logits, const filo_tensor *labels, filo_var **loss)
{
    if (!loss)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "loss is NULL");
    *loss = NULL;
    if (!m || !logits || !labels)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, logits and labels must not be NULL");
    if (m->task == FILO_BERT_ENCODER)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "a BertModel (FILO_BERT_ENCODER) has no task loss");
    const filo_tensor *x = filo_var_value(logits);
    char a[96], b[96];
    int64_t classes = m->task == FILO_BERT_QUESTION_ANSWER ? 2
                      : m->task == FILO_BERT_MASKED_LM     ? m->config.vocab_size
                                                           : m->config.num_labels;
    int ndim = m->task == FILO_BERT_SEQUENCE_CLASSIFY ? 2 : 3;
    if (x->ndim != ndim || x->shape[ndim - 1] != classes)
        return FILO_FAIL(FILO_ERR_SHAPE, "logits are %s; %s's are [B, %s%lld]", filo_tensor_describe(x, a, sizeof a),
                         filo_bert_task_architecture(m->task), ndim == 3 ? "L, " : "", (long long)classes);
    if (!filo_device_equal(labels->device, x->device))
        return FILO_FAIL(FILO_ERR_DEVICE, "labels %s are not on the device of the logits %s",
                         filo_tensor_describe(labels, a, sizeof a), filo_tensor_describe(x, b, sizeof b));
    if (m->task == FILO_BERT_SEQUENCE_CLASSIFY)
        return sequence_loss(m, logits, labels, loss);
    if (!is_index_dtype(labels->dtype))
        return FILO_FAIL(FILO_ERR_DTYPE, "labels are %s; %s needs i32/i64 labels", filo_tensor_describe(labels, a, sizeof a),
                         filo_bert_task_architecture(m->task));
    if (m->task == FILO_BERT_QUESTION_ANSWER)
        return qa_loss(logits, labels, loss);
    /* Token classification and masked LM: cross-entropy per token, -100 ignored. */
    FILO_TRY(filo_tensor_check_shape(labels, "labels", 2, x->shape));
    return filo_loss_cross_entropy(logits, labels, NULL, loss);
}
