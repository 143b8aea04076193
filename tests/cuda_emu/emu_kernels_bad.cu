/* Deliberately wrong kernels: each one plants a bug that the emulator must report (see
 * test_emu_negative.c). Kept in the test tree, never in the library. */
#include "compat.cuh"
#include "emu_test_kernels.h"

/* Threads past n return before the barrier that the others wait at. */
__global__ void emu_bad_early_exit_kernel(float *x, int n)
{
    __shared__ float s[64];
    int t = threadIdx.x;
    if (t >= n)
        return;
    s[t] = x[t];
    __syncthreads();
    x[t] = s[n - 1 - t];
}

extern "C" cudaError_t emu_bad_early_exit(float *x, int n, cudaStream_t stream)
{
    FILO_LAUNCH(emu_bad_early_exit_kernel, 1, 64, 0, stream)(x, n);
    return cudaGetLastError();
}

/* The two halves of the block wait at different __syncthreads. */
__global__ void emu_bad_divergent_barrier_kernel(float *x)
{
    if (threadIdx.x < 32) {
        x[threadIdx.x] += 1.0f;
        __syncthreads();
    } else {
        __syncthreads();
        x[threadIdx.x] -= 1.0f;
    }
}

extern "C" cudaError_t emu_bad_divergent_barrier(float *x, cudaStream_t stream)
{
    FILO_LAUNCH(emu_bad_divergent_barrier_kernel, 1, 64, 0, stream)(x);
    return cudaGetLastError();
}

extern "C" void emu_bad_divergent_barrier_unchecked(float *x, cudaStream_t stream)
{
    FILO_LAUNCH(emu_bad_divergent_barrier_kernel, 1, 64, 0, stream)(x);
}

/* Reads a neighbour's shared value without the __syncthreads between write and read. */
__global__ void emu_bad_missing_barrier_kernel(const float *x, float *y, int n)
{
    __shared__ float s[256];
    int t = threadIdx.x;
    s[t] = x[blockIdx.x * n + t];
    y[blockIdx.x * n + t] = s[(t + 1) % n];
}

extern "C" cudaError_t emu_bad_missing_barrier(const float *x, float *y, int n, cudaStream_t stream)
{
    FILO_LAUNCH(emu_bad_missing_barrier_kernel, 2, n, 0, stream)(x, y, n);
    return cudaGetLastError();
}

/* Writes one float past the dynamic shared memory it asked for. */
__global__ void emu_bad_shared_overflow_kernel(float *x, int n)
{
    FILO_DYNAMIC_SHARED(float, s);
    int t = threadIdx.x;
    s[t + 1] = x[t];
    __syncthreads();
    if (t + 1 < n)
        x[t] = s[t + 1];
}

extern "C" cudaError_t emu_bad_shared_overflow(float *x, int n, cudaStream_t stream)
{
    FILO_LAUNCH(emu_bad_shared_overflow_kernel, 1, n, n * sizeof(float), stream)(x, n);
    return cudaGetLastError();
}

/* A full-warp shuffle inside a branch that half of the warp does not take: those lanes are
 * waiting at the __syncthreads below instead. */
__global__ void emu_bad_shuffle_inactive_kernel(float *x)
{
    float v = x[threadIdx.x];
    if (threadIdx.x % 32 < 16)
        v = __shfl_sync(0xffffffffu, v, 0);
    __syncthreads();
    x[threadIdx.x] = v;
}

extern "C" cudaError_t emu_bad_shuffle_inactive_lane(float *x, cudaStream_t stream)
{
    FILO_LAUNCH(emu_bad_shuffle_inactive_kernel, 1, 32, 0, stream)(x);
    return cudaGetLastError();
}

/* A full-warp reduction after half of the warp has returned. */
__global__ void emu_bad_shuffle_exited_kernel(float *x)
{
    if (threadIdx.x >= 24)
        return;
    float v = x[threadIdx.x];
    for (int m = 16; m > 0; m >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, m);
    x[threadIdx.x] = v;
}

extern "C" cudaError_t emu_bad_shuffle_exited_lane(float *x, cudaStream_t stream)
{
    FILO_LAUNCH(emu_bad_shuffle_exited_kernel, 1, 32, 0, stream)(x);
    return cudaGetLastError();
}

/* Thread 0 waits for a flag that nobody sets: a hang on the GPU too. */
__global__ void emu_bad_spin_wait_kernel(int *flag)
{
    if (threadIdx.x == 0) {
        while (atomicAdd(flag, 0) == 0) {
        }
    }
}

extern "C" cudaError_t emu_bad_spin_wait(int *flag, cudaStream_t stream)
{
    FILO_LAUNCH(emu_bad_spin_wait_kernel, 1, 32, 0, stream)(flag);
    return cudaGetLastError();
}
