/* Internal: the LayerNorm/RMSNorm kernels' C signatures, one CPU and one CUDA version each
 * (kernels/cpu/norm.c, kernels/cuda/norm.cu). kernels/norm.c checks the arguments, makes every
 * tensor contiguous and allocates the outputs before calling them. */
#ifndef FILO_KERNELS_NORM_BACKEND_H
#define FILO_KERNELS_NORM_BACKEND_H

#include <stdint.h>

#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The backward spreads rows over at most this many blocks, each leaving one row of dgamma/dbeta
 * partial sums; a fixed count (not one per SM) keeps results identical on every GPU. */
#define FILO_NORM_BWD_MAX_BLOCKS 512

/* All pointers address contiguous data. The statistics (mean, rstd) and the backward's partial
 * sums are f64 when dtype is f64, else f32. */
typedef struct filo_norm_forward_desc {
    int rms;             /* 1: RMSNorm (no mean, no beta) */
    int64_t rows;
    int64_t cols;
    filo_dtype dtype;       /* x, residual, h, y */
    filo_dtype param_dtype; /* gamma, beta */
    double eps;
    const void *x;
    const void *residual; /* NULL: h = x and h is not written */
    const void *gamma;
    const void *beta;     /* NULL: no bias (always NULL for RMSNorm) */
    void *y;
    void *h;              /* [rows, cols], written when residual != NULL */
    void *mean;           /* [rows]; NULL for RMSNorm */
    void *rstd;           /* [rows] */
} filo_norm_forward_desc;

typedef struct filo_norm_backward_desc {
    int rms;
    int64_t rows;
    int64_t cols;
    filo_dtype dtype;
    filo_dtype param_dtype;
    const void *dy;
    const void *h;
    const void *mean;     /* NULL for RMSNorm */
    const void *rstd;
    const void *gamma;
    void *dx;
    void *dgamma;
    void *dbeta;          /* NULL: not wanted (always NULL for RMSNorm) */
    /* CUDA only: [partial_blocks, (rms ? 1 : 2) * cols] scratch of the statistics' dtype, with
     * partial_blocks = min(rows, FILO_NORM_BWD_MAX_BLOCKS); rows >= 1. */
    void *partial;
    int64_t partial_blocks;
} filo_norm_backward_desc;

filo_status filo_cpu_norm_forward(const filo_norm_forward_desc *d);
filo_status filo_cpu_norm_backward(const filo_norm_backward_desc *d);

filo_status filo_cuda_norm_forward(const filo_norm_forward_desc *d, void *stream);
filo_status filo_cuda_norm_backward(const filo_norm_backward_desc *d, void *stream);

#ifdef __cplusplus
}
#endif
#endif
