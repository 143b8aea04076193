/* Internal: the pooling kernels' C signatures, one CPU (kernels/cpu/pool.c) and one CUDA
 * (kernels/cuda/pool.cu) version each. kernels/pool.c checks the arguments, resolves the
 * parameters' defaults, makes the inputs contiguous and allocates the outputs first. */
#ifndef FILO_KERNELS_POOL_BACKEND_H
#define FILO_KERNELS_POOL_BACKEND_H

#include <stdint.h>

#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* planes = N * C; every size >= 1 except planes (>= 1 too: callers skip empty work). Strides and
 * dilations are resolved (>= 1). All tensors contiguous: x/dx [planes, H, W], y/dy/indices
 * [planes, OH, OW]; indices are i64. */
typedef struct filo_pool2d_desc {
    filo_dtype dtype;
    int64_t planes, H, W, OH, OW;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    int count_include_pad;
    const void *x;        /* forward input */
    void *y;              /* forward output */
    int64_t *indices;     /* max forward output, max backward input */
    const void *dy;       /* backward input */
    void *dx;             /* backward output */
} filo_pool2d_desc;

filo_status filo_cpu_maxpool2d_forward(const filo_pool2d_desc *d);
filo_status filo_cpu_maxpool2d_backward(const filo_pool2d_desc *d);
filo_status filo_cpu_avgpool2d_forward(const filo_pool2d_desc *d);
filo_status filo_cpu_avgpool2d_backward(const filo_pool2d_desc *d);

filo_status filo_cuda_maxpool2d_forward(const filo_pool2d_desc *d, void *stream);
filo_status filo_cuda_maxpool2d_backward(const filo_pool2d_desc *d, void *stream);
filo_status filo_cuda_avgpool2d_forward(const filo_pool2d_desc *d, void *stream);
filo_status filo_cuda_avgpool2d_backward(const filo_pool2d_desc *d, void *stream);

#ifdef __cplusplus
}
#endif
#endif
