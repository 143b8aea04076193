/* Internal: the convolution's C signatures, one CPU version (kernels/cpu/conv.c: oneDNN for
 * f32/bf16/f16, loops for f64) and one CUDA version (kernels/cuda_conv.c: cuDNN; the CPU version
 * under the CUDA emulator). kernels/conv.c checks the arguments, resolves the parameters'
 * defaults, makes the inputs contiguous and allocates the outputs first. */
#ifndef FILO_KERNELS_CONV_BACKEND_H
#define FILO_KERNELS_CONV_BACKEND_H

#include <stdint.h>

#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Geometry with every parameter resolved (stride, dilation, groups >= 1). All tensors are
 * contiguous NCHW / KCRS of dtype: x [N, C, H, W], w [K, C / groups, R, S], y [N, K, OH, OW].
 * C, K, H, W, R, S, OH, OW >= 1; N >= 1 (callers skip empty batches). */
typedef struct filo_conv2d_desc {
    filo_dtype dtype;
    int64_t N, C, H, W, K, R, S, OH, OW;
    int64_t sh, sw, ph, pw, dh, dw, groups;
} filo_conv2d_desc;

/* y = conv(x, w) (+ bias[k] when bias != NULL). */
filo_status filo_cpu_conv2d_forward(const filo_conv2d_desc *d, const void *x, const void *w, const void *bias,
                                    void *y);
/* Any of dx, dw, dbias may be NULL (not wanted); x is needed for dw only, w for dx only. */
filo_status filo_cpu_conv2d_backward(const filo_conv2d_desc *d, const void *dy, const void *x, const void *w,
                                     void *dx, void *dw, void *dbias);

/* On cuda:device_index, on the CUDA stream `stream` (non-blocking). The bias and its gradient
 * are not here: kernels/conv.c adds the bias and sums dbias with filo's own deterministic ops. */
filo_status filo_cuda_conv2d_forward(const filo_conv2d_desc *d, const void *x, const void *w, void *y,
                                     int device_index, void *stream);
filo_status filo_cuda_conv2d_backward(const filo_conv2d_desc *d, const void *dy, const void *x, const void *w,
                                      void *dx, void *dw, int device_index, void *stream);

#ifdef __cplusplus
}
#endif
#endif
