/* Block-wide reductions shared by the kernels. Each adds in a fixed order (a warp's shuffle tree,
 * then warp 0 over the warps' results), so a result does not depend on timing: kernels built on
 * them are bitwise reproducible. blockDim.x must be a multiple of 32, at most 1024. */
#ifndef FILO_KERNELS_CUDA_BLOCK_REDUCE_CUH
#define FILO_KERNELS_CUDA_BLOCK_REDUCE_CUH

#include "compat.cuh"

namespace {

/* Block sums of two values, returned to every thread, added in a fixed order. */
template <class A> __device__ void block_sum2(A &a, A &b)
{
    __shared__ A sa[33], sb[33];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    for (int off = 16; off > 0; off >>= 1) {
        a += __shfl_down_sync(0xffffffffu, a, off);
        b += __shfl_down_sync(0xffffffffu, b, off);
    }
    if (lane == 0) {
        sa[warp] = a;
        sb[warp] = b;
    }
    __syncthreads();
    if (warp == 0) {
        A x = lane < nwarps ? sa[lane] : A(0);
        A y = lane < nwarps ? sb[lane] : A(0);
        for (int off = 16; off > 0; off >>= 1) {
            x += __shfl_down_sync(0xffffffffu, x, off);
            y += __shfl_down_sync(0xffffffffu, y, off);
        }
        if (lane == 0) {
            sa[32] = x;
            sb[32] = y;
        }
    }
    __syncthreads();
    a = sa[32];
    b = sb[32];
}

} // namespace

#endif
