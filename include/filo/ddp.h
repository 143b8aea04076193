/* Data-parallel training: every rank holds the whole model, runs forward and backward on its own
 * share of the batch, and the gradients are averaged across ranks before the optimizer step, so
 * every rank takes the same step.
 *
 *   filo_ddp_init(comm, params, NULL, &ddp);   // checks every rank has the same parameters,
 *                                               // then broadcasts rank 0's values
 *   for each step:
 *       for each micro-batch m:
 *           filo_ddp_set_sync(ddp, m == last);  // accumulate locally, reduce on the last one
 *           forward; filo_backward(loss...);    // buckets are all-reduced during the backward
 *       filo_ddp_finish(ddp);                   // waits for the buckets, writes the averages
 *       filo_optimizer_step(...); zero_grad;
 *
 * Buckets. The trainable parameters are grouped, in reverse registration order (roughly the
 * order backward finishes them), into buckets of about bucket_bytes of gradient. A gradient hook
 * on each parameter (filo_var_add_hook) notes when its gradient is final; when every gradient of
 * a bucket is, the bucket is packed into one flat buffer and its all-reduce is started on the
 * collective stream while the backward goes on. filo_ddp_finish starts any bucket whose
 * gradients never came (unused parameters: they count as zero on this rank), waits for all,
 * and writes the averaged values back into each parameter's .grad.
 *
 * Gradients are reduced in f32 (the parameters' dtype) whatever the autocast dtype, unless
 * reduce_bf16 asks for bf16 (CUDA only: halves the traffic; the average is rounded to bf16).
 *
 * A world of one rank (filo_comm of a single process) makes every call cheap and leaves the
 * gradients as they are, so a training loop needs no branch. */
#ifndef FILO_DDP_H
#define FILO_DDP_H

#include <stddef.h>
#include <stdint.h>

#include "filo/dist.h"
#include "filo/params.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct filo_ddp_options {
    size_t bucket_bytes;    /* 0: 25 MiB (PyTorch's default bucket_cap_mb) */
    int reduce_bf16;        /* 1: reduce in bf16 (CUDA only); 0: in f32 (the default) */
    int skip_broadcast;     /* 1: the parameters are known equal already (checked, not copied) */
} filo_ddp_options;

filo_ddp_options filo_ddp_defaults(void);

typedef struct filo_ddp filo_ddp;

/* Collective. Compares the trainable parameters of every rank (count, then each name, shape and
 * dtype in order); on any difference every rank fails with FILO_ERR_COMM naming the first
 * parameter that differs and both ranks' versions. Then broadcasts rank 0's values and installs
 * the gradient hooks. params must outlive the ddp; opts may be NULL. */
filo_status filo_ddp_init(filo_comm *comm, filo_params *params, const filo_ddp_options *opts, filo_ddp **out);
/* Removes the hooks and frees the buckets. NULL is a no-op. */
void filo_ddp_free(filo_ddp *ddp);

/* sync 0: the next backward only accumulates into .grad (no communication); sync 1 (the
 * default): the next backward all-reduces. For gradient accumulation, 0 on all micro-steps but
 * the last. */
void filo_ddp_set_sync(filo_ddp *ddp, int sync);
/* After the backward of a sync micro-step: starts what is left, waits for every bucket, and
 * stores the average over ranks in each trainable parameter's .grad (a parameter that had no
 * gradient on any rank keeps none). Fails with the collective's error (timeout, dead peer). */
filo_status filo_ddp_finish(filo_ddp *ddp);

/* Checks that every rank's parameter values are equal bit for bit (a hash per parameter,
 * all-gathered); FILO_ERR_COMM naming the first parameter and the ranks that differ. For tests
 * and for --check-every in tools. */
filo_status filo_ddp_check_equal(filo_ddp *ddp);

typedef struct filo_ddp_stats {
    int buckets;                     /* bucket count */
    size_t bucket_bytes_max;         /* the largest bucket's bytes */
    int64_t reductions;              /* sync steps finished */
    int64_t launched_in_backward;    /* buckets started from a gradient hook, before backward ended */
    int64_t launched_at_finish;      /* buckets started by filo_ddp_finish */
    double last_backward_overlap;    /* share of the last step's buckets started inside backward */
} filo_ddp_stats;
void filo_ddp_stats_get(const filo_ddp *ddp, filo_ddp_stats *out);

/* One event per bucket of the last sync step, in start order: which bucket, how many
 * parameters and bytes, the time (seconds since the step's first hook) it was started and
 * finished, and whether it started inside the backward. For the overlap trace. */
typedef struct filo_ddp_trace_event {
    int bucket;
    int n_params;
    size_t bytes;
    double start_s, end_s;
    int in_backward;
} filo_ddp_trace_event;
/* Copies up to max events into events and returns how many the last step had. */
int filo_ddp_trace(const filo_ddp *ddp, filo_ddp_trace_event *events, int max);

#ifdef __cplusplus
}
#endif
#endif
