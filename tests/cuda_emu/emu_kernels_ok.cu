/* Correct kernels that exercise the CUDA emulator: shared memory + shuffles, warp votes,
 * atomics across blocks, opt-in dynamic shared memory, bf16/fp16, barriers. The same file
 * builds with nvcc (sm_90), so it also checks that compat.cuh keeps one source for both. */
#include "compat.cuh"
#include "emu_test_kernels.h"

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_down_sync(FULL_MASK, v, offset);
    return v;
}

/* Sum of a block's values, valid in every thread; blockDim.x a multiple of 32. */
__device__ float block_sum(float v)
{
    __shared__ float partial[32];
    __shared__ float total;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_sum(v);
    if (lane == 0)
        partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float p = lane < (int)(blockDim.x / 32) ? partial[lane] : 0.0f;
        for (int m = 16; m > 0; m >>= 1)
            p += __shfl_xor_sync(FULL_MASK, p, m);
        if (lane == 0)
            total = p;
    }
    __syncthreads();
    return total;
}

__global__ void emu_row_sum_kernel(const float *__restrict__ x, float *__restrict__ out, int cols)
{
    const float *row = x + (size_t)blockIdx.x * cols;
    float acc = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x)
        acc += row[i];
    float s = block_sum(acc);
    if (threadIdx.x == 0)
        out[blockIdx.x] = s;
}

extern "C" cudaError_t emu_block_sum(const float *x, float *out, int rows, int cols, int threads, cudaStream_t stream)
{
    FILO_LAUNCH(emu_row_sum_kernel, rows, threads, 0, stream)(x, out, cols);
    return cudaGetLastError();
}

__global__ void emu_warp_ops_kernel(int *out)
{
    int lane = threadIdx.x % 32;
    int *o = out + threadIdx.x * 12;
    o[11] = __activemask() == FULL_MASK;
    o[0] = __shfl_sync(FULL_MASK, lane * 10, (lane + 3) & 31);
    o[1] = __shfl_up_sync(FULL_MASK, lane, 2, 8);
    o[2] = __shfl_down_sync(FULL_MASK, lane, 3, 16);
    o[3] = __shfl_xor_sync(FULL_MASK, lane, 5);
    o[4] = (int)__ballot_sync(FULL_MASK, lane & 1);
    o[5] = __any_sync(FULL_MASK, lane == 7);
    o[6] = __all_sync(FULL_MASK, lane < 31);
    if (lane < 16)
        o[7] = __shfl_sync(0x0000ffffu, lane, 15 - lane);
    else
        o[7] = (int)__ballot_sync(0xffff0000u, lane > 20);
    o[8] = __shfl_sync(FULL_MASK, lane, 1, 8);
    o[9] = __reduce_add_sync(FULL_MASK, (unsigned)lane);
    double d = __shfl_xor_sync(FULL_MASK, (double)lane + 0.5, 1);
    o[10] = (int)(d * 2.0);
}

extern "C" cudaError_t emu_warp_ops(int *out, int threads, cudaStream_t stream)
{
    FILO_LAUNCH(emu_warp_ops_kernel, 1, threads, 0, stream)(out);
    return cudaGetLastError();
}

__global__ void emu_atomics_kernel(const int *values, int n, int *c, float *fsum, double *dsum,
                                   unsigned long long *usum)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    int v = values[i];
    atomicAdd(&c[0], 1);
    atomicAdd(&c[1 + v % 4], 1);
    atomicMax(&c[5], v);
    atomicMin(&c[6], v);
    int old = c[7], assumed;
    while ((assumed = atomicCAS(&c[7], old, old + 1)) != old)
        old = assumed;
    atomicExch(&c[8], 42);
    atomicMax((unsigned *)&c[9], (unsigned)v);
    atomicAdd(fsum, 1.0f);
    atomicAdd(dsum, (double)v);
    atomicAdd(usum, (unsigned long long)v);
}

extern "C" cudaError_t emu_atomics(const int *values, int n, int *counters, float *fsum, double *dsum,
                                   unsigned long long *usum, cudaStream_t stream)
{
    FILO_LAUNCH(emu_atomics_kernel, (n + 127) / 128, 128, 0, stream)(values, n, counters, fsum, dsum, usum);
    return cudaGetLastError();
}

__global__ void emu_reverse_dynamic_kernel(const float *x, float *y, int n)
{
    FILO_DYNAMIC_SHARED(float, s);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        s[i] = x[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        y[i] = s[n - 1 - i];
}

extern "C" cudaError_t emu_reverse_dynamic(const float *x, float *y, int n, int optin, cudaStream_t stream)
{
    size_t smem = (size_t)n * sizeof(float);
    if (optin) {
        cudaError_t e = cudaFuncSetAttribute(emu_reverse_dynamic_kernel,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess)
            return e;
    }
    FILO_LAUNCH(emu_reverse_dynamic_kernel, 1, 1024, smem, stream)(x, y, n);
    return cudaGetLastError();
}

__global__ void emu_convert_half_kernel(const float *x, float *via_bf16, float *via_f16, float *extra, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    __nv_bfloat16 b = __float2bfloat16(x[i]);
    __half h = __float2half(x[i]);
    via_bf16[i] = __bfloat162float(b);
    via_f16[i] = __half2float(h);
    __nv_bfloat16 two = __float2bfloat16(2.0f);
    extra[4 * i + 0] = __bfloat162float(__hfma(b, two, two));
    extra[4 * i + 1] = __half2float(hsqrt(__habs(h)));
    extra[4 * i + 2] = (float)__bfloat162int_rn(b);
    __nv_bfloat162 pair = __floats2bfloat162_rn(x[i], -x[i]);
    extra[4 * i + 3] = __high2float(__hmul2(pair, pair));
}

extern "C" cudaError_t emu_convert_half(const float *x, float *via_bf16, float *via_f16, float *extra, int n,
                                        cudaStream_t stream)
{
    FILO_LAUNCH(emu_convert_half_kernel, (n + 63) / 64, 64, 0, stream)(x, via_bf16, via_f16, extra, n);
    return cudaGetLastError();
}

/* LayerNorm over rows: one block (BLOCK threads) a row; the speed benchmark of the docs. */
template <int BLOCK>
__global__ void __launch_bounds__(BLOCK) emu_layernorm_kernel(const float *__restrict__ x, const float *gamma,
                                                              const float *beta, float *y, int cols)
{
    const float *row = x + (size_t)blockIdx.x * cols;
    float *out = y + (size_t)blockIdx.x * cols;
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += BLOCK)
        s += row[i];
    float mean = block_sum(s) / cols;
    float v = 0.0f;
    for (int i = threadIdx.x; i < cols; i += BLOCK) {
        float d = row[i] - mean;
        v += d * d;
    }
    float rstd = rsqrtf(block_sum(v) / cols + 1e-5f);
    for (int i = threadIdx.x; i < cols; i += BLOCK)
        out[i] = (row[i] - mean) * rstd * gamma[i] + beta[i];
}

extern "C" cudaError_t emu_layernorm(const float *x, const float *gamma, const float *beta, float *y, int rows,
                                     int cols, cudaStream_t stream)
{
    FILO_LAUNCH((emu_layernorm_kernel<256>), rows, 256, 0, stream)(x, gamma, beta, y, cols);
    return cudaGetLastError();
}

__global__ void emu_barrier_heavy_kernel(float *data, int rounds)
{
    __shared__ float s[1024];
    float *d = data + (size_t)blockIdx.x * blockDim.x;
    int t = threadIdx.x, n = blockDim.x;
    for (int r = 0; r < rounds; r++) {
        s[t] = d[t];
        __syncthreads();
        d[t] = s[(t + 1) % n] + 1.0f;
        __syncthreads();
    }
}

extern "C" cudaError_t emu_barrier_heavy(float *data, int blocks, int threads, int rounds, cudaStream_t stream)
{
    FILO_LAUNCH(emu_barrier_heavy_kernel, blocks, threads, 0, stream)(data, rounds);
    return cudaGetLastError();
}

__global__ void emu_sync_votes_kernel(int *out)
{
    int t = threadIdx.x;
    int count = __syncthreads_count(t % 3 == 0);
    int all = __syncthreads_and(t < (int)blockDim.x);
    int any = __syncthreads_or(t == 5);
    int none = __syncthreads_or(0);
    /* a block-level spin-wait is fine when it sleeps: __nanosleep lets the other threads run */
    __shared__ int arrived;
    if (t == 0)
        arrived = 0;
    __syncthreads();
    atomicAdd(&arrived, 1);
    while (atomicAdd(&arrived, 0) < (int)blockDim.x)
        __nanosleep(100);
    if (t == 0) {
        out[0] = count;
        out[1] = all;
        out[2] = any;
        out[3] = none;
        out[4] = arrived;
    }
}

extern "C" cudaError_t emu_sync_votes(int *out, int threads, cudaStream_t stream)
{
    FILO_LAUNCH(emu_sync_votes_kernel, 1, threads, 0, stream)(out);
    return cudaGetLastError();
}

__global__ void emu_indices_kernel(unsigned *out)
{
    unsigned per_block = blockDim.x * blockDim.y * blockDim.z;
    unsigned block = blockIdx.y * gridDim.x + blockIdx.x;
    unsigned t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    out[block * per_block + t] = blockIdx.x | blockIdx.y << 8 | threadIdx.x << 16 | threadIdx.y << 20 |
                                 threadIdx.z << 24;
}

extern "C" cudaError_t emu_indices(unsigned *out, int gx, int gy, int bx, int by, int bz, cudaStream_t stream)
{
    FILO_LAUNCH(emu_indices_kernel, dim3(gx, gy), dim3(bx, by, bz), 0, stream)(out);
    return cudaGetLastError();
}

__global__ void emu_fill_kernel(float *x, int n, float v)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = v;
}

extern "C" cudaError_t emu_fill(float *x, int n, float v, int threads, size_t smem, cudaStream_t stream)
{
    FILO_LAUNCH(emu_fill_kernel, (n + threads - 1) / threads, threads, smem, stream)(x, n, v);
    return cudaGetLastError();
}
