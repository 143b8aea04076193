/* Internal: the reduce group's backend entry points, one CPU function and one CUDA launcher per
 * kernel family. kernels/reduce.c checks arguments, makes the input contiguous and describes the
 * problem; the backends only compute. C-compatible (the .cu includes it inside extern "C"). */
#ifndef FILO_KERNELS_REDUCE_BACKEND_H
#define FILO_KERNELS_REDUCE_BACKEND_H

#include <stdint.h>

#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_reduce_kind {
    FILO_RK_SUM,
    FILO_RK_MEAN,
    FILO_RK_MAX,
    FILO_RK_MIN,
    FILO_RK_ARGMAX,
    FILO_RK_VAR
} filo_reduce_kind;

/* A contiguous input seen as [outer, extent, inner], reduced over `extent` into a contiguous
 * [outer, inner] output (dtype = input dtype, i64 for argmax). All-axes reductions are
 * outer = inner = 1. The caller guarantees outer * inner > 0. */
typedef struct filo_reduce_desc {
    filo_reduce_kind kind;
    filo_dtype dtype;
    int64_t outer, extent, inner;
    int correction; /* FILO_RK_VAR only */
    const void *x;
    void *out;
} filo_reduce_desc;

/* Contiguous [rows, cols] input and output of the same dtype, rows * cols > 0. */
typedef struct filo_softmax_desc {
    int log;
    filo_dtype dtype;
    int64_t rows, cols;
    const void *x;
    void *out;
} filo_softmax_desc;

filo_status filo_cpu_reduce(const filo_reduce_desc *d);
filo_status filo_cpu_softmax(const filo_softmax_desc *d);

/* Enqueue on `stream` (a cudaStream_t) of CUDA device `device_index`; scratch memory comes from
 * that device's caching allocator. */
filo_status filo_cuda_reduce(const filo_reduce_desc *d, int device_index, void *stream);
filo_status filo_cuda_softmax(const filo_softmax_desc *d, void *stream);

#ifdef __cplusplus
}
#endif
#endif
