/* Evaluation metrics for the BERT tasks, with the definitions their usual libraries use:
 * scikit-learn's accuracy and macro-F1, seqeval's entity-level F1 (IOB2 / BIO tags), the SQuAD
 * v1.1 script's exact match and token F1, and the n-best span decoding of transformers' question
 * answering examples. Host-side, on plain arrays. */
#ifndef FILO_METRICS_H
#define FILO_METRICS_H

#include <stdint.h>

#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct filo_class_metrics {
    double accuracy;
    double macro_f1;  /* mean over classes present in gold or pred (sklearn's labels=None) */
    double micro_f1;  /* multi-label: over all (example, label) decisions; else = accuracy */
} filo_class_metrics;

/* Single-label: pred and gold in [0, n_classes). */
filo_status filo_metrics_classify(const int32_t *pred, const int32_t *gold, int64_t n, int n_classes,
                                  filo_class_metrics *out);
/* Multi-label: pred and gold are n x n_labels 0/1; accuracy is the exact-match (subset) ratio,
 * macro_f1 the mean of per-label F1 (labels with no gold and no pred positive are left out). */
filo_status filo_metrics_multilabel(const uint8_t *pred, const uint8_t *gold, int64_t n, int n_labels,
                                    filo_class_metrics *out);

typedef struct filo_regression_metrics {
    double mse, mae, pearson, spearman;
} filo_regression_metrics;
filo_status filo_metrics_regression(const double *pred, const double *gold, int64_t n, filo_regression_metrics *out);

typedef struct filo_entity_metrics {
    double precision, recall, f1;  /* entity level, micro-averaged (seqeval's default) */
    int64_t n_gold, n_pred, n_correct;
} filo_entity_metrics;
/* Entity-level scores over n_seqs sentences of tags (seq_len[i] tags each, concatenated in pred
 * and gold). Tags are indices into names, each "O", "B-X" or "I-X" (IOB2 / BIO; any other name is
 * FILO_ERR_INVALID_ARG). An I-X that does not continue an X entity starts one, as seqeval does
 * in its default mode. */
filo_status filo_metrics_entities(const int32_t *pred, const int32_t *gold, const int32_t *seq_len, int64_t n_seqs,
                                  const char *const *names, int n_names, filo_entity_metrics *out);

/* SQuAD v1.1: answers normalized (lowercase, punctuation and the articles a/an/the removed,
 * whitespace collapsed); EM and F1 against the best of the gold answers, in [0, 1]. */
double filo_squad_exact(const char *pred, const char *const *gold, int n_gold);
double filo_squad_f1(const char *pred, const char *const *gold, int n_gold);

typedef struct filo_span {
    int32_t start, end;  /* token positions, inclusive */
    double score;        /* start_logit + end_logit */
} filo_span;
/* The n_best highest-scoring spans with start <= end, end - start + 1 <= max_answer_len, both
 * inside [ctx_begin, ctx_end) (the context's tokens), taken from the top n_best start and end
 * logits as transformers' postprocessing does. *n_out may be < n_best (0 when none fits). */
filo_status filo_qa_best_spans(const float *start_logits, const float *end_logits, int32_t len, int32_t ctx_begin,
                               int32_t ctx_end, int n_best, int max_answer_len, filo_span *spans, int *n_out);

#ifdef __cplusplus
}
#endif
#endif
