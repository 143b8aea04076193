/* From rows of a data file to model inputs for each fine-tuning task: tokenized, truncated
 * examples with their labels, the label set, and what evaluation needs to map predictions back
 * to words (NER) or to text spans (QA). */
#ifndef FILO_TOOLS_TASK_DATA_H
#define FILO_TOOLS_TASK_DATA_H

#include <filo/bert.h>
#include <filo/table.h>
#include <filo/tokenizer.h>
#include <stdint.h>

typedef enum ft_task {
    FT_CLASSIFY = 0, /* one label per text (or text pair) */
    FT_MULTILABEL,   /* a set of labels per text */
    FT_REGRESS,      /* one or more numbers per text */
    FT_NER,          /* one tag per word */
    FT_QA,           /* an answer span in a context */
} ft_task;

/* "classify", "multilabel", "regress", "ner", "qa". */
int ft_task_parse(const char *name, ft_task *out);
const char *ft_task_name(ft_task task);
filo_bert_task ft_bert_task(ft_task task);
filo_bert_problem ft_problem(ft_task task);
/* The task a saved model was fine-tuned for, from its head and problem type. */
ft_task ft_task_of_model(filo_bert_task head, filo_bert_problem problem);

/* Column names; NULL means the task's default:
 *   classify/multilabel/regress  text, text_pair (used when the file has it), label
 *   ner                          tokens, -, tags
 *   qa                           question, context, answers */
typedef struct ft_columns {
    const char *text, *pair, *label;
} ft_columns;

/* The label names of a classification or tagging task, in index order. */
typedef struct ft_labels {
    int n;
    char **names;
} ft_labels;
void ft_labels_free(ft_labels *l);
int ft_labels_find(const ft_labels *l, const char *name);

/* One model input: [CLS] a [SEP] (b [SEP]), no padding. */
typedef struct ft_example {
    int32_t *ids, *type_ids;
    int32_t len;
    int64_t row;            /* the data row it came from (QA: several windows share a row) */
    int32_t label;          /* classify */
    float *targets;         /* multilabel: n_labels 0/1; regress: n_labels values */
    int32_t *token_labels;  /* ner: len tags, -100 where no word starts */
    int32_t *word_of;       /* ner: the word index each token starts, -1 elsewhere */
    int32_t *word_tags;     /* ner: the gold tag of every word of the row, cut off or not */
    int32_t answer_start, answer_end;  /* qa: token span of the answer, 0 0 when not in this window */
    int32_t ctx_begin, ctx_end;        /* qa: the context's tokens [ctx_begin, ctx_end) */
    int32_t *char_begin, *char_end;    /* qa: byte offsets of tokens in the context */
} ft_example;

typedef struct ft_dataset {
    ft_task task;
    ft_example *ex;
    int64_t n;
    int64_t rows;           /* data rows read */
    int64_t truncated;      /* rows cut to max_len */
    char **contexts;        /* qa: per row, the context text */
    char ***answers;        /* qa: per row, the gold answer texts (NULL when the row has none) */
    int *n_answers;
    int32_t *n_words;       /* ner: per row, the words the row has */
} ft_dataset;

typedef struct ft_build_options {
    ft_task task;
    ft_columns columns;
    int max_len;            /* total tokens with specials */
    int doc_stride;         /* qa: overlap of context windows, in tokens */
    int with_labels;        /* 0: prediction input (no label column needed) */
    int grow_labels;        /* 1: labels not yet in the set are added (training); 0: an error */
} ft_build_options;

/* Builds examples from a table. labels is read and, with grow_labels, extended (then sorted
 * when it started empty, so the order does not depend on the data's order). Errors name
 * file:line and the column. */
int ft_dataset_build(const filo_table *t, const filo_tokenizer *tok, const ft_build_options *o, ft_labels *labels,
                     ft_dataset *out);
void ft_dataset_free(ft_dataset *d);

#endif
