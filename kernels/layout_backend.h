/* Internal: the layout ops' kernels (kernels/cpu/layout.c, kernels/cuda/layout.cu). They move
 * elements as raw bits of `elsize` bytes (1, 2, 4 or 8), so one kernel serves every dtype.
 * kernels/layout.c checks arguments, makes inputs contiguous and allocates outputs first. */
#ifndef FILO_KERNELS_LAYOUT_BACKEND_H
#define FILO_KERNELS_LAYOUT_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "filo/status.h"
#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dst[r * dst_ld + c] = src[r * src_ld + c] for r < rows, c < cols (element units). */
typedef struct filo_copy2d_desc {
    int64_t rows, cols;
    size_t elsize;
    void *dst;
    int64_t dst_ld;
    const void *src;
    int64_t src_ld;
} filo_copy2d_desc;

/* Contiguous out[o] = in[o - left] when every coordinate of o - left lies inside in_shape, else
 * the element `value` (elsize bytes of out's dtype, little-endian in the low bytes). */
typedef struct filo_pad_desc {
    int ndim;
    size_t elsize;
    int64_t numel;                    /* of out */
    int64_t out_shape[FILO_MAX_DIMS];
    int64_t in_shape[FILO_MAX_DIMS];
    int64_t left[FILO_MAX_DIMS];      /* may be negative (cropping) */
    uint64_t value;
    const void *src;
    void *dst;
} filo_pad_desc;

filo_status filo_cpu_copy2d(const filo_copy2d_desc *d);
filo_status filo_cpu_pad(const filo_pad_desc *d);

filo_status filo_cuda_copy2d(const filo_copy2d_desc *d, void *stream);
filo_status filo_cuda_pad(const filo_pad_desc *d, void *stream);

#ifdef __cplusplus
}
#endif
#endif
