/* 2-D convolution over NCHW tensors, forward and backward (PyTorch's nn.Conv2d / F.conv2d:
 * cross-correlation, symmetric zero padding, dilation, groups).
 *
 * x is [N, C, H, W], w is [K, C / groups, R, S], bias is [K] or NULL, y is [N, K, OH, OW] with
 *   OH = floor((H + 2 pad_h - dilation_h (R - 1) - 1) / stride_h) + 1   (and OW alike),
 *   y[n, k, oh, ow] = bias[k] + sum_{c, r, s} x[n, g C/groups + c, oh stride_h - pad_h + r dilation_h,
 *                                             ow stride_w - pad_w + s dilation_w] w[k, c, r, s]
 * where g = k / (K / groups) and positions outside x read zero. groups must divide C and K;
 * groups = C = K is a depthwise convolution. OH and OW must be >= 1. C and K must be >= 1; N may
 * be 0 (empty y; in the backward dw and dbias are then zero).
 *
 * Backends: the CPU runs f32 through oneDNN's convolution primitives (bf16/f16 converted to f32
 * around them) and f64 through plain loops; CUDA runs cuDNN's convolution (f32 without TF32
 * unless FILO_TF32=1; bf16/f16 with f32 compute; f64). The CUDA backward uses only cuDNN's
 * deterministic algorithms, so it is bitwise reproducible run to run.
 *
 * dtypes: x, w, bias, dy and every output share one of f32, f64, bf16, f16. Outputs are new
 * contiguous tensors on x's device, owned by the caller; inputs may be strided views. Calls are
 * non-blocking on the device's current stream. */
#ifndef FILO_CONV_H
#define FILO_CONV_H

#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Zero means the default: stride 1, dilation 1, groups 1 (so {0} is a plain convolution).
 * Negative values are errors. A NULL params pointer means all defaults. */
typedef struct filo_conv2d_params {
    int64_t stride_h, stride_w;
    int64_t pad_h, pad_w;
    int64_t dilation_h, dilation_w;
    int64_t groups;
} filo_conv2d_params;

/* The output's spatial size for an H x W input and an R x S filter (after the ops' checks). */
filo_status filo_conv2d_output_size(const filo_conv2d_params *p, int64_t H, int64_t W, int64_t R, int64_t S,
                                    int64_t *oh, int64_t *ow);

filo_status filo_conv2d_forward(const filo_tensor *x, const filo_tensor *w, const filo_tensor *bias,
                                const filo_conv2d_params *p, filo_tensor **y);

/* dy is [N, K, OH, OW]; x and w are the forward's inputs. dx ([N, C, H, W]), dw (w's shape) and
 * dbias ([K]) are each computed only when its pointer is non-NULL (at least one must be). */
filo_status filo_conv2d_backward(const filo_tensor *dy, const filo_tensor *x, const filo_tensor *w,
                                 const filo_conv2d_params *p, filo_tensor **dx, filo_tensor **dw,
                                 filo_tensor **dbias);

#ifdef __cplusplus
}
#endif
#endif
