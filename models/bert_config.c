/* BertConfig: presets, config.json in transformers' layout (read with BertConfig's defaults for
 * missing keys, written with every field), labels and checks. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text_file.h"
#include "bert_internal.h"
#include "error.h"

static const char *const problem_names[] = {
    [FILO_PROBLEM_SINGLE_LABEL] = "single_label_classification",
    [FILO_PROBLEM_MULTI_LABEL] = "multi_label_classification",
    [FILO_PROBLEM_REGRESSION] = "regression",
};

/* hidden_act as transformers writes it (either tanh GELU name reads back the same). */
static const char *act_name(filo_activation a)
{
    switch (a) {
    case FILO_ACT_GELU: return "gelu";
    case FILO_ACT_GELU_TANH: return "gelu_new";
    case FILO_ACT_RELU: return "relu";
    case FILO_ACT_TANH: return "tanh";
    case FILO_ACT_SILU: return "silu";
    case FILO_ACT_SIGMOID: return "sigmoid";
    default: return NULL;
    }
}

static void free_names(char **names, int n)
{
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

/* A copy of n label names ("LABEL_i" where names or names[i] is NULL); duplicates are refused
 * since label2id could not hold them. */
static filo_status copy_names(int n, const char *const *names, char ***out)
{
    *out = NULL;
    char **v = calloc((size_t)n, sizeof *v);
    if (!v)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for %d label names", n);
    for (int i = 0; i < n; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "LABEL_%d", i);
        v[i] = strdup(names && names[i] ? names[i] : buf);
        if (!v[i]) {
            free_names(v, n);
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory for label names");
        }
        for (int j = 0; j < i; j++)
            if (strcmp(v[j], v[i]) == 0) {
                filo_status s = FILO_FAIL(FILO_ERR_INVALID_ARG, "labels %d and %d are both named \"%s\"", j, i, v[i]);
                free_names(v, n);
                return s;
            }
    }
    *out = v;
    return FILO_OK;
}

void filo_bert_config_free(filo_bert_config *cfg)
{
    if (!cfg)
        return;
    free_names(cfg->id2label, cfg->num_labels);
    memset(cfg, 0, sizeof *cfg);
}

filo_status filo_bert_config_set_labels(filo_bert_config *cfg, int num_labels, const char *const *names)
{
    if (!cfg)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "cfg is NULL");
    if (num_labels < 1)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "num_labels = %d must be at least 1", num_labels);
    char **v;
    FILO_TRY(copy_names(num_labels, names, &v));
    free_names(cfg->id2label, cfg->num_labels);
    cfg->id2label = v;
    cfg->num_labels = num_labels;
    return FILO_OK;
}

filo_status filo_bert_config_copy(const filo_bert_config *src, filo_bert_config *dst)
{
    if (!src || !dst)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "src and dst must not be NULL");
    if (src->num_labels < 1 || !src->id2label)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "src has num_labels = %d and %s id2label", src->num_labels,
                         src->id2label ? "an" : "no");
    char **v;
    FILO_TRY(copy_names(src->num_labels, (const char *const *)src->id2label, &v));
    *dst = *src;
    dst->id2label = v;
    return FILO_OK;
}

int filo_bert_config_label(const filo_bert_config *cfg, const char *name)
{
    for (int i = 0; cfg && name && cfg->id2label && i < cfg->num_labels; i++)
        if (cfg->id2label[i] && strcmp(cfg->id2label[i], name) == 0)
            return i;
    return -1;
}

/* transformers' BertConfig() defaults (bert-base-uncased's shape, 2 labels). */
static void defaults(filo_bert_config *c)
{
    *c = (filo_bert_config){
        .vocab_size = 30522, .hidden_size = 768, .num_hidden_layers = 12, .num_attention_heads = 12,
        .intermediate_size = 3072, .max_position_embeddings = 512, .type_vocab_size = 2, .pad_token_id = 0,
        .hidden_act = FILO_ACT_GELU, .layer_norm_eps = 1e-12, .hidden_dropout_prob = 0.1,
        .attention_probs_dropout_prob = 0.1, .initializer_range = 0.02, .classifier_dropout = -1.0,
        .num_labels = 0, .id2label = NULL, .problem_type = FILO_PROBLEM_UNSET,
    };
}

filo_status filo_bert_config_preset(const char *name, int64_t vocab_size, int num_labels, filo_bert_config *out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    memset(out, 0, sizeof *out);
    static const struct {
        const char *name;
        int64_t layers, hidden;
    } presets[] = {{"tiny", 2, 128}, {"mini", 4, 256}, {"small", 4, 512}, {"medium", 8, 512}, {"base", 12, 768}};
    int k = -1;
    for (int i = 0; name && i < (int)(sizeof presets / sizeof presets[0]); i++)
        if (strcmp(name, presets[i].name) == 0)
            k = i;
    if (k < 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown BERT preset '%s' (expected tiny, mini, small, medium or base)",
                         name ? name : "(null)");
    if (vocab_size <= 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "vocab_size = %lld must be positive", (long long)vocab_size);
    filo_bert_config c;
    defaults(&c);
    c.vocab_size = vocab_size;
    c.num_hidden_layers = presets[k].layers;
    c.hidden_size = presets[k].hidden;
    c.num_attention_heads = presets[k].hidden / 64;
    c.intermediate_size = 4 * presets[k].hidden;
    FILO_TRY(filo_bert_config_set_labels(&c, num_labels, NULL));
    *out = c;
    return FILO_OK;
}

filo_status filo_bert_config_check(const filo_bert_config *c)
{
    if (!c)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "config is NULL");
    const struct {
        const char *key;
        int64_t v;
    } sizes[] = {{"vocab_size", c->vocab_size},
                 {"hidden_size", c->hidden_size},
                 {"num_hidden_layers", c->num_hidden_layers},
                 {"num_attention_heads", c->num_attention_heads},
                 {"intermediate_size", c->intermediate_size},
                 {"max_position_embeddings", c->max_position_embeddings},
                 {"type_vocab_size", c->type_vocab_size}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v <= 0)
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "%s = %lld must be positive", sizes[i].key, (long long)sizes[i].v);
    if (c->hidden_size % c->num_attention_heads != 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "hidden_size = %lld is not a multiple of num_attention_heads = %lld",
                         (long long)c->hidden_size, (long long)c->num_attention_heads);
    if (c->pad_token_id < -1 || c->pad_token_id >= c->vocab_size)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "pad_token_id = %lld must be -1 (none) or in [0, vocab_size = %lld)",
                         (long long)c->pad_token_id, (long long)c->vocab_size);
    if (!act_name(c->hidden_act))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "hidden_act = %d is not a supported activation", (int)c->hidden_act);
    if (!(c->layer_norm_eps > 0.0) || !isfinite(c->layer_norm_eps))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "layer_norm_eps = %g must be positive", c->layer_norm_eps);
    const struct {
        const char *key;
        double v;
    } probs[] = {{"hidden_dropout_prob", c->hidden_dropout_prob},
                 {"attention_probs_dropout_prob", c->attention_probs_dropout_prob},
                 {"classifier_dropout", c->classifier_dropout < 0.0 ? 0.0 : c->classifier_dropout}};
    for (size_t i = 0; i < sizeof probs / sizeof probs[0]; i++)
        if (!(probs[i].v >= 0.0 && probs[i].v <= 1.0))
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "%s = %g must be in [0, 1]", probs[i].key, probs[i].v);
    if (!(c->initializer_range >= 0.0) || !isfinite(c->initializer_range))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "initializer_range = %g must be >= 0", c->initializer_range);
    if (c->num_labels < 1 || !c->id2label)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "num_labels = %d must be at least 1, with id2label names",
                         c->num_labels);
    for (int i = 0; i < c->num_labels; i++)
        if (!c->id2label[i])
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "id2label[%d] is NULL", i);
    if ((int)c->problem_type < FILO_PROBLEM_UNSET || c->problem_type > FILO_PROBLEM_REGRESSION)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "problem_type = %d is not a filo_bert_problem", (int)c->problem_type);
    return FILO_OK;
}

/* ---- config.json reading: every failure names the file and the key ---- */

typedef struct reader {
    const char *path;
    const cJSON *root;
} reader;

/* The item as JSON text for a message, shortened. */
static const char *show(const cJSON *item, char *buf, size_t size)
{
    char *text = cJSON_PrintUnformatted(item);
    snprintf(buf, size, "%s", text ? text : "?");
    if (text && strlen(text) >= size && size > 4)
        memcpy(buf + size - 4, "...", 4);
    cJSON_free(text);
    return buf;
}

static filo_status bad_key(const reader *r, const char *key, const cJSON *item, const char *want)
{
    char buf[80];
    return filo_error_set(FILO_ERR_FORMAT, "filo_bert_config_load", "%s: \"%s\" must be %s, got %s", r->path, key, want,
                          show(item, buf, sizeof buf));
}

static int is_integer(const cJSON *item)
{
    return cJSON_IsNumber(item) && isfinite(item->valuedouble) && item->valuedouble == floor(item->valuedouble) &&
           fabs(item->valuedouble) < 9.0e15;
}

/* An integer key in [lo, hi] (absent: *v unchanged; null allowed when null_value is non-NULL). */
static filo_status get_int(const reader *r, const char *key, int64_t lo, int64_t hi, const int64_t *null_value,
                           int64_t *v)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!item)
        return FILO_OK;
    if (null_value && cJSON_IsNull(item)) {
        *v = *null_value;
        return FILO_OK;
    }
    char want[96];
    snprintf(want, sizeof want, "an integer in [%lld, %lld]%s", (long long)lo, (long long)hi,
             null_value ? " or null" : "");
    if (!is_integer(item) || item->valuedouble < (double)lo || item->valuedouble > (double)hi)
        return bad_key(r, key, item, want);
    *v = (int64_t)item->valuedouble;
    return FILO_OK;
}

/* A number key in [lo, hi], above lo when lo_open (absent: unchanged; null as get_int). */
static filo_status get_number(const reader *r, const char *key, double lo, double hi, int lo_open,
                              const double *null_value, double *v)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!item)
        return FILO_OK;
    if (null_value && cJSON_IsNull(item)) {
        *v = *null_value;
        return FILO_OK;
    }
    char want[96];
    snprintf(want, sizeof want, "a number in %s%g, %g]%s", lo_open ? "(" : "[", lo, hi, null_value ? " or null" : "");
    double x = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    if (!(lo_open ? x > lo : x >= lo) || !(x <= hi))
        return bad_key(r, key, item, want);
    *v = x;
    return FILO_OK;
}

/* A string key equal to `want` when present (a feature this BERT does not have otherwise). */
static filo_status expect_string(const reader *r, const char *key, const char *want)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!item || cJSON_IsNull(item) || (cJSON_IsString(item) && strcmp(item->valuestring, want) == 0))
        return FILO_OK;
    char w[64];
    snprintf(w, sizeof w, "\"%s\"", want);
    return bad_key(r, key, item, w);
}

/* A decimal id in [0, n), or -1. */
static int parse_id(const char *s, int n)
{
    if (!s || !*s || strlen(s) > 9)
        return -1;
    int v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v < n ? v : -1;
}

/* id2label and label2id (either, both in agreement, or neither) and num_labels into c. */
static filo_status read_labels(const reader *r, filo_bert_config *c)
{
    const cJSON *id2 = cJSON_GetObjectItemCaseSensitive(r->root, "id2label");
    const cJSON *l2id = cJSON_GetObjectItemCaseSensitive(r->root, "label2id");
    if (cJSON_IsNull(id2))
        id2 = NULL;
    if (cJSON_IsNull(l2id))
        l2id = NULL;
    int64_t num = -1;
    FILO_TRY(get_int(r, "num_labels", 1, 1 << 20, NULL, &num));
    if (id2 && (!cJSON_IsObject(id2) || cJSON_GetArraySize(id2) < 1))
        return bad_key(r, "id2label", id2, "an object {\"0\": name, ...} of at least one label");
    if (l2id && (!cJSON_IsObject(l2id) || cJSON_GetArraySize(l2id) < 1))
        return bad_key(r, "label2id", l2id, "an object {name: 0, ...} of at least one label");
    if (!id2 && !l2id)
        return filo_bert_config_set_labels(c, num < 0 ? 2 : (int)num, NULL);
    int n = cJSON_GetArraySize(id2 ? id2 : l2id);
    const char **names = calloc((size_t)n, sizeof *names);
    if (!names)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for %d labels", n);
    filo_status s = FILO_OK;
    char want[96];
    snprintf(want, sizeof want, "a map of the %d ids 0..%d, each once, to names", n, n - 1);
    const cJSON *e;
    if (id2) {
        cJSON_ArrayForEach(e, id2)
        {
            int id = parse_id(e->string, n);
            if (s == FILO_OK && (id < 0 || names[id] || !cJSON_IsString(e)))
                s = bad_key(r, "id2label", id2, want);
            if (s == FILO_OK)
                names[id] = e->valuestring;
        }
    }
    if (s == FILO_OK && l2id) {
        snprintf(want, sizeof want, "a map of %d names to the ids 0..%d, each once", n, n - 1);
        int count = 0, disagree = 0;
        cJSON_ArrayForEach(e, l2id)
        {
            int id = is_integer(e) && e->valuedouble >= 0 && e->valuedouble < n ? (int)e->valuedouble : -1;
            count++;
            if (s != FILO_OK || id2) {
                /* transformers takes id2label as it is; checkpoints whose label2id kept the
                 * LABEL_i defaults after id2label was renamed are common. */
                disagree |= id < 0 || strcmp(names[id], e->string) != 0;
                continue;
            }
            if (id < 0 || names[id] != NULL)
                s = bad_key(r, "label2id", l2id, want);
            else
                names[id] = e->string;
        }
        if (s == FILO_OK && !id2 && count != n)
            s = bad_key(r, "label2id", l2id, want);
        if (s == FILO_OK && id2 && (disagree || count != n))
            fprintf(stderr, "filo: warning: %s: label2id is not the inverse of id2label; id2label is used\n",
                    r->path);
    }
    if (s == FILO_OK && num >= 0 && num != n) {
        char w[96];
        snprintf(w, sizeof w, "%d, the number of labels in %s", n, id2 ? "id2label" : "label2id");
        s = bad_key(r, "num_labels", cJSON_GetObjectItemCaseSensitive(r->root, "num_labels"), w);
    }
    if (s == FILO_OK) {
        s = filo_bert_config_set_labels(c, n, names);
        if (s == FILO_ERR_INVALID_ARG)
            s = bad_key(r, "id2label", id2 ? id2 : l2id, "a map to distinct names");
    }
    free(names);
    return s;
}

static filo_status read_config(const reader *r, filo_bert_config *c)
{
    const int64_t big = (int64_t)1 << 40, none = -1;
    FILO_TRY(expect_string(r, "model_type", "bert"));
    FILO_TRY(expect_string(r, "position_embedding_type", "absolute"));
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(r->root, "is_decoder");
    if (dec && !cJSON_IsFalse(dec) && !cJSON_IsNull(dec))
        return bad_key(r, "is_decoder", dec, "false (the decoder BERT is not supported)");
    FILO_TRY(get_int(r, "vocab_size", 1, big, NULL, &c->vocab_size));
    FILO_TRY(get_int(r, "hidden_size", 1, big, NULL, &c->hidden_size));
    FILO_TRY(get_int(r, "num_hidden_layers", 1, 1 << 16, NULL, &c->num_hidden_layers));
    FILO_TRY(get_int(r, "num_attention_heads", 1, big, NULL, &c->num_attention_heads));
    FILO_TRY(get_int(r, "intermediate_size", 1, big, NULL, &c->intermediate_size));
    FILO_TRY(get_int(r, "max_position_embeddings", 1, big, NULL, &c->max_position_embeddings));
    FILO_TRY(get_int(r, "type_vocab_size", 1, big, NULL, &c->type_vocab_size));
    FILO_TRY(get_int(r, "pad_token_id", 0, c->vocab_size - 1, &none, &c->pad_token_id));
    if (c->hidden_size % c->num_attention_heads != 0) {
        char w[96];
        snprintf(w, sizeof w, "a divisor of hidden_size = %lld", (long long)c->hidden_size);
        return bad_key(r, "num_attention_heads", cJSON_GetObjectItemCaseSensitive(r->root, "num_attention_heads"), w);
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(r->root, "hidden_act");
    if (act && (!cJSON_IsString(act) || filo_activation_parse(act->valuestring, &c->hidden_act) != FILO_OK))
        return bad_key(r, "hidden_act", act, "one of \"gelu\", \"gelu_new\", \"gelu_pytorch_tanh\", \"relu\", "
                                            "\"tanh\", \"silu\", \"swish\", \"sigmoid\"");
    const double no_dropout = -1.0;
    FILO_TRY(get_number(r, "layer_norm_eps", 0.0, 1.0, 1, NULL, &c->layer_norm_eps));
    FILO_TRY(get_number(r, "hidden_dropout_prob", 0.0, 1.0, 0, NULL, &c->hidden_dropout_prob));
    FILO_TRY(get_number(r, "attention_probs_dropout_prob", 0.0, 1.0, 0, NULL, &c->attention_probs_dropout_prob));
    FILO_TRY(get_number(r, "classifier_dropout", 0.0, 1.0, 0, &no_dropout, &c->classifier_dropout));
    FILO_TRY(get_number(r, "initializer_range", 0.0, 1.0e6, 0, NULL, &c->initializer_range));
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(r->root, "problem_type");
    if (pt && !cJSON_IsNull(pt)) {
        int found = 0;
        for (int p = FILO_PROBLEM_SINGLE_LABEL; p <= FILO_PROBLEM_REGRESSION; p++)
            if (cJSON_IsString(pt) && strcmp(pt->valuestring, problem_names[p]) == 0) {
                c->problem_type = (filo_bert_problem)p;
                found = 1;
            }
        if (!found)
            return bad_key(r, "problem_type", pt,
                           "null, \"regression\", \"single_label_classification\" or \"multi_label_classification\"");
    }
    return read_labels(r, c);
}

filo_status filo_bert_config_load(const char *path, filo_bert_config *out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    memset(out, 0, sizeof *out);
    if (!path)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "path is NULL");
    char *text;
    size_t len = 0;
    FILO_TRY(filo_text_file_read(path, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    filo_status s = FILO_OK;
    if (!cJSON_IsObject(root)) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= text && at <= text + len ? (size_t)(at - text) : len;
        if (root)
            s = FILO_FAIL(FILO_ERR_FORMAT, "%s is not a JSON object (another JSON value)", path);
        else
            s = FILO_FAIL(FILO_ERR_FORMAT, "%s is not a JSON object (a syntax error at byte %zu)", path, off);
    }
    free(text);
    filo_bert_config c;
    defaults(&c);
    if (s == FILO_OK)
        s = read_config(&(reader){path, root}, &c);
    cJSON_Delete(root);
    if (s != FILO_OK) {
        filo_bert_config_free(&c);
        return s;
    }
    *out = c;
    return FILO_OK;
}

/* ---- config.json writing ---- */

filo_status filo_bert_config_save(const filo_bert_config *c, const char *architecture, const char *path)
{
    FILO_TRY(filo_bert_config_check(c));
    if (!architecture || !path)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "architecture and path must not be NULL");
    /* Keys sorted, as transformers' to_json_file writes them. */
    cJSON *j = cJSON_CreateObject();
    cJSON *arch = cJSON_CreateStringArray(&architecture, 1);
    cJSON_AddItemToObject(j, "architectures", arch);
    cJSON_AddNumberToObject(j, "attention_probs_dropout_prob", c->attention_probs_dropout_prob);
    if (c->classifier_dropout < 0.0)
        cJSON_AddNullToObject(j, "classifier_dropout");
    else
        cJSON_AddNumberToObject(j, "classifier_dropout", c->classifier_dropout);
    cJSON_AddStringToObject(j, "hidden_act", act_name(c->hidden_act));
    cJSON_AddNumberToObject(j, "hidden_dropout_prob", c->hidden_dropout_prob);
    cJSON_AddNumberToObject(j, "hidden_size", (double)c->hidden_size);
    cJSON *id2 = cJSON_AddObjectToObject(j, "id2label");
    for (int i = 0; id2 && i < c->num_labels; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", i);
        cJSON_AddStringToObject(id2, key, c->id2label[i]);
    }
    cJSON_AddNumberToObject(j, "initializer_range", c->initializer_range);
    cJSON_AddNumberToObject(j, "intermediate_size", (double)c->intermediate_size);
    cJSON *l2id = cJSON_AddObjectToObject(j, "label2id");
    for (int i = 0; l2id && i < c->num_labels; i++)
        cJSON_AddNumberToObject(l2id, c->id2label[i], i);
    cJSON_AddNumberToObject(j, "layer_norm_eps", c->layer_norm_eps);
    cJSON_AddNumberToObject(j, "max_position_embeddings", (double)c->max_position_embeddings);
    cJSON_AddStringToObject(j, "model_type", "bert");
    cJSON_AddNumberToObject(j, "num_attention_heads", (double)c->num_attention_heads);
    cJSON_AddNumberToObject(j, "num_hidden_layers", (double)c->num_hidden_layers);
    if (c->pad_token_id < 0)
        cJSON_AddNullToObject(j, "pad_token_id");
    else
        cJSON_AddNumberToObject(j, "pad_token_id", (double)c->pad_token_id);
    cJSON_AddStringToObject(j, "position_embedding_type", "absolute");
    if (c->problem_type == FILO_PROBLEM_UNSET)
        cJSON_AddNullToObject(j, "problem_type");
    else
        cJSON_AddStringToObject(j, "problem_type", problem_names[c->problem_type]);
    cJSON_AddStringToObject(j, "torch_dtype", "float32");
    cJSON_AddNumberToObject(j, "type_vocab_size", (double)c->type_vocab_size);
    cJSON_AddTrueToObject(j, "use_cache");
    cJSON_AddNumberToObject(j, "vocab_size", (double)c->vocab_size);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory building %s", path);
    filo_status s = filo_text_file_write(path, text);
    cJSON_free(text);
    return s;
}
