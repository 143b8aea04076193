/* Running a model over a whole dataset in eval mode, and scoring its predictions with the task's
 * metrics. Shared by `filo finetune` (each epoch) and `filo predict`. */
#ifndef FILO_TOOLS_EVALUATE_H
#define FILO_TOOLS_EVALUATE_H

#include <filo/bert.h>
#include <filo/metrics.h>

#include "task_data.h"

/* The logits of every example on the host, in dataset order: example i's are
 * logits[offset[i] .. offset[i] + width(i)), width n_labels per example (classify, multilabel,
 * regress), per token (ner), or 2 per token (qa: start then end, interleaved). */
typedef struct ft_outputs {
    float *logits;
    int64_t *offset;
    int n_labels;
} ft_outputs;
void ft_outputs_free(ft_outputs *o);
/* The number of logits example e has in the outputs. */
int64_t ft_output_width(const ft_dataset *d, const ft_example *e, int n_labels);

/* Forward passes in batches of `batch` without recording a graph; with_labels also gives the
 * mean loss over examples in *loss. */
int ft_forward_all(const filo_bert *m, const ft_dataset *d, int batch, filo_dtype autocast, int with_labels,
                   double *loss, ft_outputs *out);

/* Named scores; main is the one that picks the best epoch. */
#define FT_MAX_SCORES 6
typedef struct ft_scores {
    double loss;
    int n;
    const char *names[FT_MAX_SCORES];
    double values[FT_MAX_SCORES];
    int main;
    int higher_is_better;
} ft_scores;
int ft_score(const ft_dataset *d, const ft_labels *labels, const ft_outputs *o, double loss, ft_scores *out);

/* Per-example predictions: */
/* classify: the argmax; multilabel: sigmoid > 0.5 into pred[n_labels]. */
int ft_predict_class(const float *logits, int n_labels);
/* ner: the tag of every word of example e (words without a token get the "O" tag, or 0). */
void ft_predict_tags(const ft_example *e, const ft_labels *labels, const float *logits, int n_words, int32_t *tags);
/* qa: the best answer of data row `row` over its windows [first, last]: byte range in the
 * context in *begin, *end and the span score (-inf when no span fits). */
void ft_predict_answer(const ft_dataset *d, const ft_outputs *o, int64_t first, int64_t last, int *begin, int *end,
                       double *score);

#endif
