/* Internal: what the vector loops of the CPU kernels share (kernels/cpu/vec_math.h builds its
 * math on these types). The loops are written on 64-byte GNU vectors because GCC's -O2 cost
 * model does not vectorize loops of runtime length; the functions that run them are built for
 * x86-64-v4 (AVX-512 with DQ/BW/VL: vec_math.h's Philox needs DQ), AVX2 and the x86-64 baseline
 * (GCC's function multiversioning, picked when the library loads), and a 64-byte vector is one,
 * two or four instructions there. Every lane runs the same operations in the same order in every build (ISO
 * C: no FMA contraction), so the bits do not depend on the CPU. */
#ifndef FILO_KERNELS_CPU_SIMD_H
#define FILO_KERNELS_CPU_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "element.h"
#include "filo/dtype.h"
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FILO_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
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
typedef uint64_t filo_v8u64 __attribute__((vector_size(64)));
#define FILO_V16 16

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
    for (int i = 0; i < FILO_V16; i++)
        (*x)[i] = __builtin_sqrtf((*x)[i]);
#endif
}

/* ---- rows of f32 or bf16 as vectors of 8 doubles (t a constant where these are inlined) ---- */

typedef float filo_v8f __attribute__((vector_size(32), aligned(4)));
typedef uint16_t filo_v8h __attribute__((vector_size(16), aligned(2)));
typedef uint32_t filo_v8u __attribute__((vector_size(32)));

/* Columns [c, c + 8) of a row of dtype t. */
FILO_SIMD_INLINE void filo_simd_load8d(filo_v8d *out, const void *row, filo_dtype t, int64_t c)
{
    filo_v8f f;
    if (t == FILO_F32) {
        f = *(const filo_v8f *)((const float *)row + c);
    } else {
        filo_v8u u = __builtin_convertvector(*(const filo_v8h *)((const uint16_t *)row + c), filo_v8u) << 16;
        memcpy(&f, &u, sizeof f);
    }
    *out = __builtin_convertvector(f, filo_v8d);
}

/* f32 lanes rounded to bf16 as filo_el_f32_to_bf16 does. */
FILO_SIMD_INLINE void filo_simd_store8_bf16(uint16_t *dst, const filo_v8f *f)
{
    filo_v8u u;
    memcpy(&u, f, sizeof u);
    filo_v8u nan = (filo_v8u)((u & 0x7fffffffu) > 0x7f800000u);
    filo_v8u r = (((u >> 16) | 0x40u) & nan) | (((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) & ~nan);
    *(filo_v8h *)dst = __builtin_convertvector(r, filo_v8h);
}

/* Rounded once to t, as filo_el_store_f does. */
FILO_SIMD_INLINE void filo_simd_store8d(void *row, filo_dtype t, int64_t c, const filo_v8d *v)
{
    filo_v8f f = __builtin_convertvector(*v, filo_v8f);
    if (t == FILO_F32)
        *(filo_v8f *)((float *)row + c) = f;
    else
        filo_simd_store8_bf16((uint16_t *)row + c, &f);
}

FILO_SIMD_INLINE double filo_simd_load1d(const void *row, filo_dtype t, int64_t c)
{
    return t == FILO_F32 ? (double)((const float *)row)[c] : (double)filo_el_bf16_to_f32(((const uint16_t *)row)[c]);
}

FILO_SIMD_INLINE void filo_simd_store1d(void *row, filo_dtype t, int64_t c, double v)
{
    if (t == FILO_F32)
        ((float *)row)[c] = (float)v;
    else
        ((uint16_t *)row)[c] = filo_el_f32_to_bf16((float)v);
}

/* The 8 lanes' sum in a fixed tree. */
FILO_SIMD_INLINE double filo_simd_sum8d(const filo_v8d *a)
{
    return (((*a)[0] + (*a)[1]) + ((*a)[2] + (*a)[3])) + (((*a)[4] + (*a)[5]) + ((*a)[6] + (*a)[7]));
}

/* exp of 8 doubles, in place: k = round(x / ln 2) and r = x - k ln 2 (ln 2 in two parts, so that
 * k ln2_hi is exact), e^r by its Taylor series to r^13 (|r| <= 0.35: the truncation is below
 * 1e-17), then times 2^k as two powers of two built in the exponent bits, so that subnormal
 * results round once. At most 1 ulp from glibc's exp in 32 million random draws over
 * [-760, 700]; x above 709.8 gives inf, below -745.2 gives 0, NaN gives NaN. */
FILO_SIMD_INLINE void filo_simd_exp8d(filo_v8d *x)
{
    typedef int64_t v8l __attribute__((vector_size(64)));
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    filo_v8d v = *x;
    v8l lo = v < -746.0, hi = v > 710.0;
    v = (filo_v8d)(((v8l)v & ~lo) | ((v8l)((filo_v8d){0} - 746.0) & lo));
    v = (filo_v8d)(((v8l)v & ~hi) | ((v8l)((filo_v8d){0} + 710.0) & hi));
    filo_v8d t = v * 1.4426950408889634 + shifter;
    filo_v8d kd = t - shifter;
    v8l k = (v8l)t - (v8l)((filo_v8d){0} + shifter);
    filo_v8d r = (v - kd * 6.93147180369123816490e-01) - kd * 1.90821492927058770002e-10;
    filo_v8d p = (filo_v8d){0} + 1.0 / 6227020800.0;
    static const double inv_fact[13] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                        1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,     1.0 / 120.0,
                                        1.0 / 24.0,        1.0 / 6.0,        0.5,             1.0,
                                        1.0};
    for (int i = 0; i < 13; i++)
        p = p * r + inv_fact[i];
    v8l k1 = k >> 1, k2 = k - k1;
    filo_v8d s1 = (filo_v8d)((k1 + 1023) << 52), s2 = (filo_v8d)((k2 + 1023) << 52);
    *x = p * s1 * s2;
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
