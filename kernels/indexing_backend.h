/* Internal: the indexing ops' kernels (kernels/cpu/indexing.c, kernels/cuda/indexing.cu).
 * kernels/indexing.c checks arguments (and, on the CPU, every index value), makes every tensor
 * contiguous and allocates outputs and scratch before calling them. Index tensors are i64
 * (index_is64 = 1) or i32. */
#ifndef FILO_KERNELS_INDEXING_BACKEND_H
#define FILO_KERNELS_INDEXING_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "filo/dtype.h"
#include "filo/status.h"
#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* index_select and embedding: src is [outer, N, inner], out [outer, K, inner];
 * out[o, k, i] = src[o, index[k], i], or 0 (all bits clear) when index[k] is outside [0, N). */
typedef struct filo_index_select_desc {
    int64_t outer, N, K, inner;
    size_t elsize;
    const void *index;
    int index_is64;
    const void *src;
    void *out;
} filo_index_select_desc;

/* index_add and embedding_backward: dy is [outer, K, inner], dx [outer, N, inner] (dtype float);
 * dx[o, n, i] = sum over k ascending with index[k] == n (and n != skip) of dy[o, k, i]; other rows
 * are 0. Contributions with index outside [0, N) are dropped. skip: a row that gets no gradient
 * (embedding's padding_idx), or -1. */
typedef struct filo_index_add_desc {
    int64_t outer, N, K, inner;
    filo_dtype dtype;
    const void *index;
    int index_is64;
    int64_t skip;
    const void *dy;
    void *dx;
    /* CUDA only: sort scratch of key_count = next power of two >= K uint64 keys (K >= 1), and
     * [outer, K, inner] partial sums of the accumulation type (f64 for f64, else f32). */
    void *keys;
    int64_t key_count;
    void *partial;
} filo_index_add_desc;

/* The accumulation order of index_add and embedding_backward, on both backends. Sort the
 * contributions by (row, source position k); in that sorted list a chunk starts at the first
 * position of every row and at every multiple of FILO_INDEX_ADD_CHUNK. Each chunk is summed in
 * order from 0, and dx = ((0 + chunk 1) + chunk 2) + ... in order. */
#define FILO_INDEX_ADD_CHUNK 32

/* gather: out (index's shape) at position p = src at p with coordinate `dim` replaced by
 * index[p]; 0 when index[p] is outside [0, src_shape[dim]). src and index contiguous. */
typedef struct filo_gather_desc {
    int ndim, dim;
    size_t elsize;
    int64_t numel;                      /* of index and out */
    int64_t src_shape[FILO_MAX_DIMS];
    int64_t index_shape[FILO_MAX_DIMS];
    const void *index;
    int index_is64;
    const void *src;
    void *out;
} filo_gather_desc;

/* scatter_add: out = self (shape self_shape), then for every position p of index (row-major),
 * out at p with coordinate dim replaced by index[p] += src at p (src_shape, contiguous). Per
 * output element the additions run in increasing p. Entries outside [0, self_shape[dim]) are
 * dropped. dtype float for self, src and out. */
typedef struct filo_scatter_add_desc {
    int ndim, dim;
    filo_dtype dtype;
    int64_t numel;                      /* of self and out */
    int64_t self_shape[FILO_MAX_DIMS];
    int64_t index_shape[FILO_MAX_DIMS];
    int64_t src_shape[FILO_MAX_DIMS];
    const void *index;
    int index_is64;
    const void *self;
    const void *src;
    void *out;
} filo_scatter_add_desc;

/* masked_fill: out[p] = mask at p (strides mask_strides over shape, 0 on broadcast dims) != 0 ?
 * value : x[p]. x and out contiguous. value: one element of x's dtype in the low bytes. */
typedef struct filo_masked_fill_desc {
    int ndim;
    size_t elsize;
    int64_t numel;
    int64_t shape[FILO_MAX_DIMS];
    int64_t mask_strides[FILO_MAX_DIMS];
    uint64_t value;
    const void *x;
    const uint8_t *mask;
    void *out;
} filo_masked_fill_desc;

filo_status filo_cpu_index_select(const filo_index_select_desc *d);
filo_status filo_cpu_index_add(const filo_index_add_desc *d);
filo_status filo_cpu_gather(const filo_gather_desc *d);
filo_status filo_cpu_scatter_add(const filo_scatter_add_desc *d);
filo_status filo_cpu_masked_fill(const filo_masked_fill_desc *d);

filo_status filo_cuda_index_select(const filo_index_select_desc *d, void *stream);
filo_status filo_cuda_index_add(const filo_index_add_desc *d, void *stream);
filo_status filo_cuda_gather(const filo_gather_desc *d, void *stream);
filo_status filo_cuda_scatter_add(const filo_scatter_add_desc *d, void *stream);
filo_status filo_cuda_masked_fill(const filo_masked_fill_desc *d, void *stream);

#ifdef __cplusplus
}
#endif
#endif
