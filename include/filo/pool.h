/* 2-D max and average pooling over NCHW tensors, forward and backward (PyTorch's
 * F.max_pool2d(return_indices=True) and F.avg_pool2d semantics).
 *
 * x is [N, C, H, W]; y is [N, C, OH, OW] with, per spatial dim (PyTorch's pooling_output_shape),
 *   OH = floor_or_ceil((H + 2 pad - dilation (kernel - 1) - 1) / stride) + 1
 * rounding up when ceil_mode is set, where a last window that would start in the bottom (right)
 * padding is dropped. OH and OW must be >= 1, and pad <= kernel / 2.
 *
 * Max pooling: y is the window's maximum over the positions inside x (padding is never a
 * candidate; a NaN wins, as in PyTorch); indices (i64, y's shape) holds the flat position
 * h * W + w of the maximum inside its (n, c) plane; the first position wins ties. A window with
 * no position inside x (only possible with dilation) gives -inf and index -1.
 * Average pooling (no dilation): y = sum over the window's positions inside x / divisor, where
 * the divisor counts the window clipped to the padded input (count_include_pad = 1) or to x
 * itself (count_include_pad = 0).
 *
 * Backward: dx[n, c, h, w] sums dy over the windows whose saved index (max) or whose area (avg)
 * is (h, w). Each element of dx gathers its windows in a fixed order, without atomics, so the
 * result is bitwise reproducible. On the CPU an index that is not a position of its own window
 * (out of range, or not inside the window) is an error (FILO_ERR_INVALID_ARG); the CUDA kernel
 * cannot report it and ignores such an index (it adds to no element).
 *
 * dtypes: f32, f64, bf16, f16; bf16/f16 compute in f32, f64 in double. Outputs are new contiguous
 * tensors on x's device, owned by the caller; inputs may be strided views. Calls are non-blocking
 * on the device's current stream. N or C may be 0 (empty outputs). */
#ifndef FILO_POOL_H
#define FILO_POOL_H

#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Zero for stride means stride = kernel; zero for dilation means 1 (as PyTorch's defaults). */
typedef struct filo_pool2d_params {
    int64_t kernel_h, kernel_w;   /* >= 1 */
    int64_t stride_h, stride_w;   /* >= 0 */
    int64_t pad_h, pad_w;         /* 0 <= pad <= kernel / 2 */
    int64_t dilation_h, dilation_w; /* >= 0; average pooling needs 0 or 1 */
    int ceil_mode;
    int count_include_pad;        /* average pooling only */
} filo_pool2d_params;

/* The output's spatial size for an input of H x W (after the same checks as the ops): FILO_OK
 * and *oh, *ow, or the error the op would report. */
filo_status filo_pool2d_output_size(const filo_pool2d_params *p, int64_t H, int64_t W, int64_t *oh, int64_t *ow);

filo_status filo_maxpool2d_forward(const filo_tensor *x, const filo_pool2d_params *p, filo_tensor **y,
                                   filo_tensor **indices);
/* x_shape: the forward input's shape [N, C, H, W]; dy and indices have the forward output's shape. */
filo_status filo_maxpool2d_backward(const filo_tensor *dy, const filo_tensor *indices, const int64_t x_shape[4],
                                    const filo_pool2d_params *p, filo_tensor **dx);

filo_status filo_avgpool2d_forward(const filo_tensor *x, const filo_pool2d_params *p, filo_tensor **y);
filo_status filo_avgpool2d_backward(const filo_tensor *dy, const int64_t x_shape[4], const filo_pool2d_params *p,
                                    filo_tensor **dx);

#ifdef __cplusplus
}
#endif
#endif
