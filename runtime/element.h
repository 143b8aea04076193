/* Internal: element loads, stores and random transforms shared verbatim by the CPU loops and the
 * CUDA kernels, so both backends compute bit-identical values. Valid C11 and CUDA C++. */
#ifndef FILO_RUNTIME_ELEMENT_H
#define FILO_RUNTIME_ELEMENT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "filo/dtype.h"

#if defined(__CUDACC__) || (defined(FILO_CUDA_EMULATION) && defined(__cplusplus))
#define FILO_HD static inline __host__ __device__
#else
#define FILO_HD static inline
#endif

FILO_HD uint32_t filo_bits_f32(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

FILO_HD float filo_f32_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

FILO_HD uint16_t filo_el_f32_to_bf16(float x)
{
    uint32_t u = filo_bits_f32(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN, sign kept */
    u += 0x7fffu + ((u >> 16) & 1u);          /* round to nearest even */
    return (uint16_t)(u >> 16);
}

FILO_HD float filo_el_bf16_to_f32(uint16_t h) { return filo_f32_bits((uint32_t)h << 16); }

FILO_HD uint16_t filo_el_f32_to_f16(float x)
{
    uint32_t u = filo_bits_f32(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) /* rounds to >= 65520: overflow to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        if (a < 0x33000000u)
            return (uint16_t)sign;
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24 */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1u);
        if (rem > mid || (rem == mid && (half & 1u)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = a - 0x38000000u; /* rebias exponent 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

FILO_HD float filo_el_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0x1f)
        return filo_f32_bits(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        if (m == 0)
            return filo_f32_bits(sign);
        float v = (float)m * 5.9604644775390625e-8f; /* m * 2^-24, exact */
        return sign ? -v : v;
    }
    return filo_f32_bits(sign | ((e + 112u) << 23) | (m << 13));
}

FILO_HD size_t filo_el_size(filo_dtype t)
{
    switch (t) {
    case FILO_F64: case FILO_I64: return 8;
    case FILO_F32: case FILO_I32: return 4;
    case FILO_BF16: case FILO_F16: return 2;
    case FILO_U8: return 1;
    default: return 0;
    }
}

/* Integer dtypes travel as int64, floating ones as double: both exact for every source value. */
FILO_HD int filo_el_is_int(filo_dtype t) { return t == FILO_I64 || t == FILO_I32 || t == FILO_U8; }

FILO_HD double filo_el_load_f(const void *p, filo_dtype t)
{
    switch (t) {
    case FILO_F64: return *(const double *)p;
    case FILO_F32: return *(const float *)p;
    case FILO_BF16: return filo_el_bf16_to_f32(*(const uint16_t *)p);
    case FILO_F16: return filo_el_f16_to_f32(*(const uint16_t *)p);
    case FILO_I64: return (double)*(const int64_t *)p;
    case FILO_I32: return *(const int32_t *)p;
    case FILO_U8: return *(const uint8_t *)p;
    default: return 0.0;
    }
}

FILO_HD int64_t filo_el_load_i(const void *p, filo_dtype t)
{
    switch (t) {
    case FILO_I64: return *(const int64_t *)p;
    case FILO_I32: return *(const int32_t *)p;
    case FILO_U8: return *(const uint8_t *)p;
    default: return (int64_t)filo_el_load_f(p, t);
    }
}

FILO_HD void filo_el_store_f(void *p, filo_dtype t, double v)
{
    switch (t) {
    case FILO_F64: *(double *)p = v; break;
    case FILO_F32: *(float *)p = (float)v; break;
    case FILO_BF16: *(uint16_t *)p = filo_el_f32_to_bf16((float)v); break;
    case FILO_F16: *(uint16_t *)p = filo_el_f32_to_f16((float)v); break;
    case FILO_I64: *(int64_t *)p = (int64_t)v; break;
    case FILO_I32: *(int32_t *)p = (int32_t)v; break;
    case FILO_U8: *(uint8_t *)p = (uint8_t)v; break;
    default: break;
    }
}

FILO_HD void filo_el_store_i(void *p, filo_dtype t, int64_t v)
{
    switch (t) {
    case FILO_I64: *(int64_t *)p = v; break;
    case FILO_I32: *(int32_t *)p = (int32_t)v; break;
    case FILO_U8: *(uint8_t *)p = (uint8_t)v; break;
    default: filo_el_store_f(p, t, (double)v); break;
    }
}

FILO_HD void filo_el_convert(void *dst, filo_dtype dt, const void *src, filo_dtype st)
{
    if (filo_el_is_int(dt) && filo_el_is_int(st))
        filo_el_store_i(dst, dt, filo_el_load_i(src, st));
    else
        filo_el_store_f(dst, dt, filo_el_load_f(src, st));
}

/* ---- Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3") ---- */

FILO_HD void filo_philox_block(uint64_t counter, uint64_t subsequence, uint64_t key, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32);
    uint32_t c2 = (uint32_t)subsequence, c3 = (uint32_t)(subsequence >> 32);
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* A uniform double in (0, 1): exact in double, identical on every backend. */
FILO_HD double filo_uniform01(uint32_t x) { return ((double)x + 0.5) * 2.3283064365386963e-10; }

/* Element i of a draw: uniform uses lane i % 4; normal uses the Box-Muller pair of lanes
 * (i % 4 & ~1, | 1) and takes the cosine or the sine branch. Computed in double so that the
 * backends' float math libraries cannot disagree after rounding to the stored dtype. */
FILO_HD double filo_draw_value(int kind, double a, double b, uint64_t seed, uint64_t offset, int64_t i)
{
    uint32_t r[4];
    filo_philox_block(offset + (uint64_t)i / 4u, 0, seed, r);
    int lane = (int)(i & 3);
    if (kind == 0)
        return a + (b - a) * filo_uniform01(r[lane]);
    double u1 = filo_uniform01(r[lane & ~1]);
    double u2 = filo_uniform01(r[lane | 1]);
    double radius = sqrt(-2.0 * log(u1));
    double angle = 6.283185307179586 * u2;
    return a + b * radius * ((lane & 1) ? sin(angle) : cos(angle));
}

/* ---- Dropout masks ----
 * Every dropout in filo (the dropout op, the fused bias+dropout+residual, attention's dropout on
 * the probabilities) decides element i of a mask the same way: Philox block (offset + i / 4)
 * under key seed, lane i % 4; the element is kept when that 32-bit output is >= the threshold
 * round(p * 2^32). A kernel may compute one block per 4 consecutive elements; any launch shape
 * and the CPU give the same mask. Kept elements are scaled by 1 / (1 - p). */

/* p in [0, 1): the 32-bit threshold below which an element is dropped. */
FILO_HD uint32_t filo_dropout_threshold(double p)
{
    double t = p * 4294967296.0 + 0.5;
    return t >= 4294967295.0 ? 4294967295u : (uint32_t)t;
}

FILO_HD int filo_dropout_keep_bits(uint32_t bits, uint32_t threshold) { return bits >= threshold; }

/* The keep decision for element i alone (one Philox block per call). */
FILO_HD int filo_dropout_keep(uint64_t seed, uint64_t offset, uint64_t i, uint32_t threshold)
{
    uint32_t r[4];
    filo_philox_block(offset + i / 4u, 0, seed, r);
    return filo_dropout_keep_bits(r[i & 3u], threshold);
}

#endif
