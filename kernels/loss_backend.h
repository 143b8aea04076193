/* Internal: the cross-entropy kernels' C signature, one CPU and one CUDA version
 * (kernels/cpu/loss.c, kernels/cuda/loss.cu). kernels/loss.c checks the arguments, makes every
 * tensor contiguous and allocates the outputs (and the CUDA scratch) before calling them. */
#ifndef FILO_KERNELS_LOSS_BACKEND_H
#define FILO_KERNELS_LOSS_BACKEND_H

#include <stdint.h>

#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One descriptor for the three calls. All pointers address contiguous data; "A" below is the
 * accumulation dtype: f64 when dtype is f64, else f32 (weight, lse, loss, dloss, scratch).
 *   forward:  compute = 1, grad = 0: writes lse and loss
 *   backward: compute = 0, grad = 1: reads lse and dloss, writes dx
 *   fused:    compute = 1, grad = 1: writes loss and dx; lse is NULL (kept in registers), dloss
 *             NULL: the gradient of the 0-dim loss is grad_scale */
typedef struct filo_loss_desc {
    int compute;
    int grad;
    int64_t rows;
    int64_t cols;
    filo_dtype dtype;        /* x, dx */
    filo_dtype target_dtype; /* i64 or i32 */
    int reduction;           /* filo_loss_reduction */
    int64_t ignore_index;
    double label_smoothing;
    double grad_scale;       /* fused only */
    const void *x;           /* [rows, cols] */
    const void *target;      /* [rows] */
    const void *weight;      /* [cols] of A, or NULL */
    void *lse;               /* [rows] of A: written by the forward (NULL: not wanted) or read by the backward */
    void *loss;              /* [rows] of A for NONE, else [1] */
    const void *dloss;       /* backward: [rows] for NONE, else [1] */
    void *dx;                /* [rows, cols] */
    /* CUDA only: scratch of A, rows + 3 elements: W, Wsum, 1 / W, then the per-row losses. */
    void *scratch;
} filo_loss_desc;

filo_status filo_cpu_cross_entropy(const filo_loss_desc *d);
filo_status filo_cuda_cross_entropy(const filo_loss_desc *d, void *stream);

#ifdef __cplusplus
}
#endif
#endif
