/* Internal: the few element loops the runtime itself needs (strided copy with conversion, fill,
 * Philox draws), each with a CPU version and a CUDA version in runtime/tensor_cuda.cu. */
#ifndef FILO_RUNTIME_TENSOR_KERNELS_H
#define FILO_RUNTIME_TENSOR_KERNELS_H

#include <stdint.h>

#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FILO_LAYOUT_MAX_DIMS 8

/* Element i (row-major over shape) lives at dst + dst_strides·idx and src + src_strides·idx. */
typedef struct filo_copy_desc {
    int ndim;
    int64_t numel;
    int64_t shape[FILO_LAYOUT_MAX_DIMS];
    int64_t dst_strides[FILO_LAYOUT_MAX_DIMS];
    int64_t src_strides[FILO_LAYOUT_MAX_DIMS];
    void *dst;          /* address of element 0 */
    const void *src;
    filo_dtype dst_dtype;
    filo_dtype src_dtype;
} filo_copy_desc;

typedef enum { FILO_DRAW_UNIFORM, FILO_DRAW_NORMAL } filo_draw_kind;

/* A fill or a random draw writes the dst half of a copy_desc (src unused). */
typedef struct filo_draw_desc {
    filo_draw_kind kind;
    double a, b;        /* uniform: [a, b); normal: mean a, std b */
    uint64_t seed;
    uint64_t offset;    /* Philox block of element 0 */
} filo_draw_desc;

/* Merges dims that are contiguous in both layouts and drops size-1 dims, so kernels index less. */
void filo_copy_desc_collapse(filo_copy_desc *d);

void filo_cpu_strided_copy(const filo_copy_desc *d);
/* `pattern` holds one element of d->dst_dtype. */
void filo_cpu_fill(const filo_copy_desc *d, const void *pattern);
void filo_cpu_draw(const filo_copy_desc *d, const filo_draw_desc *draw);

filo_status filo_cuda_strided_copy(const filo_copy_desc *d, void *stream);
filo_status filo_cuda_fill(const filo_copy_desc *d, const void *pattern, void *stream);
filo_status filo_cuda_draw(const filo_copy_desc *d, const filo_draw_desc *draw, void *stream);

#ifdef __cplusplus
}
#endif
#endif
