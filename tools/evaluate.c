#define _POSIX_C_SOURCE 200809L
#include "evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batches.h"

#define QA_N_BEST 20
#define QA_MAX_ANSWER_TOKENS 30

void ft_outputs_free(ft_outputs *o)
{
    free(o->logits);
    free(o->offset);
    memset(o, 0, sizeof *o);
}

int64_t ft_output_width(const ft_dataset *d, const ft_example *e, int n_labels)
{
    return d->task == FT_NER ? (int64_t)e->len * n_labels : d->task == FT_QA ? 2 * (int64_t)e->len : n_labels;
}

int ft_forward_all(const filo_bert *m, const ft_dataset *d, int batch, filo_dtype autocast, int with_labels,
                   double *loss, ft_outputs *out)
{
    memset(out, 0, sizeof *out);
    const int C = m->config.num_labels;
    out->n_labels = C;
    out->offset = malloc(sizeof *out->offset * (size_t)(d->n + 1));
    if (!out->offset)
        return 1;
    int64_t total = 0, max_width = 0;
    for (int64_t i = 0; i < d->n; i++) {
        out->offset[i] = total;
        int64_t w = ft_output_width(d, &d->ex[i], C);
        total += w;
        max_width = w > max_width ? w : max_width;
    }
    out->offset[d->n] = total;
    ft_batch_plan plan;
    float *host = NULL;
    out->logits = malloc(sizeof *out->logits * (size_t)(total ? total : 1));
    if (!out->logits || ft_plan_batches(d, batch, 0, 0, &plan)) {
        ft_outputs_free(out);
        fprintf(stderr, "filo: out of host memory for the outputs\n");
        return 1;
    }
    int prev = filo_grad_set_enabled(0);
    filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
    ctx.autocast = autocast;
    double loss_sum = 0;
    int rc = 0;
    for (int64_t k = 0; k < plan.n && !rc; k++) {
        const ft_batch *b = &plan.b[k];
        ft_device_batch db;
        if ((rc = ft_batch_upload(d, b, filo_params_device(m->params), with_labels, C, &db)))
            break;
        filo_bert_inputs in = {.input_ids = db.ids, .token_type_ids = db.type_ids, .lengths = db.lengths};
        filo_var *logits = NULL, *l = NULL;
        filo_status st = filo_bert_forward(m, &ctx, &in, &logits);
        if (st != FILO_OK)
            rc = ft_batch_failed(st, "forward pass", b);
        else if (with_labels && (st = filo_bert_loss(m, logits, db.labels, &l)) != FILO_OK)
            rc = ft_batch_failed(st, "loss", b);
        const filo_tensor *lt = logits ? filo_var_value(logits) : NULL;
        size_t bytes = lt ? (size_t)filo_tensor_numel(lt) * sizeof(float) : 0;
        if (!rc && !(host = realloc(host, bytes))) {
            fprintf(stderr, "filo: out of host memory for the outputs\n");
            rc = 1;
        }
        if (!rc && (st = filo_tensor_to_host_as(lt, FILO_F32, host, bytes)) != FILO_OK)
            rc = ft_batch_failed(st, "read-back", b);
        if (!rc && l) {
            float lv = 0;
            if ((st = filo_tensor_to_host_as(filo_var_value(l), FILO_F32, &lv, sizeof lv)) != FILO_OK)
                rc = ft_batch_failed(st, "read-back", b);
            loss_sum += (double)lv * b->n;
        }
        for (int i = 0; i < b->n && !rc; i++) {
            const ft_example *e = &d->ex[b->idx[i]];
            float *dst = out->logits + out->offset[b->idx[i]];
            int64_t w = ft_output_width(d, e, C);
            /* Per-token heads give [B, L, C]: example i's first len rows. */
            int64_t row = d->task == FT_NER ? (int64_t)b->len * C : d->task == FT_QA ? 2 * (int64_t)b->len : C;
            memcpy(dst, host + i * row, sizeof *dst * (size_t)w);
        }
        filo_var_free(l);
        filo_var_free(logits);
        ft_device_batch_free(&db);
    }
    filo_grad_set_enabled(prev);
    free(host);
    ft_batch_plan_free(&plan);
    if (rc)
        ft_outputs_free(out);
    else if (loss)
        *loss = d->n ? loss_sum / (double)d->n : NAN;
    return rc;
}

int ft_predict_class(const float *logits, int n_labels)
{
    int best = 0;
    for (int c = 1; c < n_labels; c++)
        if (logits[c] > logits[best])
            best = c;
    return best;
}

void ft_predict_tags(const ft_example *e, const ft_labels *labels, const float *logits, int n_words, int32_t *tags)
{
    int outside = ft_labels_find(labels, "O");
    for (int w = 0; w < n_words; w++)
        tags[w] = outside >= 0 ? outside : 0;
    for (int k = 0; k < e->len; k++)
        if (e->word_of[k] >= 0)
            tags[e->word_of[k]] = ft_predict_class(logits + (int64_t)k * labels->n, labels->n);
}

void ft_predict_answer(const ft_dataset *d, const ft_outputs *o, int64_t first, int64_t last, int *begin, int *end,
                       double *score)
{
    *begin = *end = 0;
    *score = -INFINITY;
    for (int64_t i = first; i <= last; i++) {
        const ft_example *e = &d->ex[i];
        float *start = malloc(sizeof *start * (size_t)e->len), *stop = malloc(sizeof *stop * (size_t)e->len);
        if (!start || !stop) {
            free(start);
            free(stop);
            continue;
        }
        for (int k = 0; k < e->len; k++) {
            start[k] = o->logits[o->offset[i] + 2 * k];
            stop[k] = o->logits[o->offset[i] + 2 * k + 1];
        }
        filo_span spans[QA_N_BEST];
        int n = 0;
        if (filo_qa_best_spans(start, stop, e->len, e->ctx_begin, e->ctx_end, QA_N_BEST, QA_MAX_ANSWER_TOKENS, spans,
                               &n) == FILO_OK &&
            n > 0 && spans[0].score > *score) {
            *score = spans[0].score;
            *begin = e->char_begin[spans[0].start];
            *end = e->char_end[spans[0].end];
        }
        free(start);
        free(stop);
    }
}

static void add_score(ft_scores *s, const char *name, double v)
{
    s->names[s->n] = name;
    s->values[s->n++] = v;
}

int ft_score(const ft_dataset *d, const ft_labels *labels, const ft_outputs *o, double loss, ft_scores *out)
{
    memset(out, 0, sizeof *out);
    out->loss = loss;
    out->higher_is_better = 1;
    const int C = o->n_labels;
    filo_status st = FILO_OK;
    if (d->task == FT_CLASSIFY) {
        int32_t *pred = malloc(sizeof *pred * (size_t)(d->n + 1)), *gold = malloc(sizeof *gold * (size_t)(d->n + 1));
        for (int64_t i = 0; pred && gold && i < d->n; i++) {
            pred[i] = ft_predict_class(o->logits + o->offset[i], C);
            gold[i] = d->ex[i].label;
        }
        filo_class_metrics m;
        st = pred && gold ? filo_metrics_classify(pred, gold, d->n, C, &m) : FILO_ERR_OOM;
        free(pred);
        free(gold);
        if (st == FILO_OK) {
            add_score(out, "accuracy", m.accuracy);
            add_score(out, "macro_f1", m.macro_f1);
        }
    } else if (d->task == FT_MULTILABEL) {
        uint8_t *pred = malloc((size_t)(d->n * C + 1)), *gold = malloc((size_t)(d->n * C + 1));
        for (int64_t i = 0; pred && gold && i < d->n * C; i++) {
            pred[i] = o->logits[i] > 0; /* sigmoid(x) > 0.5 */
            gold[i] = d->ex[i / C].targets[i % C] > 0.5f;
        }
        filo_class_metrics m;
        st = pred && gold ? filo_metrics_multilabel(pred, gold, d->n, C, &m) : FILO_ERR_OOM;
        free(pred);
        free(gold);
        if (st == FILO_OK) {
            add_score(out, "macro_f1", m.macro_f1);
            add_score(out, "micro_f1", m.micro_f1);
            add_score(out, "exact_match", m.accuracy);
        }
    } else if (d->task == FT_REGRESS) {
        double *pred = malloc(sizeof *pred * (size_t)(d->n * C + 1)), *gold = malloc(sizeof *gold * (size_t)(d->n * C + 1));
        for (int64_t i = 0; pred && gold && i < d->n * C; i++) {
            pred[i] = o->logits[i];
            gold[i] = d->ex[i / C].targets[i % C];
        }
        filo_regression_metrics m;
        st = pred && gold ? filo_metrics_regression(pred, gold, d->n * C, &m) : FILO_ERR_OOM;
        free(pred);
        free(gold);
        if (st == FILO_OK) {
            add_score(out, "mse", m.mse);
            add_score(out, "pearson", m.pearson);
            add_score(out, "spearman", m.spearman);
            out->higher_is_better = 0;
        }
    } else if (d->task == FT_NER) {
        int64_t words = 0;
        for (int64_t i = 0; i < d->n; i++)
            words += d->n_words[d->ex[i].row];
        int32_t *pred = malloc(sizeof *pred * (size_t)(words + 1)), *gold = malloc(sizeof *gold * (size_t)(words + 1));
        int32_t *lens = malloc(sizeof *lens * (size_t)(d->n + 1));
        int64_t at = 0;
        for (int64_t i = 0; pred && gold && lens && i < d->n; i++) {
            const ft_example *e = &d->ex[i];
            int nw = d->n_words[e->row];
            ft_predict_tags(e, labels, o->logits + o->offset[i], nw, pred + at);
            memcpy(gold + at, e->word_tags, sizeof *gold * (size_t)nw);
            lens[i] = nw;
            at += nw;
        }
        filo_entity_metrics m;
        st = pred && gold && lens ? filo_metrics_entities(pred, gold, lens, d->n, (const char *const *)labels->names,
                                                          labels->n, &m)
                                  : FILO_ERR_OOM;
        free(pred);
        free(gold);
        free(lens);
        if (st == FILO_OK) {
            add_score(out, "f1", m.f1);
            add_score(out, "precision", m.precision);
            add_score(out, "recall", m.recall);
        }
    } else {
        double em = 0, f1 = 0;
        int64_t rows = 0;
        for (int64_t i = 0; i < d->n;) {
            int64_t j = i;
            while (j + 1 < d->n && d->ex[j + 1].row == d->ex[i].row)
                j++;
            int64_t r = d->ex[i].row;
            int b, e;
            double score;
            ft_predict_answer(d, o, i, j, &b, &e, &score);
            char *text = strndup(d->contexts[r] + b, (size_t)(e - b));
            if (text && d->n_answers[r]) {
                em += filo_squad_exact(text, (const char *const *)d->answers[r], d->n_answers[r]);
                f1 += filo_squad_f1(text, (const char *const *)d->answers[r], d->n_answers[r]);
                rows++;
            }
            free(text);
            i = j + 1;
        }
        add_score(out, "f1", rows ? f1 / (double)rows : 0);
        add_score(out, "exact_match", rows ? em / (double)rows : 0);
    }
    if (st != FILO_OK) {
        fprintf(stderr, "filo: scoring: %s\n", filo_last_error());
        return 1;
    }
    return 0;
}
