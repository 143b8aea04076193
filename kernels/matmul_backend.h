/* Internal: the GEMM's C signatures, one CPU version (kernels/cpu/matmul.c, oneDNN) and one CUDA
 * version (kernels/cuda_matmul.c, cuBLASLt; the CPU version under the CUDA emulator).
 * kernels/matmul.c checks the arguments, picks each operand's layout from its strides and
 * allocates the output before calling them. */
#ifndef FILO_KERNELS_MATMUL_BACKEND_H
#define FILO_KERNELS_MATMUL_BACKEND_H

#include <stdint.h>

#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One operand as the GEMM sees it: the logical matrix op(X) with `rows` x `cols` elements
 * (A: m x k, B: k x n). Element (i, j) of batch p is at
 *   data + p * batch_stride + (trans ? j * ld + i : i * ld + j)     (in elements)
 * with ld >= cols (trans = 0) or ld >= rows (trans = 1), and batch_stride 0 when one matrix is
 * shared by every batch, else at least the matrix's extent (matrices never overlap). */
typedef struct filo_matmul_operand {
    const void *data;
    int trans;
    int64_t ld;
    int64_t batch_stride;
} filo_matmul_operand;

/* c[p, i, j] = sum_l a[p, i, l] * b[p, l, j] (+ bias[j]), c contiguous [batch, m, n] of dtype.
 * All sizes >= 1. */
typedef struct filo_matmul_desc {
    filo_dtype dtype;
    int64_t batch, m, n, k;
    filo_matmul_operand a, b;
    const void *bias; /* [n] of dtype, or NULL */
    void *c;
} filo_matmul_desc;

filo_status filo_cpu_matmul(const filo_matmul_desc *d);
/* On cuda:device_index, on the CUDA stream `stream` (non-blocking). */
filo_status filo_cuda_matmul(const filo_matmul_desc *d, int device_index, void *stream);

#ifdef __cplusplus
}
#endif
#endif
