/* Internal: what the vector loops of the CPU kernels share. The loops are written on 64-byte GNU
 * vectors because GCC's -O2 cost model does not vectorize loops of runtime length; the functions
 * that run them are built for AVX-512, AVX2 and the x86-64 baseline (GCC's function
 * multiversioning, picked when the library loads), and a 64-byte vector is one, two or four
 * instructions there. Every lane runs the same operations in the same order in every build (ISO
 * C: no FMA contraction), so the bits do not depend on the CPU. */
#ifndef FILO_KERNELS_CPU_SIMD_H
#define FILO_KERNELS_CPU_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FILO_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FILO_SIMD_CLONES
#endif
/* Helpers are inlined into each build of their caller. */
#if defined(__GNUC__)
#define FILO_SIMD_INLINE static inline __attribute__((always_inline))
#else
#define FILO_SIMD_INLINE static inline
#endif

/* Reduced alignment: rows are addressed at any element. */
typedef float filo_v16f __attribute__((vector_size(64), aligned(4)));
typedef double filo_v8d __attribute__((vector_size(64), aligned(8)));
typedef int filo_v16i __attribute__((vector_size(64), aligned(4)));
#define FILO_V16F_LANES 16
#define FILO_V8D_LANES 8


/* x = sqrtf(x) on every lane (correctly rounded, as the scalar sqrtf). Four SSE square roots,
 * which every x86-64 has: GCC vectorizes no sqrtf while it must set errno, and the loops that need
 * one are bound by memory, not by these. (Vectors go by pointer: a 64-byte vector argument has no
 * ABI that all the builds share.) */
FILO_SIMD_INLINE void filo_v16f_sqrt(filo_v16f *x)
{
#if defined(__x86_64__)
    for (int i = 0; i < 4; i++) {
        __m128 q;
        memcpy(&q, (const float *)x + 4 * i, sizeof q);
        q = _mm_sqrt_ps(q);
        memcpy((float *)x + 4 * i, &q, sizeof q);
    }
#else
    for (int i = 0; i < FILO_V16F_LANES; i++)
        (*x)[i] = __builtin_sqrtf((*x)[i]);
#endif
}

/* Zeroes n bytes with non-temporal stores (16-byte SSE2 ones, which every x86-64 has): for
 * outputs much larger than the caches, where a cached store first reads in every line it writes.
 * Call filo_simd_stream_fence() before another thread may read the bytes. */
static inline void filo_simd_zero_stream(void *dst, size_t n)
{
#if defined(__x86_64__)
    char *p = dst;
    size_t head = (16 - ((uintptr_t)p & 15)) & 15;
    head = head < n ? head : n;
    memset(p, 0, head);
    p += head;
    n -= head;
    __m128i z = _mm_setzero_si128();
    for (; n >= 16; n -= 16, p += 16)
        _mm_stream_si128((__m128i *)p, z);
    memset(p, 0, n);
#else
    memset(dst, 0, n);
#endif
}

static inline void filo_simd_stream_fence(void)
{
#if defined(__x86_64__)
    _mm_sfence();
#endif
}

#endif
