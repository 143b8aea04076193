/* Mini-batches of fine-tuning examples: length bucketing (examples of similar length batched
 * together, so dynamic padding wastes little), and the upload of one batch as right-padded
 * device tensors. */
#ifndef FILO_TOOLS_BATCHES_H
#define FILO_TOOLS_BATCHES_H

#include <filo/bert.h>
#include <stdint.h>

#include "task_data.h"

typedef struct ft_batch {
    const int64_t *idx; /* example indices (into the plan's storage) */
    int n;
    int len;            /* the longest example: the batch's padded length */
} ft_batch;

typedef struct ft_batch_plan {
    ft_batch *b;
    int64_t n;
    int64_t *store;
} ft_batch_plan;

/* Training order (shuffle 1): the examples shuffled from seed, cut into groups of 50 batches,
 * each group sorted by length and cut into batches, the batch order shuffled again with the
 * longest batch first (an out-of-memory error then comes at the first step, not hours in).
 * Evaluation order (shuffle 0): sorted by length, longest first. */
int ft_plan_batches(const ft_dataset *d, int batch, int shuffle, uint64_t seed, ft_batch_plan *out);
void ft_batch_plan_free(ft_batch_plan *p);

typedef struct ft_device_batch {
    filo_tensor *ids, *type_ids, *lengths; /* i32 [B, L], [B, L], [B] */
    filo_tensor *labels;                   /* the task's labels (filo_bert_loss), NULL without */
    int64_t tokens;                        /* real (unpadded) tokens */
} ft_device_batch;

/* Uploads a batch; n_labels is the label count (multilabel and regression targets' width). */
int ft_batch_upload(const ft_dataset *d, const ft_batch *b, filo_device device, int with_labels, int n_labels,
                    ft_device_batch *out);
void ft_device_batch_free(ft_device_batch *b);

/* Reports a failed step on a batch ("forward pass", "backward pass"...) and returns 1; out of
 * memory suggests a smaller batch. */
int ft_batch_failed(filo_status st, const char *what, const ft_batch *b);

#endif
