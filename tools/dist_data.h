/* The data side of data-parallel fine-tuning: which examples each rank trains on, with what loss
 * weight, and evaluation split over the ranks and gathered back.
 *
 * Sampler. Every rank plans the same global batches (ft_plan_batches with the global batch size
 * and the shared seed, so the same order each epoch on every rank, reshuffled per epoch) and
 * takes its contiguous share of each: the examples split as evenly as possible, rank r the r-th
 * part. The ranks' gradients are averaged, so each rank's loss is weighted by
 *     w_r = W * c_r / c
 * where c_r counts what the rank's loss averages over (its examples; for token classification
 * its labelled tokens) and c the same over the whole global batch: the mean of the ranks'
 * weighted losses is then exactly the loss of the global batch in one process. A rank whose
 * share is empty (a last batch smaller than the world) trains on a copy of one example with
 * weight 0, so every rank runs the same backward and the same collectives.
 * Question answering takes the softmax over every position of the padded batch, so its shares
 * are padded to the global batch's length; the other tasks pad to their own longest example. */
#ifndef FILO_TOOLS_DIST_DATA_H
#define FILO_TOOLS_DIST_DATA_H

#include <filo/dist.h>

#include "batches.h"
#include "evaluate.h"

/* The rank's part [lo, hi) of n items split as evenly as possible over world ranks. */
void dp_share(int64_t n, int rank, int world, int64_t *lo, int64_t *hi);

typedef struct dp_slice {
    ft_batch b;     /* the examples this rank runs (a view into the global batch's indices) */
    double weight;  /* the loss weight w_r */
    int repeat;     /* 1: b is a stand-in example (weight 0); its tokens do not count */
} dp_slice;

/* Rank `rank`'s share of global batch g. */
void dp_slice_batch(const ft_dataset *d, const ft_batch *g, int rank, int world, dp_slice *out);

/* Sums n doubles over the ranks, in rank order on every rank (so every rank gets the same bits).
 * comm NULL: nothing to do. Prints the error and returns 1 on failure. */
int dp_sum(filo_comm *comm, double *v, int n);

/* ft_forward_all over the whole dataset, each rank running its contiguous share; every rank gets
 * the outputs of all examples (in dataset order) and the mean loss. comm NULL: ft_forward_all. */
int dp_forward_all(filo_comm *comm, const filo_bert *m, const ft_dataset *d, int batch, filo_dtype autocast,
                   double *loss, ft_outputs *out);

#endif
