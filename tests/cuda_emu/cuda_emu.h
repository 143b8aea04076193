/* filo CUDA emulator, kernel side: lets g++ (C++17) compile filo's .cu kernels unchanged.
 *
 * Included through kernels/cuda/compat.cuh when FILO_CUDA_EMULATION is defined. It pulls in the
 * real CUDA headers (types, dim3, bf16/fp16), then redefines the execution-space keywords and
 * adds the device built-ins: threadIdx & co. (per fiber), __syncthreads (a real barrier over the
 * block's fibers), warp shuffles and votes (PTX lane semantics, mask checks), atomics, math
 * intrinsics and the half/bfloat16 functions that the CUDA headers declare only for the device.
 * The runtime behind it is cuda_emu.cpp; docs/cuda-emulation.md explains the design. */
#ifndef FILO_CUDA_EMU_H
#define FILO_CUDA_EMU_H

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "cuda_emu.h needs C++17: the emulated build compiles .cu files as C++17"
#endif

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "filo_emu.h"

/* nvcc's loop pragmas (#pragma unroll) mean nothing to g++. GCC before 13 ignores this for
 * unknown pragmas, so filo_cuda_emu also passes -Wno-unknown-pragmas to its users. */
#pragma GCC diagnostic ignored "-Wunknown-pragmas"

/* Execution-space keywords: after the CUDA headers, which define some of them for the host
 * (__shared__ as nothing, no __launch_bounds__). Static __shared__ arrays become thread_local:
 * block-scope thread_local implies static, one copy per worker thread = per block in flight. */
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __constant__
#undef __managed__
#undef __launch_bounds__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __shared__ thread_local
#define __launch_bounds__(...)
#define __grid_constant__
#ifndef __forceinline__
#define __forceinline__ inline __attribute__((always_inline))
#endif

namespace filo_emu {

/* The part of a fiber (= one CUDA thread) that kernel code reads. */
struct ThreadState {
    uint3 tid;
};

/* Per worker thread, set by the scheduler before it resumes a fiber. Plain old data so that it
 * can be a __thread variable with the cheap initial-exec TLS model. */
struct Tls {
    ThreadState *thread;
    uint3 block_idx;
    uint3 block_dim;
    uint3 grid_dim;
    unsigned char *dyn_smem;
};
extern __thread Tls tls __attribute__((tls_model("initial-exec")));

enum WarpOp {
    WARP_SHFL_IDX,
    WARP_SHFL_UP,
    WARP_SHFL_DOWN,
    WARP_SHFL_XOR,
    WARP_BALLOT,
    WARP_ANY,
    WARP_ALL,
    WARP_SYNC,
    WARP_REDUCE_ADD_U,
    WARP_REDUCE_MIN_U,
    WARP_REDUCE_MAX_U,
    WARP_REDUCE_ADD_I,
    WARP_REDUCE_MIN_I,
    WARP_REDUCE_MAX_I,
    WARP_REDUCE_AND,
    WARP_REDUCE_OR,
    WARP_REDUCE_XOR,
};

enum BarrierKind { BARRIER_PLAIN, BARRIER_COUNT, BARRIER_AND, BARRIER_OR };

/* Block-wide barrier; returns the reduction of pred for the _count/_and/_or variants. */
int block_barrier(int kind, int pred, const char *file, int line);
/* Warp collective over the lanes in mask; b is srcLane/delta/laneMask, width the segment. */
unsigned long long warp_collective(int op, unsigned mask, unsigned long long value, int b,
                                   int width, const char *file, int line);
unsigned warp_active_mask();
/* Lets the other fibers of the block run (used by __nanosleep, so spin-waits that sleep work). */
void yield_thread();

using InvokeFn = void (*)(void *ctx);
void launch(const char *name, const void *fn_id, dim3 grid, dim3 block, size_t smem,
            cudaStream_t stream, InvokeFn invoke, void *ctx, const char *file, int line);
/* Stream capture: whether work enqueued on stream is being recorded into a graph, and the
 * recording of a launch, which keeps its own copy of the arguments for every replay. */
bool capturing(cudaStream_t stream);
void capture_launch(const char *name, const void *fn_id, dim3 grid, dim3 block, size_t smem,
                    cudaStream_t stream, InvokeFn invoke, std::shared_ptr<void> ctx, const char *file,
                    int line);

template <class... P>
struct Launcher {
    void (*fn)(P...);
    const char *name;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    const char *file;
    int line;

    template <class... A>
    void operator()(A &&...args) const
    {
        static_assert(sizeof...(A) == sizeof...(P), "wrong number of kernel arguments");
        using Args = std::tuple<std::decay_t<P>...>;
        struct Ctx {
            void (*fn)(P...);
            Args args;
        };
        /* Arguments are copied once at launch, as CUDA does, then passed by value to each thread. */
        InvokeFn invoke = [](void *p) {
            Ctx *c = static_cast<Ctx *>(p);
            std::apply(c->fn, c->args);
        };
        if (capturing(stream)) {
            std::shared_ptr<void> held = std::make_shared<Ctx>(Ctx{fn, Args(std::forward<A>(args)...)});
            capture_launch(name, reinterpret_cast<const void *>(fn), grid, block, smem, stream, invoke,
                           held, file, line);
            return;
        }
        Ctx ctx{fn, Args(std::forward<A>(args)...)};
        launch(name, reinterpret_cast<const void *>(fn), grid, block, smem, stream, invoke, &ctx, file,
               line);
    }
};

template <class... P>
Launcher<P...> make_launcher(void (*fn)(P...), const char *name, dim3 grid, dim3 block,
                             size_t smem, cudaStream_t stream, const char *file, int line)
{
    return Launcher<P...>{fn, name, grid, block, smem, stream, file, line};
}

template <class T>
inline unsigned long long to_bits(T v)
{
    static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                  "warp shuffles move values of at most 8 bytes");
    unsigned long long u = 0;
    std::memcpy(&u, static_cast<const void *>(&v), sizeof(T));
    return u;
}

template <class T>
inline T from_bits(unsigned long long u)
{
    T v;
    std::memcpy(static_cast<void *>(&v), &u, sizeof(T));
    return v;
}

template <class T, class F>
inline T atomic_cas_loop(T *addr, F f)
{
    static_assert(sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8, "atomic size");
    using U = std::conditional_t<sizeof(T) == 2, unsigned short,
                                 std::conditional_t<sizeof(T) == 4, unsigned int, unsigned long long>>;
    U *a = reinterpret_cast<U *>(addr);
    U old = __atomic_load_n(a, __ATOMIC_RELAXED);
    for (;;) {
        T oldv, newv;
        std::memcpy(static_cast<void *>(&oldv), &old, sizeof(T));
        newv = f(oldv);
        U nw;
        std::memcpy(&nw, static_cast<const void *>(&newv), sizeof(T));
        if (__atomic_compare_exchange_n(a, &old, nw, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            return oldv;
    }
}

} /* namespace filo_emu */

#define FILO_EMU_HERE const char *filo_emu_file_ = __builtin_FILE(), int filo_emu_line_ = __builtin_LINE()

/* ---- built-in variables ---- */
#define threadIdx (::filo_emu::tls.thread->tid)
#define blockIdx (::filo_emu::tls.block_idx)
#define blockDim (::filo_emu::tls.block_dim)
#define gridDim (::filo_emu::tls.grid_dim)
#define warpSize 32

/* ---- barriers ---- */
inline void __syncthreads(FILO_EMU_HERE)
{
    ::filo_emu::block_barrier(::filo_emu::BARRIER_PLAIN, 0, filo_emu_file_, filo_emu_line_);
}
inline int __syncthreads_count(int pred, FILO_EMU_HERE)
{
    return ::filo_emu::block_barrier(::filo_emu::BARRIER_COUNT, pred != 0, filo_emu_file_, filo_emu_line_);
}
inline int __syncthreads_and(int pred, FILO_EMU_HERE)
{
    return ::filo_emu::block_barrier(::filo_emu::BARRIER_AND, pred != 0, filo_emu_file_, filo_emu_line_);
}
inline int __syncthreads_or(int pred, FILO_EMU_HERE)
{
    return ::filo_emu::block_barrier(::filo_emu::BARRIER_OR, pred != 0, filo_emu_file_, filo_emu_line_);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, FILO_EMU_HERE)
{
    ::filo_emu::warp_collective(::filo_emu::WARP_SYNC, mask, 0, 0, 32, filo_emu_file_, filo_emu_line_);
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) { ::filo_emu::yield_thread(); }

/* ---- warp shuffles and votes ---- */
template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32, FILO_EMU_HERE)
{
    return ::filo_emu::from_bits<T>(::filo_emu::warp_collective(
        ::filo_emu::WARP_SHFL_IDX, mask, ::filo_emu::to_bits(var), src_lane, width, filo_emu_file_, filo_emu_line_));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, FILO_EMU_HERE)
{
    return ::filo_emu::from_bits<T>(::filo_emu::warp_collective(
        ::filo_emu::WARP_SHFL_UP, mask, ::filo_emu::to_bits(var), (int)delta, width, filo_emu_file_, filo_emu_line_));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, FILO_EMU_HERE)
{
    return ::filo_emu::from_bits<T>(::filo_emu::warp_collective(
        ::filo_emu::WARP_SHFL_DOWN, mask, ::filo_emu::to_bits(var), (int)delta, width, filo_emu_file_, filo_emu_line_));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32, FILO_EMU_HERE)
{
    return ::filo_emu::from_bits<T>(::filo_emu::warp_collective(
        ::filo_emu::WARP_SHFL_XOR, mask, ::filo_emu::to_bits(var), lane_mask, width, filo_emu_file_, filo_emu_line_));
}
inline unsigned __ballot_sync(unsigned mask, int pred, FILO_EMU_HERE)
{
    return (unsigned)::filo_emu::warp_collective(::filo_emu::WARP_BALLOT, mask, pred != 0, 0, 32, filo_emu_file_, filo_emu_line_);
}
inline int __any_sync(unsigned mask, int pred, FILO_EMU_HERE)
{
    return (int)::filo_emu::warp_collective(::filo_emu::WARP_ANY, mask, pred != 0, 0, 32, filo_emu_file_, filo_emu_line_);
}
inline int __all_sync(unsigned mask, int pred, FILO_EMU_HERE)
{
    return (int)::filo_emu::warp_collective(::filo_emu::WARP_ALL, mask, pred != 0, 0, 32, filo_emu_file_, filo_emu_line_);
}
inline unsigned __activemask() { return ::filo_emu::warp_active_mask(); }
#define FILO_EMU_WARP_REDUCE(name, type, op)                                                     \
    inline type name(unsigned mask, type value, FILO_EMU_HERE)                                    \
    {                                                                                             \
        return (type)::filo_emu::warp_collective(::filo_emu::op, mask, (unsigned)value, 0, 32,    \
                                                 filo_emu_file_, filo_emu_line_);                 \
    }
FILO_EMU_WARP_REDUCE(__reduce_add_sync, unsigned, WARP_REDUCE_ADD_U)
FILO_EMU_WARP_REDUCE(__reduce_min_sync, unsigned, WARP_REDUCE_MIN_U)
FILO_EMU_WARP_REDUCE(__reduce_max_sync, unsigned, WARP_REDUCE_MAX_U)
FILO_EMU_WARP_REDUCE(__reduce_add_sync, int, WARP_REDUCE_ADD_I)
FILO_EMU_WARP_REDUCE(__reduce_min_sync, int, WARP_REDUCE_MIN_I)
FILO_EMU_WARP_REDUCE(__reduce_max_sync, int, WARP_REDUCE_MAX_I)
FILO_EMU_WARP_REDUCE(__reduce_and_sync, unsigned, WARP_REDUCE_AND)
FILO_EMU_WARP_REDUCE(__reduce_or_sync, unsigned, WARP_REDUCE_OR)
FILO_EMU_WARP_REDUCE(__reduce_xor_sync, unsigned, WARP_REDUCE_XOR)
#undef FILO_EMU_WARP_REDUCE

/* ---- atomics: truly atomic across worker threads (blocks run in parallel) ---- */
#define FILO_EMU_INT_ATOMICS(T)                                                                       \
    inline T atomicAdd(T *a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); }              \
    inline T atomicSub(T *a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); }              \
    inline T atomicAnd(T *a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); }              \
    inline T atomicOr(T *a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); }                \
    inline T atomicXor(T *a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); }              \
    inline T atomicExch(T *a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); }            \
    inline T atomicMax(T *a, T v) { return ::filo_emu::atomic_cas_loop(a, [v](T o) { return o < v ? v : o; }); } \
    inline T atomicMin(T *a, T v) { return ::filo_emu::atomic_cas_loop(a, [v](T o) { return v < o ? v : o; }); } \
    inline T atomicCAS(T *a, T cmp, T v)                                                               \
    {                                                                                                  \
        __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);            \
        return cmp;                                                                                    \
    }
FILO_EMU_INT_ATOMICS(int)
FILO_EMU_INT_ATOMICS(unsigned int)
FILO_EMU_INT_ATOMICS(long long)
FILO_EMU_INT_ATOMICS(unsigned long long)
#undef FILO_EMU_INT_ATOMICS
inline unsigned short atomicCAS(unsigned short *a, unsigned short cmp, unsigned short v)
{
    __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return cmp;
}
inline unsigned atomicInc(unsigned *a, unsigned limit)
{
    return ::filo_emu::atomic_cas_loop(a, [limit](unsigned o) { return o >= limit ? 0u : o + 1; });
}
inline unsigned atomicDec(unsigned *a, unsigned limit)
{
    return ::filo_emu::atomic_cas_loop(a, [limit](unsigned o) { return (o == 0 || o > limit) ? limit : o - 1; });
}
inline float atomicAdd(float *a, float v) { return ::filo_emu::atomic_cas_loop(a, [v](float o) { return o + v; }); }
inline double atomicAdd(double *a, double v) { return ::filo_emu::atomic_cas_loop(a, [v](double o) { return o + v; }); }
inline float atomicExch(float *a, float v) { return ::filo_emu::atomic_cas_loop(a, [v](float) { return v; }); }
inline __half atomicAdd(__half *a, __half v)
{
    return ::filo_emu::atomic_cas_loop(a, [v](__half o) { return __float2half(__half2float(o) + __half2float(v)); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16 *a, __nv_bfloat16 v)
{
    return ::filo_emu::atomic_cas_loop(a, [v](__nv_bfloat16 o) {
        return __float2bfloat16(__bfloat162float(o) + __bfloat162float(v));
    });
}
inline __half2 atomicAdd(__half2 *a, __half2 v)
{
    return ::filo_emu::atomic_cas_loop(a, [v](__half2 o) {
        return __floats2half2_rn(__low2float(o) + __low2float(v), __high2float(o) + __high2float(v));
    });
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162 *a, __nv_bfloat162 v)
{
    return ::filo_emu::atomic_cas_loop(a, [v](__nv_bfloat162 o) {
        return __floats2bfloat162_rn(__low2float(o) + __low2float(v), __high2float(o) + __high2float(v));
    });
}

/* ---- math intrinsics (host libm; the GPU's fast versions are less accurate: compare with
 * tolerances) ---- */
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float *s, float *c) { sincosf(x, s, c); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline unsigned __float2uint_rz(float x) { return (unsigned)x; }
inline long long __float2ll_rn(float x) { return (long long)nearbyintf(x); }
inline int __double2int_rn(double x) { return (int)nearbyint(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline float __ll2float_rn(long long x) { return (float)x; }
inline float __double2float_rn(double x) { return (float)x; }
inline float __int_as_float(int x) { return ::filo_emu::from_bits<float>((unsigned)x); }
inline float __uint_as_float(unsigned x) { return ::filo_emu::from_bits<float>(x); }
inline int __float_as_int(float x) { return (int)(unsigned)::filo_emu::to_bits(x); }
inline unsigned __float_as_uint(float x) { return (unsigned)::filo_emu::to_bits(x); }
inline double __longlong_as_double(long long x) { return ::filo_emu::from_bits<double>((unsigned long long)x); }
inline long long __double_as_longlong(double x) { return (long long)::filo_emu::to_bits(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x)
{
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    return __builtin_bswap32(x);
}
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b)
{
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}

/* CUDA's global min/max overloads. */
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
template <class A, class B, class = std::enable_if_t<std::is_integral<A>::value && std::is_integral<B>::value>>
inline std::common_type_t<A, B> min(A a, B b)
{
    using C = std::common_type_t<A, B>;
    return (C)b < (C)a ? (C)b : (C)a;
}
template <class A, class B, class = std::enable_if_t<std::is_integral<A>::value && std::is_integral<B>::value>>
inline std::common_type_t<A, B> max(A a, B b)
{
    using C = std::common_type_t<A, B>;
    return (C)a < (C)b ? (C)b : (C)a;
}

/* ---- cached/streaming loads and stores ---- */
template <class T> inline T __ldg(const T *p) { return *p; }
template <class T> inline T __ldca(const T *p) { return *p; }
template <class T> inline T __ldcg(const T *p) { return *p; }
template <class T> inline T __ldcs(const T *p) { return *p; }
template <class T> inline T __ldcv(const T *p) { return *p; }
template <class T> inline T __ldlu(const T *p) { return *p; }
template <class T> inline void __stcg(T *p, T v) { *p = v; }
template <class T> inline void __stcs(T *p, T v) { *p = v; }
template <class T> inline void __stwb(T *p, T v) { *p = v; }
template <class T> inline void __stwt(T *p, T v) { *p = v; }

/* ---- half / bfloat16 functions the CUDA headers declare only for the device: float-based ---- */
/* h2<name> is spelled with the leading 'h' of name dropped: h2exp, h2sqrt, ... */
#define FILO_EMU_HALF_FN(suffix, expr) FILO_EMU_HALF_UNARY_NAMED(h##suffix, h2##suffix, expr)
#define FILO_EMU_HALF_UNARY_NAMED(name, name2, expr)                                              \
    inline __half name(const __half a)                                                            \
    {                                                                                             \
        float x = __half2float(a);                                                                \
        return __float2half(expr);                                                                \
    }                                                                                             \
    inline __nv_bfloat16 name(const __nv_bfloat16 a)                                              \
    {                                                                                             \
        float x = __bfloat162float(a);                                                            \
        return __float2bfloat16(expr);                                                            \
    }                                                                                             \
    inline __half2 name2(const __half2 a)                                                         \
    {                                                                                             \
        float x = __low2float(a);                                                                 \
        float lo = (expr);                                                                        \
        x = __high2float(a);                                                                      \
        return __floats2half2_rn(lo, (expr));                                                     \
    }                                                                                             \
    inline __nv_bfloat162 name2(const __nv_bfloat162 a)                                           \
    {                                                                                             \
        float x = __low2float(a);                                                                 \
        float lo = (expr);                                                                        \
        x = __high2float(a);                                                                      \
        return __floats2bfloat162_rn(lo, (expr));                                                 \
    }
FILO_EMU_HALF_FN(exp, expf(x))
FILO_EMU_HALF_FN(exp2, exp2f(x))
FILO_EMU_HALF_FN(exp10, exp10f(x))
FILO_EMU_HALF_FN(log, logf(x))
FILO_EMU_HALF_FN(log2, log2f(x))
FILO_EMU_HALF_FN(log10, log10f(x))
FILO_EMU_HALF_FN(sqrt, sqrtf(x))
FILO_EMU_HALF_FN(rsqrt, 1.0f / sqrtf(x))
FILO_EMU_HALF_FN(rcp, 1.0f / x)
FILO_EMU_HALF_FN(sin, sinf(x))
FILO_EMU_HALF_FN(cos, cosf(x))
FILO_EMU_HALF_FN(tanh, tanhf(x))
FILO_EMU_HALF_FN(tanh_approx, tanhf(x))
FILO_EMU_HALF_FN(ceil, ceilf(x))
FILO_EMU_HALF_FN(floor, floorf(x))
FILO_EMU_HALF_FN(trunc, truncf(x))
FILO_EMU_HALF_FN(rint, nearbyintf(x))
#undef FILO_EMU_HALF_FN
#undef FILO_EMU_HALF_UNARY_NAMED

#define FILO_EMU_HALF_FMA(name, post)                                                             \
    inline __half name(const __half a, const __half b, const __half c)                            \
    {                                                                                             \
        float x = fmaf(__half2float(a), __half2float(b), __half2float(c));                        \
        return __float2half(post);                                                                \
    }                                                                                             \
    inline __nv_bfloat16 name(const __nv_bfloat16 a, const __nv_bfloat16 b, const __nv_bfloat16 c) \
    {                                                                                             \
        float x = fmaf(__bfloat162float(a), __bfloat162float(b), __bfloat162float(c));            \
        return __float2bfloat16(post);                                                            \
    }                                                                                             \
    inline __half2 name##2(const __half2 a, const __half2 b, const __half2 c)                     \
    {                                                                                             \
        float x = fmaf(__low2float(a), __low2float(b), __low2float(c));                           \
        float lo = (post);                                                                        \
        x = fmaf(__high2float(a), __high2float(b), __high2float(c));                              \
        return __floats2half2_rn(lo, (post));                                                     \
    }                                                                                             \
    inline __nv_bfloat162 name##2(const __nv_bfloat162 a, const __nv_bfloat162 b, const __nv_bfloat162 c) \
    {                                                                                             \
        float x = fmaf(__low2float(a), __low2float(b), __low2float(c));                           \
        float lo = (post);                                                                        \
        x = fmaf(__high2float(a), __high2float(b), __high2float(c));                              \
        return __floats2bfloat162_rn(lo, (post));                                                 \
    }
FILO_EMU_HALF_FMA(__hfma, x)
FILO_EMU_HALF_FMA(__hfma_relu, (x != x ? x : (x < 0.0f ? 0.0f : x)))
FILO_EMU_HALF_FMA(__hfma_sat, __saturatef(x))
#undef FILO_EMU_HALF_FMA
/* __hfma2_relu / __hfma2_sat are spelled with the 2 in the middle. */
inline __half2 __hfma2_relu(const __half2 a, const __half2 b, const __half2 c) { return __hfma_relu2(a, b, c); }
inline __nv_bfloat162 __hfma2_relu(const __nv_bfloat162 a, const __nv_bfloat162 b, const __nv_bfloat162 c) { return __hfma_relu2(a, b, c); }
inline __half2 __hfma2_sat(const __half2 a, const __half2 b, const __half2 c) { return __hfma_sat2(a, b, c); }
inline __nv_bfloat162 __hfma2_sat(const __nv_bfloat162 a, const __nv_bfloat162 b, const __nv_bfloat162 c) { return __hfma_sat2(a, b, c); }

#define FILO_EMU_HALF_TO_INT(type, tname, fname)                                                   \
    inline type __half2##tname##_rn(const __half h) { return (type)nearbyintf(__half2float(h)); }   \
    inline type __half2##tname##_rd(const __half h) { return (type)floorf(__half2float(h)); }       \
    inline type __half2##tname##_ru(const __half h) { return (type)ceilf(__half2float(h)); }        \
    inline type __bfloat162##tname##_rn(const __nv_bfloat16 h) { return (type)nearbyintf(__bfloat162float(h)); } \
    inline type __bfloat162##tname##_rd(const __nv_bfloat16 h) { return (type)floorf(__bfloat162float(h)); }     \
    inline type __bfloat162##tname##_ru(const __nv_bfloat16 h) { return (type)ceilf(__bfloat162float(h)); }      \
    inline __nv_bfloat16 __##fname##2bfloat16_rd(type v) { return __float2bfloat16_rd((float)v); } \
    inline __nv_bfloat16 __##fname##2bfloat16_ru(type v) { return __float2bfloat16_ru((float)v); } \
    inline __nv_bfloat16 __##fname##2bfloat16_rz(type v) { return __float2bfloat16_rz((float)v); }
FILO_EMU_HALF_TO_INT(int, int, int)
FILO_EMU_HALF_TO_INT(unsigned, uint, uint)
FILO_EMU_HALF_TO_INT(long long, ll, ll)
FILO_EMU_HALF_TO_INT(unsigned long long, ull, ull)
FILO_EMU_HALF_TO_INT(short, short, short)
FILO_EMU_HALF_TO_INT(unsigned short, ushort, ushort)
#undef FILO_EMU_HALF_TO_INT

/* The C++ overloads cuda_runtime.h gives only under nvcc: kernels passed by name. */
template <class... P>
inline cudaError_t cudaFuncSetAttribute(void (*fn)(P...), enum cudaFuncAttribute attr, int value)
{
    return ::cudaFuncSetAttribute(reinterpret_cast<const void *>(fn), attr, value);
}
template <class... P>
inline cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *attr, void (*fn)(P...))
{
    return ::cudaFuncGetAttributes(attr, reinterpret_cast<const void *>(fn));
}
template <class... P>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, void (*fn)(P...), int block, size_t smem)
{
    return ::cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, reinterpret_cast<const void *>(fn), block, smem);
}

/* Dynamic shared memory of the current block (size given at launch), 16-byte aligned. */
#define FILO_EMU_DYNAMIC_SHARED(type, name) type *name = reinterpret_cast<type *>(::filo_emu::tls.dyn_smem)

#endif
