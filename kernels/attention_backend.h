/* Internal: the attention kernels' C signatures, one CPU and one CUDA version each
 * (kernels/cpu/attention.c, kernels/cuda/attention.cu). kernels/attention.c checks the arguments,
 * gives q/k/v/dout a unit D stride (copying when needed) and allocates the outputs first. */
#ifndef FILO_KERNELS_ATTENTION_BACKEND_H
#define FILO_KERNELS_ATTENTION_BACKEND_H

#include <stdint.h>

#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A [B, H, L, D] operand with unit D stride: element (b, h, l, d) is at
 * data[b * sb + h * sh + l * sl + d] (strides in elements). */
typedef struct filo_attention_operand {
    const void *data;
    int64_t sb, sh, sl;
} filo_attention_operand;

/* Everything both passes share. Outputs (out, lse, dq, dk, dv) and out/lse as inputs of the
 * backward are contiguous. lse is f64 when dtype is f64, else f32. */
typedef struct filo_attention_desc {
    int64_t B, H, Lq, Lk;
    int D;                 /* 32, 64 or 128 */
    filo_dtype dtype;      /* q, k, v, out, dout, dq, dk, dv */
    double scale;
    int causal;
    const void *key_lengths; /* NULL or [B] of key_lengths_dtype (i32 or i64) */
    filo_dtype key_lengths_dtype;
    double dropout_p;      /* 0: none; 1: everything dropped */
    uint64_t seed, offset;
    filo_attention_operand q, k, v;
    /* forward outputs */
    void *out;             /* [B, H, Lq, D] */
    void *lse;             /* [B, H, Lq] */
    /* backward inputs (out and lse are read from the fields above) and outputs */
    filo_attention_operand dout;
    void *dq, *dk, *dv;
    /* CUDA backward only: f32 [B, H, Lq] scratch for rowsum(dout * out) */
    void *delta;
} filo_attention_desc;

filo_status filo_cpu_attention_forward(const filo_attention_desc *d);
filo_status filo_cpu_attention_backward(const filo_attention_desc *d);

filo_status filo_cuda_attention_forward(const filo_attention_desc *d, void *stream);
filo_status filo_cuda_attention_backward(const filo_attention_desc *d, void *stream);

#ifdef __cplusplus
}
#endif
#endif
