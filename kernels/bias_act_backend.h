/* Internal: the fused bias-activation kernels' C signatures (kernels/cpu/bias_act.c,
 * kernels/cuda/bias_act.cu). kernels/bias_act.c checks the arguments, makes every tensor
 * contiguous and allocates the outputs (and the CUDA scratch) before calling them. The bias +
 * dropout + residual forward and its no-bias backward use filo_*_dropout_apply
 * (kernels/dropout_backend.h). */
#ifndef FILO_KERNELS_BIAS_ACT_BACKEND_H
#define FILO_KERNELS_BIAS_ACT_BACKEND_H

#include <stdint.h>

#include "dropout_backend.h"
#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA column reductions (dbias) split the rows into this many chunks at most, each chunk
 * leaving one row of partial sums; the count depends only on the shape, so results are the same
 * on every GPU. A chunk has at least FILO_BIAS_ACT_CHUNK_ROWS rows (but the last). */
#define FILO_BIAS_ACT_MAX_CHUNKS 128
#define FILO_BIAS_ACT_CHUNK_ROWS 32

/* Chunks for `rows` rows (rows >= 1): min(ceil(rows / CHUNK_ROWS), MAX_CHUNKS). */
static inline int64_t filo_bias_act_chunks(int64_t rows)
{
    int64_t c = (rows + FILO_BIAS_ACT_CHUNK_ROWS - 1) / FILO_BIAS_ACT_CHUNK_ROWS;
    return c < FILO_BIAS_ACT_MAX_CHUNKS ? c : FILO_BIAS_ACT_MAX_CHUNKS;
}

/* All pointers address contiguous [rows, cols] data (bias, dbias: [cols]). */
typedef struct filo_bias_gelu_desc {
    int64_t rows, cols;
    int approximate;        /* 0: erf form, 1: tanh form */
    filo_dtype dtype;       /* x, y, dy, dx */
    filo_dtype bias_dtype;  /* dtype, or f32 when dtype is bf16/f16 */
    const void *x;
    const void *bias;       /* NULL: none (then dbias is NULL) */
    const void *dy;         /* backward only */
    void *y;                /* forward: gelu(x + bias); backward: dx */
    void *dbias;            /* backward, NULL: not wanted */
    /* CUDA backward with dbias: [filo_bias_act_chunks(rows), cols] scratch, f64 when dtype is
     * f64, else f32. */
    void *partial;
} filo_bias_gelu_desc;

/* The dropout backward with a bias gradient: dx = dy * mask * scale, dbias = column sums of dx.
 * drop.x is dy, drop.y is dx, drop.bias and drop.residual are NULL. */
typedef struct filo_dropout_dbias_desc {
    filo_dropout_desc drop;
    int64_t rows;           /* drop.n / drop.cols */
    filo_dtype dbias_dtype;
    void *dbias;
    void *partial;          /* CUDA: as in filo_bias_gelu_desc */
} filo_dropout_dbias_desc;

filo_status filo_cpu_bias_gelu_forward(const filo_bias_gelu_desc *d);
filo_status filo_cpu_bias_gelu_backward(const filo_bias_gelu_desc *d);
filo_status filo_cpu_dropout_dbias(const filo_dropout_dbias_desc *d);

filo_status filo_cuda_bias_gelu_forward(const filo_bias_gelu_desc *d, void *stream);
filo_status filo_cuda_bias_gelu_backward(const filo_bias_gelu_desc *d, void *stream);
filo_status filo_cuda_dropout_dbias(const filo_dropout_dbias_desc *d, void *stream);

#ifdef __cplusplus
}
#endif
#endif
