#define _POSIX_C_SOURCE 200809L
#include "task_data.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints "filo: file:line: message" and returns 1. */
static int row_error(const filo_table *t, int64_t row, const char *fmt, ...)
{
    char where[512];
    va_list ap;
    fprintf(stderr, "filo: %s: ", filo_table_where(t, row, where, sizeof where));
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

static int oom(void)
{
    fprintf(stderr, "filo: out of host memory while preparing the data\n");
    return 1;
}

static const char *const task_names[] = {"classify", "multilabel", "regress", "ner", "qa"};

int ft_task_parse(const char *name, ft_task *out)
{
    for (int i = 0; i < 5; i++)
        if (name && strcmp(name, task_names[i]) == 0) {
            *out = (ft_task)i;
            return 0;
        }
    return 1;
}

const char *ft_task_name(ft_task task)
{
    return task_names[task];
}

filo_bert_task ft_bert_task(ft_task task)
{
    switch (task) {
    case FT_NER:
        return FILO_BERT_TOKEN_CLASSIFY;
    case FT_QA:
        return FILO_BERT_QUESTION_ANSWER;
    default:
        return FILO_BERT_SEQUENCE_CLASSIFY;
    }
}

filo_bert_problem ft_problem(ft_task task)
{
    switch (task) {
    case FT_MULTILABEL:
        return FILO_PROBLEM_MULTI_LABEL;
    case FT_REGRESS:
        return FILO_PROBLEM_REGRESSION;
    case FT_CLASSIFY:
        return FILO_PROBLEM_SINGLE_LABEL;
    default:
        return FILO_PROBLEM_UNSET;
    }
}

ft_task ft_task_of_model(filo_bert_task head, filo_bert_problem problem)
{
    if (head == FILO_BERT_TOKEN_CLASSIFY)
        return FT_NER;
    if (head == FILO_BERT_QUESTION_ANSWER)
        return FT_QA;
    if (problem == FILO_PROBLEM_MULTI_LABEL)
        return FT_MULTILABEL;
    if (problem == FILO_PROBLEM_REGRESSION)
        return FT_REGRESS;
    return FT_CLASSIFY;
}

void ft_labels_free(ft_labels *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    l->names = NULL;
    l->n = 0;
}

int ft_labels_find(const ft_labels *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->names[i], name) == 0)
            return i;
    return -1;
}

static int labels_add(ft_labels *l, const char *name)
{
    if (ft_labels_find(l, name) >= 0)
        return 0;
    char **names = realloc(l->names, sizeof *names * (size_t)(l->n + 1));
    if (!names)
        return oom();
    l->names = names;
    if (!(l->names[l->n] = strdup(name)))
        return oom();
    l->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A cell's list: a JSON array's items, or its text split at any of `seps`. The strings are
 * borrowed from the cell or from *store (freed by the caller). */
static int cell_list(const filo_cell *c, const char *seps, char ***items, int *n, char **store)
{
    *store = NULL;
    if (c->items) {
        *items = c->items;
        *n = c->n_items;
        return 0;
    }
    *items = NULL;
    *n = 0;
    if (!(*store = strdup(c->text)))
        return oom();
    int cap = 0;
    char *save = NULL;
    for (char *tok = strtok_r(*store, seps, &save); tok; tok = strtok_r(NULL, seps, &save)) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(*items, sizeof *grown * (size_t)cap);
            if (!grown)
                return oom();
            *items = grown;
        }
        (*items)[(*n)++] = tok;
    }
    return 0;
}

static void cell_list_free(const filo_cell *c, char **items, char *store)
{
    if (!c->items)
        free(items);
    free(store);
}

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (*end == ' ')
        end++;
    if (end == s || *end || errno || !isfinite(v))
        return 1;
    *out = (float)v;
    return 0;
}

typedef struct columns {
    int text, pair, label;
} columns;

static int find_columns(const filo_table *t, const ft_build_options *o, columns *c)
{
    const char *defaults[5][3] = {{"text", "text_pair", "label"}, {"text", "text_pair", "label"},
                                  {"text", "text_pair", "label"}, {"tokens", NULL, "tags"},
                                  {"question", "context", "answers"}};
    const char *text = o->columns.text ? o->columns.text : defaults[o->task][0];
    const char *pair = o->columns.pair ? o->columns.pair : defaults[o->task][1];
    const char *label = o->columns.label ? o->columns.label : defaults[o->task][2];
    c->text = filo_table_column(t, text);
    c->pair = pair ? filo_table_column(t, pair) : -1;
    c->label = filo_table_column(t, label);
    const char *missing = c->text < 0 ? text
                          : o->with_labels && c->label < 0 ? label
                          : (o->task == FT_QA && c->pair < 0) ? pair
                          : o->columns.pair && c->pair < 0 ? pair
                                                           : NULL;
    if (missing) {
        fprintf(stderr, "filo: %s has no column '%s'; its columns:", t->path, missing);
        for (int i = 0; i < t->n_cols; i++)
            fprintf(stderr, " %s", t->columns[i]);
        fprintf(stderr, " (set the names with --text-col, --pair-col and --label-col)\n");
        return 1;
    }
    return 0;
}

/* Label names a row uses (classify: one; multilabel and ner: a list). */
static int collect_labels(const filo_table *t, const ft_build_options *o, const columns *c, ft_labels *l)
{
    int was_empty = l->n == 0;
    for (int64_t r = 0; r < t->n_rows; r++) {
        const filo_cell *cell = filo_table_cell(t, r, c->label);
        if (!cell->text)
            return row_error(t, r, "no %s", t->columns[c->label]);
        if (o->task == FT_CLASSIFY) {
            if (!*cell->text)
                return row_error(t, r, "empty label");
            if (labels_add(l, cell->text))
                return 1;
            continue;
        }
        char **items, *store;
        int n;
        if (cell_list(cell, o->task == FT_NER ? " \t" : ",|", &items, &n, &store))
            return 1;
        int bad = 0;
        for (int i = 0; i < n && !bad; i++)
            bad = labels_add(l, items[i]);
        cell_list_free(cell, items, store);
        if (bad)
            return 1;
    }
    if (was_empty)
        qsort(l->names, (size_t)l->n, sizeof *l->names, cmp_str);
    return 0;
}

static int example_alloc(ft_example *e, int len)
{
    e->ids = malloc(sizeof *e->ids * (size_t)len);
    e->type_ids = malloc(sizeof *e->type_ids * (size_t)len);
    e->len = len;
    return e->ids && e->type_ids ? 0 : oom();
}

static void example_free(ft_example *e)
{
    free(e->ids);
    free(e->type_ids);
    free(e->targets);
    free(e->token_labels);
    free(e->word_of);
    free(e->word_tags);
    free(e->char_begin);
    free(e->char_end);
}

static int push_example(ft_dataset *d, int64_t *cap)
{
    if (d->n == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        ft_example *ex = realloc(d->ex, sizeof *ex * (size_t)*cap);
        if (!ex)
            return oom();
        d->ex = ex;
    }
    memset(&d->ex[d->n], 0, sizeof d->ex[d->n]);
    d->n++;
    return 0;
}

/* classify, multilabel, regress: [CLS] text [SEP] (pair [SEP]) with the row's targets. */
static int build_sequence(const filo_table *t, const filo_tokenizer *tok, const ft_build_options *o,
                          const columns *c, const ft_labels *labels, int n_values, ft_dataset *d, int64_t *cap,
                          int64_t r)
{
    const filo_cell *text = filo_table_cell(t, r, c->text);
    const filo_cell *pair = filo_table_cell(t, r, c->pair);
    if (!text->text)
        return row_error(t, r, "no %s", t->columns[c->text]);
    filo_encode_options eo = {.max_len = o->max_len, .truncation = FILO_TRUNCATE_LONGEST_FIRST};
    filo_encoding enc;
    if (filo_tokenizer_encode(tok, text->text, pair->text, &eo, &enc) != FILO_OK)
        return row_error(t, r, "%s", filo_last_error());
    if (push_example(d, cap)) {
        filo_encoding_free(&enc);
        return 1;
    }
    ft_example *e = &d->ex[d->n - 1];
    e->row = r;
    d->truncated += enc.truncated > 0;
    int rc = example_alloc(e, enc.n_real);
    if (!rc) {
        memcpy(e->ids, enc.ids, sizeof *e->ids * (size_t)enc.n_real);
        memcpy(e->type_ids, enc.type_ids, sizeof *e->type_ids * (size_t)enc.n_real);
    }
    filo_encoding_free(&enc);
    if (rc || !o->with_labels)
        return rc;
    const filo_cell *cell = filo_table_cell(t, r, c->label);
    if (!cell->text)
        return row_error(t, r, "no %s", t->columns[c->label]);
    if (o->task == FT_CLASSIFY) {
        e->label = ft_labels_find(labels, cell->text);
        if (e->label < 0)
            return row_error(t, r, "label '%s' was not seen in the training data", cell->text);
        return 0;
    }
    int width = o->task == FT_MULTILABEL ? labels->n : n_values;
    if (!(e->targets = calloc((size_t)width, sizeof *e->targets)))
        return oom();
    char **items, *store;
    int n;
    if (cell_list(cell, o->task == FT_MULTILABEL ? ",|" : ", \t", &items, &n, &store))
        return 1;
    rc = 0;
    if (o->task == FT_REGRESS && n != n_values)
        rc = row_error(t, r, "%d values where the first row has %d", n, n_values);
    for (int i = 0; i < n && !rc; i++) {
        if (o->task == FT_REGRESS) {
            if (parse_float(items[i], &e->targets[i]))
                rc = row_error(t, r, "'%s' is not a number", items[i]);
        } else {
            int k = ft_labels_find(labels, items[i]);
            if (k < 0)
                rc = row_error(t, r, "label '%s' was not seen in the training data", items[i]);
            else
                e->targets[k] = 1;
        }
    }
    cell_list_free(cell, items, store);
    return rc;
}

/* ner: each word's pieces; the first piece of a word carries its tag. */
static int build_tagging(const filo_table *t, const filo_tokenizer *tok, const ft_build_options *o,
                         const columns *c, const ft_labels *labels, ft_dataset *d, int64_t *cap, int64_t r)
{
    const filo_cell *wcell = filo_table_cell(t, r, c->text);
    if (!wcell->text)
        return row_error(t, r, "no %s", t->columns[c->text]);
    char **words, *wstore, **tags = NULL, *tstore = NULL;
    int n_words, n_tags = 0, rc = 0;
    if (cell_list(wcell, " \t", &words, &n_words, &wstore))
        return 1;
    const filo_cell *tcell = filo_table_cell(t, r, c->label);
    if (o->with_labels) {
        if (!tcell->text) {
            rc = row_error(t, r, "no %s", t->columns[c->label]);
        } else if (!(rc = cell_list(tcell, " \t", &tags, &n_tags, &tstore)) && n_tags != n_words) {
            rc = row_error(t, r, "%d words but %d tags", n_words, n_tags);
        }
    }
    filo_special_ids sp = filo_tokenizer_specials(tok);
    filo_pieces p = {0};
    int32_t *word_start = malloc(sizeof *word_start * (size_t)(n_words + 1));
    if (!word_start && !rc)
        rc = oom();
    for (int w = 0; w < n_words && !rc; w++) {
        word_start[w] = p.n;
        if (filo_tokenizer_pieces(tok, words[w], strlen(words[w]), &p) != FILO_OK)
            rc = row_error(t, r, "word %d: %s", w + 1, filo_last_error());
    }
    if (!rc && !(rc = push_example(d, cap))) {
        ft_example *e = &d->ex[d->n - 1];
        e->row = r;
        int keep = p.n < o->max_len - 2 ? p.n : o->max_len - 2;
        d->truncated += keep < p.n;
        d->n_words[r] = n_words;
        rc = example_alloc(e, keep + 2);
        if (!rc && (!(e->token_labels = malloc(sizeof(int32_t) * (size_t)(keep + 2))) ||
                    !(e->word_of = malloc(sizeof(int32_t) * (size_t)(keep + 2))) ||
                    !(e->word_tags = malloc(sizeof(int32_t) * (size_t)(n_words + 1)))))
            rc = oom();
        for (int w = 0; w < n_words && !rc && o->with_labels; w++)
            if ((e->word_tags[w] = ft_labels_find(labels, tags[w])) < 0)
                rc = row_error(t, r, "tag '%s' was not seen in the training data", tags[w]);
        if (!rc) {
            for (int i = 0; i < keep + 2; i++) {
                e->ids[i] = i == 0 ? sp.cls : i == keep + 1 ? sp.sep : p.ids[i - 1];
                e->type_ids[i] = 0;
                e->token_labels[i] = -100;
                e->word_of[i] = -1;
            }
            for (int w = 0; w < n_words && !rc; w++) {
                int pos = word_start[w];
                int has_piece = (w + 1 < n_words ? word_start[w + 1] : p.n) > pos;
                if (!has_piece || pos >= keep)
                    continue; /* a word with no pieces (only control characters) or cut off */
                e->word_of[pos + 1] = w;
                if (o->with_labels)
                    e->token_labels[pos + 1] = e->word_tags[w];
            }
        }
    }
    free(word_start);
    filo_pieces_free(&p);
    cell_list_free(wcell, words, wstore);
    if (tags)
        cell_list_free(tcell, tags, tstore);
    return rc;
}

/* The gold answers of a QA row: {"text": [...], "answer_start": [...]} or one answer string
 * (found in the context). Offsets are bytes into the context. */
static int qa_answers(const filo_table *t, int64_t r, const filo_cell *cell, const char *context, char ***texts,
                      int **starts, int *n)
{
    *texts = NULL;
    *starts = NULL;
    *n = 0;
    cJSON *j = cell->text && cell->text[0] == '{' ? cJSON_Parse(cell->text) : NULL;
    if (j) {
        cJSON *tx = cJSON_GetObjectItemCaseSensitive(j, "text");
        cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "answer_start");
        int k = cJSON_IsArray(tx) ? cJSON_GetArraySize(tx) : -1;
        if (k < 0 || !cJSON_IsArray(st) || cJSON_GetArraySize(st) != k) {
            cJSON_Delete(j);
            return row_error(t, r, "answers need \"text\" and \"answer_start\" arrays of one length");
        }
        *texts = calloc((size_t)k + 1, sizeof **texts);
        *starts = calloc((size_t)k + 1, sizeof **starts);
        if (!*texts || !*starts) {
            cJSON_Delete(j);
            return oom();
        }
        size_t clen = strlen(context);
        for (int i = 0; i < k; i++) {
            cJSON *a = cJSON_GetArrayItem(tx, i), *s = cJSON_GetArrayItem(st, i);
            if (!cJSON_IsString(a) || !cJSON_IsNumber(s) || s->valuedouble < 0 ||
                (size_t)s->valuedouble + strlen(a->valuestring) > clen) {
                cJSON_Delete(j);
                return row_error(t, r, "answer %d is not a string inside the context", i + 1);
            }
            if (!((*texts)[i] = strdup(a->valuestring))) {
                cJSON_Delete(j);
                return oom();
            }
            (*starts)[i] = (int)s->valuedouble;
            *n = i + 1;
        }
        cJSON_Delete(j);
        return 0;
    }
    if (!cell->text || !*cell->text)
        return 0; /* no answer given (prediction input) */
    const char *at = strstr(context, cell->text);
    if (!at)
        return row_error(t, r, "the answer '%s' is not in the context", cell->text);
    *texts = calloc(2, sizeof **texts);
    *starts = calloc(1, sizeof **starts);
    if (!*texts || !*starts)
        return oom();
    if (!((*texts)[0] = strdup(cell->text)))
        return oom();
    (*starts)[0] = (int)(at - context);
    *n = 1;
    return 0;
}

/* qa: [CLS] question [SEP] context window [SEP], windows overlapping by doc_stride tokens. */
static int build_qa(const filo_table *t, const filo_tokenizer *tok, const ft_build_options *o, const columns *c,
                    ft_dataset *d, int64_t *cap, int64_t r)
{
    const filo_cell *q = filo_table_cell(t, r, c->text), *ctx = filo_table_cell(t, r, c->pair);
    if (!q->text || !ctx->text)
        return row_error(t, r, "a question and a context are needed");
    if (!(d->contexts[r] = strdup(ctx->text)))
        return oom();
    int *starts = NULL, rc = 0;
    if (c->label >= 0 &&
        qa_answers(t, r, filo_table_cell(t, r, c->label), ctx->text, &d->answers[r], &starts, &d->n_answers[r]))
        return 1;
    if (o->with_labels && d->n_answers[r] == 0)
        rc = row_error(t, r, "no answer");
    filo_special_ids sp = filo_tokenizer_specials(tok);
    filo_pieces qp = {0}, cp = {0};
    if (!rc && (filo_tokenizer_pieces(tok, q->text, strlen(q->text), &qp) != FILO_OK ||
                filo_tokenizer_pieces(tok, ctx->text, strlen(ctx->text), &cp) != FILO_OK))
        rc = row_error(t, r, "%s", filo_last_error());
    /* At most half the window for the question, as BERT's SQuAD recipe caps the query. */
    int nq = qp.n < o->max_len / 2 ? qp.n : o->max_len / 2;
    d->truncated += !rc && nq < qp.n;
    int avail = o->max_len - nq - 3;
    int step = avail - o->doc_stride > 0 ? avail - o->doc_stride : (avail + 1) / 2;
    int a_begin = d->n_answers[r] ? starts[0] : 0;
    int a_end = d->n_answers[r] ? a_begin + (int)strlen(d->answers[r][0]) : 0;
    for (int w0 = 0; !rc; w0 += step) {
        int w1 = w0 + avail < cp.n ? w0 + avail : cp.n;
        if ((rc = push_example(d, cap)))
            break;
        ft_example *e = &d->ex[d->n - 1];
        e->row = r;
        int len = nq + (w1 - w0) + 3;
        if ((rc = example_alloc(e, len)))
            break;
        e->char_begin = malloc(sizeof(int32_t) * (size_t)len);
        e->char_end = malloc(sizeof(int32_t) * (size_t)len);
        if (!e->char_begin || !e->char_end) {
            rc = oom();
            break;
        }
        int k = 0;
        e->ids[k++] = sp.cls;
        for (int i = 0; i < nq; i++)
            e->ids[k++] = qp.ids[i];
        e->ids[k++] = sp.sep;
        e->ctx_begin = k;
        for (int i = w0; i < w1; i++) {
            e->char_begin[k] = cp.begin[i];
            e->char_end[k] = cp.end[i];
            e->ids[k++] = cp.ids[i];
        }
        e->ctx_end = k;
        e->ids[k++] = sp.sep;
        for (int i = 0; i < len; i++) {
            e->type_ids[i] = i >= e->ctx_begin;
            if (i < e->ctx_begin || i >= e->ctx_end)
                e->char_begin[i] = e->char_end[i] = 0;
        }
        /* The answer's token span when the window holds all of it; else [CLS] (0, 0). */
        e->answer_start = e->answer_end = 0;
        if (d->n_answers[r] && w1 > w0 && cp.begin[w0] <= a_begin && cp.end[w1 - 1] >= a_end) {
            int s = e->ctx_begin, en = e->ctx_end - 1;
            while (s < e->ctx_end && e->char_end[s] <= a_begin)
                s++;
            while (en >= e->ctx_begin && e->char_begin[en] >= a_end)
                en--;
            if (s <= en) {
                e->answer_start = s;
                e->answer_end = en;
            }
        }
        if (w1 >= cp.n)
            break;
    }
    free(starts);
    filo_pieces_free(&qp);
    filo_pieces_free(&cp);
    return rc;
}

int ft_dataset_build(const filo_table *t, const filo_tokenizer *tok, const ft_build_options *o, ft_labels *labels,
                     ft_dataset *out)
{
    memset(out, 0, sizeof *out);
    out->task = o->task;
    out->rows = t->n_rows;
    columns c;
    if (find_columns(t, o, &c))
        return 1;
    if (o->max_len < 8) {
        fprintf(stderr, "filo: a maximum length of %d tokens is too short\n", o->max_len);
        return 1;
    }
    if (o->with_labels && o->grow_labels && (o->task == FT_CLASSIFY || o->task == FT_MULTILABEL || o->task == FT_NER) &&
        collect_labels(t, o, &c, labels))
        return 1;
    int n_values = labels->n;
    if (o->task == FT_REGRESS && o->with_labels) {
        const filo_cell *first = filo_table_cell(t, 0, c.label);
        char **items, *store;
        if (!first->text)
            return row_error(t, 0, "no %s", t->columns[c.label]);
        if (cell_list(first, ", \t", &items, &n_values, &store))
            return 1;
        cell_list_free(first, items, store);
        if (labels->n && labels->n != n_values)
            return row_error(t, 0, "%d values where the model predicts %d", n_values, labels->n);
        if (!labels->n)
            for (int i = 0; i < n_values; i++) {
                char name[32];
                snprintf(name, sizeof name, "LABEL_%d", i);
                if (labels_add(labels, name))
                    return 1;
            }
    }
    if (o->task == FT_QA) {
        out->contexts = calloc((size_t)t->n_rows, sizeof *out->contexts);
        out->answers = calloc((size_t)t->n_rows, sizeof *out->answers);
        out->n_answers = calloc((size_t)t->n_rows, sizeof *out->n_answers);
        if (!out->contexts || !out->answers || !out->n_answers)
            return oom();
    }
    if (o->task == FT_NER && !(out->n_words = calloc((size_t)t->n_rows, sizeof *out->n_words)))
        return oom();
    int64_t cap = 0;
    for (int64_t r = 0; r < t->n_rows; r++) {
        int rc = o->task == FT_NER ? build_tagging(t, tok, o, &c, labels, out, &cap, r)
                 : o->task == FT_QA ? build_qa(t, tok, o, &c, out, &cap, r)
                                    : build_sequence(t, tok, o, &c, labels, n_values, out, &cap, r);
        if (rc) {
            ft_dataset_free(out);
            return 1;
        }
    }
    return 0;
}

void ft_dataset_free(ft_dataset *d)
{
    for (int64_t i = 0; i < d->n; i++)
        example_free(&d->ex[i]);
    free(d->ex);
    if (d->answers)
        for (int64_t r = 0; r < d->rows; r++) {
            for (int i = 0; d->answers[r] && i < d->n_answers[r]; i++)
                free(d->answers[r][i]);
            free(d->answers[r]);
        }
    if (d->contexts)
        for (int64_t r = 0; r < d->rows; r++)
            free(d->contexts[r]);
    free(d->contexts);
    free(d->answers);
    free(d->n_answers);
    free(d->n_words);
    memset(d, 0, sizeof *d);
}
