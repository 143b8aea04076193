/* filo predict: runs a fine-tuned model over inputs and writes one JSON object per input:
 *   classify    {"label": "spam", "probs": {"ham": 0.02, "spam": 0.98}, "logits": {...}}
 *   multilabel  {"label": ["a", "c"], "probs": {...sigmoids}, "logits": {...}}
 *   regress     {"label": 0.73, "logits": [0.73]} (a list of values for several outputs)
 *   ner         {"tokens": ["Ada", "Lovelace", ...], "labels": ["B-PER", "I-PER", ...]}
 *   qa          {"answer": "...", "start": 12, "end": 20, "score": 7.9} (byte offsets in the context)
 * The task comes from the model's config.json (architectures and problem_type). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <filo/filo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomic_file.h"
#include "cli_args.h"
#include "text_file.h"
#include "commands.h"
#include "evaluate.h"
#include "task_data.h"

typedef struct pr_options {
    const char *model, *input, *output;
    ft_columns columns;
    filo_table_format format;
    int batch, max_len, doc_stride, bf16, skip_bad;
    filo_device device;
} pr_options;

static void usage(FILE *f)
{
    fputs("usage: filo predict --model DIR --input FILE|- [--output FILE] [options]\n"
          "  --model DIR        a model written by filo finetune (or any Hugging Face BERT task model)\n"
          "  --input FILE       plain text, one input per line (\"-\": standard input), or .tsv/.csv/.jsonl\n"
          "  --output FILE      JSON lines, one per input (default: standard output)\n"
          "  --format F         text, tsv, csv, jsonl (default: from the extension; text for -)\n"
          "  --text-col NAME    columns of tabular input (as for filo finetune)\n"
          "  --pair-col NAME\n"
          "  --skip-bad         skip malformed lines instead of stopping\n"
          "  --batch N          (32)    --max-len N (the model's positions, at most 512)\n"
          "  --doc-stride N     qa: overlap of context windows (64)\n"
          "  --bf16             bf16 autocast\n"
          "  --device D         cpu or cuda:N (default: cuda:0 when there is a GPU)\n",
          f);
}

static int parse(int argc, char **argv, pr_options *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 32;
    o->doc_stride = 64;
    o->device = cli_default_device();
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        long n = 0;
        int rc = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--bf16") || !strcmp(a, "--skip-bad")) {
            *(!strcmp(a, "--bf16") ? &o->bf16 : &o->skip_bad) = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "filo predict: %s needs a value (see filo predict --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--input"))
            o->input = v;
        else if (!strcmp(a, "--output"))
            o->output = v;
        else if (!strcmp(a, "--text-col"))
            o->columns.text = v;
        else if (!strcmp(a, "--pair-col"))
            o->columns.pair = v;
        else if (!strcmp(a, "--format")) {
            if (filo_table_format_parse(v, &o->format) != FILO_OK) {
                fprintf(stderr, "filo predict: --format must be text, tsv, csv or jsonl, not '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--batch"))
            rc = cli_parse_long("predict", a, v, 1, 1 << 16, &n), o->batch = (int)n;
        else if (!strcmp(a, "--max-len"))
            rc = cli_parse_long("predict", a, v, 8, 1 << 16, &n), o->max_len = (int)n;
        else if (!strcmp(a, "--doc-stride"))
            rc = cli_parse_long("predict", a, v, 0, 1 << 16, &n), o->doc_stride = (int)n;
        else if (!strcmp(a, "--device"))
            rc = cli_parse_device("predict", v, &o->device);
        else {
            fprintf(stderr, "filo predict: unknown option '%s' (see filo predict --help)\n", a);
            return 2;
        }
        if (rc)
            return rc;
    }
    if (!o->model || !o->input) {
        fprintf(stderr, "filo predict: --model and --input are required (see filo predict --help)\n");
        return 2;
    }
    if (!o->format && !strcmp(o->input, "-"))
        o->format = FILO_TABLE_TEXT;
    return 0;
}

/* The head from config.json's architectures (a bare BertModel has none to predict with). */
static int model_head(const char *dir, filo_bert_task *head)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = NULL;
    if (filo_text_file_read(path, &text, NULL) != FILO_OK) {
        fprintf(stderr, "filo predict: %s\n", filo_last_error());
        return 1;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    cJSON *arch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "architectures"), 0);
    int rc = 1;
    for (int t = FILO_BERT_SEQUENCE_CLASSIFY; t <= FILO_BERT_QUESTION_ANSWER && cJSON_IsString(arch); t++)
        if (!strcmp(arch->valuestring, filo_bert_task_architecture((filo_bert_task)t))) {
            *head = (filo_bert_task)t;
            rc = 0;
        }
    if (rc)
        fprintf(stderr, "filo predict: %s names no task head filo predicts with (architectures: %s)\n", path,
                cJSON_IsString(arch) ? arch->valuestring : "none");
    cJSON_Delete(j);
    return rc;
}

static cJSON *named_values(const filo_bert_config *cfg, const float *v, int sigmoid, int softmax)
{
    cJSON *o = cJSON_CreateObject();
    double mx = -INFINITY, sum = 0;
    for (int c = 0; c < cfg->num_labels; c++)
        mx = v[c] > mx ? v[c] : mx;
    for (int c = 0; c < cfg->num_labels; c++)
        sum += exp(v[c] - mx);
    for (int c = 0; c < cfg->num_labels; c++) {
        double x = sigmoid ? 1 / (1 + exp(-(double)v[c])) : softmax ? exp(v[c] - mx) / sum : v[c];
        cJSON_AddNumberToObject(o, cfg->id2label[c], x);
    }
    return o;
}

/* One JSON object for data row r, whose examples are [first, last]. */
static cJSON *row_json(const filo_bert *m, ft_task task, const ft_dataset *d, const ft_labels *labels,
                       const ft_outputs *out, const filo_table *t, int text_col, int64_t first, int64_t last)
{
    const filo_bert_config *cfg = &m->config;
    const ft_example *e = &d->ex[first];
    const float *lg = out->logits + out->offset[first];
    cJSON *o = cJSON_CreateObject();
    switch (task) {
    case FT_CLASSIFY:
        cJSON_AddStringToObject(o, "label", cfg->id2label[ft_predict_class(lg, cfg->num_labels)]);
        cJSON_AddItemToObject(o, "probs", named_values(cfg, lg, 0, 1));
        cJSON_AddItemToObject(o, "logits", named_values(cfg, lg, 0, 0));
        break;
    case FT_MULTILABEL: {
        cJSON *on = cJSON_AddArrayToObject(o, "label");
        for (int c = 0; c < cfg->num_labels; c++)
            if (lg[c] > 0)
                cJSON_AddItemToArray(on, cJSON_CreateString(cfg->id2label[c]));
        cJSON_AddItemToObject(o, "probs", named_values(cfg, lg, 1, 0));
        cJSON_AddItemToObject(o, "logits", named_values(cfg, lg, 0, 0));
        break;
    }
    case FT_REGRESS: {
        cJSON *all = cJSON_CreateArray();
        for (int c = 0; c < cfg->num_labels; c++)
            cJSON_AddItemToArray(all, cJSON_CreateNumber(lg[c]));
        if (cfg->num_labels == 1)
            cJSON_AddNumberToObject(o, "label", lg[0]);
        else
            cJSON_AddItemReferenceToObject(o, "label", all);
        cJSON_AddItemToObject(o, "logits", all);
        break;
    }
    case FT_NER: {
        const filo_cell *cell = filo_table_cell(t, e->row, text_col);
        int nw = d->n_words[e->row];
        int32_t *tags = malloc(sizeof *tags * (size_t)(nw + 1));
        cJSON *words = cJSON_AddArrayToObject(o, "tokens"), *tl = cJSON_AddArrayToObject(o, "labels");
        if (tags) {
            ft_predict_tags(e, labels, lg, nw, tags);
            char *copy = cell->items ? NULL : strdup(cell->text), *save = NULL;
            char *w = copy ? strtok_r(copy, " \t", &save) : NULL;
            for (int i = 0; i < nw; i++) {
                cJSON_AddItemToArray(words, cJSON_CreateString(cell->items ? cell->items[i] : w ? w : ""));
                cJSON_AddItemToArray(tl, cJSON_CreateString(cfg->id2label[tags[i]]));
                if (!cell->items)
                    w = strtok_r(NULL, " \t", &save);
            }
            free(copy);
        }
        free(tags);
        break;
    }
    case FT_QA: {
        int b, en;
        double score;
        ft_predict_answer(d, out, first, last, &b, &en, &score);
        char *answer = strndup(d->contexts[e->row] + b, (size_t)(en - b));
        cJSON_AddStringToObject(o, "answer", answer ? answer : "");
        cJSON_AddNumberToObject(o, "start", b);
        cJSON_AddNumberToObject(o, "end", en);
        cJSON_AddNumberToObject(o, "score", isfinite(score) ? score : 0);
        free(answer);
        break;
    }
    }
    return o;
}

int filo_cmd_predict(int argc, char **argv)
{
    pr_options o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc;
    filo_bert_task head;
    if (model_head(o.model, &head))
        return 1;
    filo_bert *m = NULL;
    filo_tokenizer *tok = NULL;
    if (filo_bert_load(o.model, head, o.device, 0, &m) != FILO_OK ||
        filo_tokenizer_load_dir(o.model, &tok) != FILO_OK) {
        fprintf(stderr, "filo predict: %s\n", filo_last_error());
        filo_bert_free(m);
        return 1;
    }
    ft_task task = ft_task_of_model(head, m->config.problem_type);
    if (task == FT_CLASSIFY && m->config.problem_type == FILO_PROBLEM_UNSET && m->config.num_labels == 1)
        task = FT_REGRESS;
    ft_labels labels = {.n = m->config.num_labels, .names = m->config.id2label};
    if (!o.max_len)
        o.max_len = m->config.max_position_embeddings < 512 ? (int)m->config.max_position_embeddings : 512;
    filo_table t = {0};
    ft_dataset d = {0};
    ft_outputs out = {0};
    FILE *f = NULL;
    filo_atomic_file af = {0};
    if (filo_table_read(o.input, o.format, o.skip_bad, &t) != FILO_OK) {
        fprintf(stderr, "filo predict: %s\n", filo_last_error());
        rc = 1;
    }
    ft_build_options bo = {.task = task, .columns = o.columns, .max_len = o.max_len, .doc_stride = o.doc_stride};
    /* One plain-text line is one input: the text (ner: its words). */
    if (!rc && filo_table_column(&t, "text") >= 0 && t.n_cols == 1 && !bo.columns.text)
        bo.columns.text = "text";
    if (!rc)
        rc = ft_dataset_build(&t, tok, &bo, &labels, &d);
    if (!rc && d.truncated)
        fprintf(stderr, "filo predict: warning: %lld inputs were longer than %d tokens and were truncated\n",
                (long long)d.truncated, o.max_len);
    if (!rc)
        rc = ft_forward_all(m, &d, o.batch, o.bf16 ? FILO_BF16 : FILO_F32, 0, NULL, &out);
    /* A file is replaced only once every prediction is written. */
    if (!rc && o.output && filo_atomic_file_open(o.output, &af) != FILO_OK) {
        fprintf(stderr, "filo predict: %s\n", filo_last_error());
        rc = 1;
    }
    f = o.output ? af.fp : stdout;
    int text_col = filo_table_column(&t, bo.columns.text ? bo.columns.text : task == FT_NER ? "tokens" : "text");
    for (int64_t i = 0; !rc && i < d.n;) {
        int64_t j = i;
        while (j + 1 < d.n && d.ex[j + 1].row == d.ex[i].row)
            j++;
        cJSON *obj = row_json(m, task, &d, &labels, &out, &t, text_col, i, j);
        char *line = obj ? cJSON_PrintUnformatted(obj) : NULL;
        if (!line || fprintf(f, "%s\n", line) < 0) {
            fprintf(stderr, "filo predict: writing %s failed\n", o.output ? o.output : "the output");
            rc = 1;
        }
        free(line);
        cJSON_Delete(obj);
        i = j + 1;
    }
    if (o.output && af.fp) {
        if (rc)
            filo_atomic_file_abort(&af);
        else if (filo_atomic_file_commit(&af) != FILO_OK) {
            fprintf(stderr, "filo predict: %s\n", filo_last_error());
            rc = 1;
        }
    } else if (fflush(stdout) != 0 && !rc) {
        fprintf(stderr, "filo predict: writing the output failed\n");
        rc = 1;
    }
    ft_outputs_free(&out);
    ft_dataset_free(&d);
    filo_table_free(&t);
    filo_tokenizer_free(tok);
    filo_bert_free(m);
    return rc;
}
