/* Internal: vector math for the CPU kernels on GNU C vector types of 16 lanes of 32 bits: exp, erf,
 * erfc, GELU (erf and tanh forms) and its derivative, Philox4x32-10 for 16 counter blocks, the
 * dropout keep test, and f32/bf16 loads and stores.
 *
 * The names below are stable (other kernels use them):
 *   types      filo_v16f, filo_v16i (lane masks: all ones or zero), filo_v16u; FILO_V16 = 16 lanes
 *   lanes      filo_v16_splat, filo_v16_select(mask, a, b), filo_v16_load/store (f32),
 *              filo_v16_load_bf16/store_bf16, filo_v16_load_n/store_n (n lanes of f32/bf16/f16)
 *   math       filo_v16_exp, filo_v16_erf, filo_v16_erfc, filo_v16_gelu, filo_v16_gelu_grad,
 *              filo_v16_gelu_tanh, filo_v16_gelu_tanh_grad
 *   random     filo_v16_philox (16 blocks, output-major), filo_v16_philox_elements (the same 64
 *              outputs in dropout's element order), filo_v16_dropout_keep (bits >= threshold)
 * Speed, one core of this project's AMD EPYC (Zen 4) in the x86-64-v4 build: exp 0.3 ns a value,
 * erf 0.7, GELU and its derivative 1.0 (glibc's erff path: 9-11), Philox 0.4 ns an output
 * (the scalar rounds: 1.9).
 *
 * Use: call the helpers from a loop function marked FILO_SIMD_CLONES, which GCC builds for
 * x86-64-v4 (AVX-512 with DQ/BW/VL), AVX2 and the x86-64 baseline and picks when the library
 * loads. Every helper is static inline always_inline, in plain vector arithmetic (no intrinsics),
 * so it inlines into each build: a 64-byte vector is one AVX-512 register, two AVX2 or four SSE2
 * ones. Two rules keep the narrower builds from being scalarized by GCC, which splits arithmetic
 * on vectors wider than the target's registers but lowers comparisons and shuffles of them one
 * lane at a time: lane masks here come from integer arithmetic (sign shifts, borrows), never
 * from vector comparisons, and the one shuffle (the element order of Philox) runs only on the
 * AVX-512 path (filo_v16_philox_vector). Callers should follow the same rules.
 *
 * Each lane runs the same IEEE operations in the same order in every build (ISO C: no FMA
 * contraction, no reciprocal approximations), so results do not depend on the CPU.
 *
 * Accuracy, measured over every float against double (tests/test_cpu_vec_math.c; its exhaustive
 * mode walks all 2^32 inputs):
 *   filo_v16_exp   error below 1.01 ulp (so within 2 ulp of the correctly rounded result);
 *                  +inf from ln(FLT_MAX) on, 0 below the subnormals and for -inf, NaN for NaN;
 *                  subnormal results rounded once.
 *   filo_v16_erf   absolute error below 1.4e-7 everywhere, relative below 2.4 ulp for normal
 *                  results.
 *   filo_v16_erfc  relative error below 6.6 ulp for normal results (x < 9.19).
 *   filo_v16_gelu  0.5 h erfc(-h / sqrt 2): below 6.7 ulp for normal results; gelu(-inf) = -0.
 *   filo_v16_gelu_grad  0.5 erfc(-h / sqrt 2) + h exp(-h^2 / 2) / sqrt(2 pi): absolute error
 *                  below 1.5e-7 (the value is at most 1.13; it crosses 0 at h = -0.75, where the
 *                  two terms cancel); -0 at -inf and 1 at +inf.
 *   filo_v16_gelu_tanh(_grad)  the formulas of filo_gelu_f / filo_gelu_grad_f with approximate = 1
 *                  (kernels/bias_act_math.h), filo_v16_exp in place of expf.
 *
 * Methods. exp: n = round(x / ln 2) by adding 1.5 * 2^23, r = x - n ln2_hi - n ln2_lo
 * (Cody-Waite: n ln2_hi and the subtraction are exact), exp(r) = 1 + r + r^2 P4(r), times 2^(n/2)
 * and 2^(n - n/2) so that a subnormal result rounds once. erf(x), |x| < 0.75: x + x S5(x^2).
 * erfc(t), t >= 0.75: exp(-t^2) u Q7(u), u = 1 / (1 + t / 2), where -t^2 = hi + lo exactly (t cut
 * at 12 significant bits) so that exp sees the exact argument; erf = 1 - erfc there. GELU takes
 * exp(-h^2 / 2) from the same exact split of h, so its negative tail keeps its relative accuracy.
 * The polynomials are minimax (Lawson's iteration in double), their coefficients rounded to
 * float one at a time with the rest refitted.
 *
 * Philox: filo_v16_philox gives blocks counter + 0..15 with the rounds of filo_philox_block
 * (runtime/element.h), bit for bit, so the dropout masks stay those of the scalar code and the
 * CUDA kernels. */
#ifndef FILO_KERNELS_CPU_VEC_MATH_H
#define FILO_KERNELS_CPU_VEC_MATH_H

#include <stdint.h>
#include <string.h>

#include "element.h"
#include "simd.h" /* filo_v16f, filo_v8u64, FILO_V16, FILO_SIMD_CLONES, FILO_SIMD_INLINE */

typedef int32_t filo_v16i __attribute__((vector_size(64)));
typedef uint32_t filo_v16u __attribute__((vector_size(64)));
typedef uint16_t filo_v16h __attribute__((vector_size(32)));

/* ---- lanes, masks, loads and stores ---- */

FILO_SIMD_INLINE filo_v16f filo_v16_splat(float x) { return (filo_v16f){0} + x; }

/* A mask is all ones in a lane where a condition holds, else zero. */
FILO_SIMD_INLINE filo_v16i filo_v16_neg_mask(filo_v16i d) { return d >> 31; } /* d < 0 */

FILO_SIMD_INLINE filo_v16f filo_v16_select(filo_v16i m, filo_v16f a, filo_v16f b)
{
    return (filo_v16f)(((filo_v16i)a & m) | ((filo_v16i)b & ~m));
}

FILO_SIMD_INLINE filo_v16i filo_v16_bits(float x)
{
    int32_t b;
    memcpy(&b, &x, sizeof b);
    return (filo_v16i){0} + b;
}

FILO_SIMD_INLINE filo_v16i filo_v16_abs_bits(filo_v16f x) { return (filo_v16i)x & 0x7fffffff; }

FILO_SIMD_INLINE filo_v16f filo_v16_abs(filo_v16f x) { return (filo_v16f)filo_v16_abs_bits(x); }

FILO_SIMD_INLINE filo_v16i filo_v16_sign_mask(filo_v16f x) { return (filo_v16i)x >> 31; } /* sign bit set */

/* |x| < c for c > 0, false for NaN. */
FILO_SIMD_INLINE filo_v16i filo_v16_abs_lt(filo_v16f x, float c)
{
    return filo_v16_neg_mask(filo_v16_abs_bits(x) - filo_v16_bits(c));
}

FILO_SIMD_INLINE filo_v16i filo_v16_nan_mask(filo_v16f x)
{
    return filo_v16_neg_mask(0x7f800000 - filo_v16_abs_bits(x));
}

/* NaN lanes of x (quieted) in place of y's. */
FILO_SIMD_INLINE filo_v16f filo_v16_keep_nan(filo_v16f x, filo_v16f y)
{
    return filo_v16_select(filo_v16_nan_mask(x), x + x, y);
}

/* x clamped into [lo, hi] for lo <= 0 <= hi (either may be infinite); NaN goes to a bound. */
FILO_SIMD_INLINE filo_v16f filo_v16_clamp(filo_v16f x, float lo, float hi)
{
    filo_v16i s = filo_v16_sign_mask(x), a = filo_v16_abs_bits(x);
    filo_v16i lim = (s & filo_v16_bits(-lo)) | (~s & filo_v16_bits(hi));
    filo_v16i over = filo_v16_neg_mask(lim - a);
    return (filo_v16f)(((over & lim) | (~over & a)) | (s & INT32_MIN));
}

FILO_SIMD_INLINE filo_v16f filo_v16_load(const float *p)
{
    filo_v16f v;
    memcpy(&v, p, sizeof v);
    return v;
}

FILO_SIMD_INLINE void filo_v16_store(float *p, filo_v16f v) { memcpy(p, &v, sizeof v); }

/* bf16 bits to float: exact. */
FILO_SIMD_INLINE filo_v16f filo_v16_load_bf16(const uint16_t *p)
{
    filo_v16h h;
    memcpy(&h, p, sizeof h);
    return (filo_v16f)(__builtin_convertvector(h, filo_v16u) << 16);
}

/* Float to bf16 as filo_el_f32_to_bf16: round to nearest even, NaN quieted with its sign. */
FILO_SIMD_INLINE void filo_v16_store_bf16(uint16_t *p, filo_v16f v)
{
    filo_v16u u = (filo_v16u)v;
    filo_v16u nan = (filo_v16u)filo_v16_nan_mask(v);
    filo_v16u r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    r = (r & ~nan) | (((u >> 16) | 0x40u) & nan);
    filo_v16h h = __builtin_convertvector(r, filo_v16h);
    memcpy(p, &h, sizeof h);
}

/* Lanes [0, n) from n <= 16 consecutive elements of dtype t (f32, bf16 or f16) at p, the others
 * 0; and the store of lanes [0, n), rounding once to t. A full vector of f32 or bf16 moves in one
 * access; f16 and partial vectors go through a float array. */
FILO_SIMD_INLINE filo_v16f filo_v16_load_n(const void *p, filo_dtype t, int n)
{
    if (n == FILO_V16 && t == FILO_F32)
        return filo_v16_load((const float *)p);
    if (n == FILO_V16 && t == FILO_BF16)
        return filo_v16_load_bf16((const uint16_t *)p);
    float v[FILO_V16] = {0};
    for (int i = 0; i < n; i++)
        v[i] = t == FILO_F32    ? ((const float *)p)[i]
               : t == FILO_BF16 ? filo_el_bf16_to_f32(((const uint16_t *)p)[i])
                                : filo_el_f16_to_f32(((const uint16_t *)p)[i]);
    return filo_v16_load(v);
}

FILO_SIMD_INLINE void filo_v16_store_n(void *p, filo_dtype t, filo_v16f x, int n)
{
    if (n == FILO_V16 && t == FILO_F32) {
        filo_v16_store((float *)p, x);
        return;
    }
    if (n == FILO_V16 && t == FILO_BF16) {
        filo_v16_store_bf16((uint16_t *)p, x);
        return;
    }
    float v[FILO_V16];
    filo_v16_store(v, x);
    for (int i = 0; i < n; i++) {
        if (t == FILO_F32)
            ((float *)p)[i] = v[i];
        else if (t == FILO_BF16)
            ((uint16_t *)p)[i] = filo_el_f32_to_bf16(v[i]);
        else
            ((uint16_t *)p)[i] = filo_el_f32_to_f16(v[i]);
    }
}

/* ---- exp ---- */

#define FILO_V16_LOG2E 1.44269504088896341f
#define FILO_V16_LN2_HI 0.693359375f      /* 9 significant bits: n ln2_hi is exact */
#define FILO_V16_LN2_LO (-2.12194440e-4f) /* ln 2 - ln2_hi */
#define FILO_V16_ROUND 12582912.0f        /* 1.5 * 2^23: adding it rounds to an integer */
#define FILO_V16_EXP_MIN (-120.0f)        /* exp is 0 in float below -103.98 */
#define FILO_V16_EXP_MAX 89.0f            /* and infinite above 88.73 */

/* p 2^n for p in [2^-20, 16] and n in [-174, 128], by two exact powers of two so that a
 * subnormal result rounds once. */
FILO_SIMD_INLINE filo_v16f filo_v16_scale2(filo_v16f p, filo_v16i n)
{
    filo_v16i n1 = n >> 1, n2 = n - n1;
    return p * (filo_v16f)((n1 + 127) << 23) * (filo_v16f)((n2 + 127) << 23);
}

/* exp(hi + lo) = p 2^n, p = exp(r) in [0.65, 1.55], for hi in [EXP_MIN, EXP_MAX] and
 * |lo| < 2^-9 |hi| (or lo = 0): hi - n ln2_hi is exact (Sterbenz) and lo joins r. */
FILO_SIMD_INLINE filo_v16f filo_v16_exp_reduce(filo_v16f hi, filo_v16f lo, filo_v16i *n)
{
    filo_v16f k = (hi + lo) * FILO_V16_LOG2E + FILO_V16_ROUND;
    *n = (filo_v16i)k - filo_v16_bits(FILO_V16_ROUND);
    filo_v16f nf = k - FILO_V16_ROUND;
    filo_v16f r = (hi - nf * FILO_V16_LN2_HI) - nf * FILO_V16_LN2_LO + lo;
    filo_v16f q = 1.38020539e-3f * r + 8.37133080e-3f;
    q = q * r + 4.16688100e-2f;
    q = q * r + 1.66664988e-1f;
    q = q * r + 4.99999911e-1f;
    return 1.0f + (r + (r * r) * q);
}

FILO_SIMD_INLINE filo_v16f filo_v16_exp(filo_v16f x)
{
    filo_v16i n;
    filo_v16f p = filo_v16_exp_reduce(filo_v16_clamp(x, FILO_V16_EXP_MIN, FILO_V16_EXP_MAX), filo_v16_splat(0.0f), &n);
    return filo_v16_keep_nan(x, filo_v16_scale2(p, n));
}

/* ---- erf, erfc ---- */

#define FILO_V16_ERF_SPLIT 0.75f /* below: the odd polynomial; from here: through erfc */
#define FILO_V16_ERFC_MAX 10.5f  /* erfc is 0 in float from 10.06 on */

/* -(a^2) = hi + lo with hi exact: a = ah + al with ah a's first 12 significant bits, so ah^2,
 * ah al and al^2 are exact products. */
FILO_SIMD_INLINE void filo_v16_neg_square(filo_v16f a, filo_v16f *hi, filo_v16f *lo)
{
    filo_v16f ah = (filo_v16f)((filo_v16u)a & 0xfffff000u), al = a - ah;
    *hi = -(ah * ah);
    *lo = -((ah + ah) * al + al * al);
}

/* erf(x) for |x| < 0.75: x + x S(x^2), S = erf(x) / x - 1 (relative error 1.6e-9). */
FILO_SIMD_INLINE filo_v16f filo_v16_erf_small(filo_v16f x)
{
    filo_v16f s = x * x;
    filo_v16f q = -6.73758390e-4f * s + 5.11315698e-3f;
    q = q * s - 2.68343352e-2f;
    q = q * s + 1.12833790e-1f;
    q = q * s - 3.76126200e-1f;
    q = q * s + 1.28379166e-1f;
    return x + x * q;
}

/* erfc(t) exp(t^2) for t in [0.75, 10.5]: u Q(u), u = 1 / (1 + t / 2) (relative error 3.5e-8). */
FILO_SIMD_INLINE filo_v16f filo_v16_erfc_scaled(filo_v16f t)
{
    filo_v16f u = 1.0f / (1.0f + 0.5f * t);
    filo_v16f q = 8.05323347e-2f * u - 1.89152538e-1f;
    q = q * u + 3.83606702e-2f;
    q = q * u + 8.91174227e-2f;
    q = q * u + 1.68422759e-1f;
    q = q * u + 2.49164149e-1f;
    q = q * u + 2.81790406e-1f;
    q = q * u + 2.82110006e-1f;
    return u * q;
}

/* erfc(t) = m 2^n and exp(-t^2) = p 2^n for t in [0.75, 10.5], given -t^2 = hi + lo
 * (filo_v16_neg_square). Callers scale after their last product, so that a result in the
 * subnormal range rounds once. */
FILO_SIMD_INLINE void filo_v16_erfc_parts(filo_v16f t, filo_v16f hi, filo_v16f lo, filo_v16f *m, filo_v16f *p,
                                          filo_v16i *n)
{
    *p = filo_v16_exp_reduce(hi, lo, n);
    *m = *p * filo_v16_erfc_scaled(t);
}

FILO_SIMD_INLINE filo_v16f filo_v16_erf(filo_v16f x)
{
    filo_v16f t = filo_v16_clamp(filo_v16_abs(x), 0.0f, FILO_V16_ERFC_MAX), hi, lo, m, p;
    filo_v16i n;
    filo_v16_neg_square(t, &hi, &lo);
    filo_v16_erfc_parts(t, hi, lo, &m, &p, &n);
    filo_v16f big = 1.0f - filo_v16_scale2(m, n);
    big = (filo_v16f)((filo_v16i)big | ((filo_v16i)x & INT32_MIN));
    filo_v16f y = filo_v16_select(filo_v16_abs_lt(x, FILO_V16_ERF_SPLIT), filo_v16_erf_small(x), big);
    return filo_v16_keep_nan(x, y);
}

FILO_SIMD_INLINE filo_v16f filo_v16_erfc(filo_v16f x)
{
    filo_v16f t = filo_v16_clamp(filo_v16_abs(x), 0.0f, FILO_V16_ERFC_MAX), hi, lo, m, p;
    filo_v16i n;
    filo_v16_neg_square(t, &hi, &lo);
    filo_v16_erfc_parts(t, hi, lo, &m, &p, &n);
    filo_v16f c = filo_v16_scale2(m, n);
    c = filo_v16_select(filo_v16_sign_mask(x), 2.0f - c, c);
    filo_v16f y = filo_v16_select(filo_v16_abs_lt(x, FILO_V16_ERF_SPLIT), 1.0f - filo_v16_erf_small(x), c);
    return filo_v16_keep_nan(x, y);
}

/* ---- GELU ---- */

#define FILO_V16_SQRT1_2 0.70710678118654752440f
#define FILO_V16_INV_SQRT_2PI 0.39894228040143267794f
#define FILO_V16_SQRT_2_PI 0.79788456080286535588f
#define FILO_V16_TANH_C 0.044715f
#define FILO_V16_GELU_MAX 15.0f /* erfc(15 / sqrt 2) and exp(-15^2 / 2) are 0 in float */

/* The pieces of GELU at h in [-GELU_MAX, +inf], z = h / sqrt 2:
 *   phi = erfc(-z) = 1 + erf(z);
 *   where tail is set (z <= -0.75), also erfc(-z) = m 2^n;
 *   exp(-h^2 / 2) = p 2^n, from the exact split of h^2. */
typedef struct filo_v16_gelu_parts {
    filo_v16f phi, m, p;
    filo_v16i n, tail;
} filo_v16_gelu_parts;

FILO_SIMD_INLINE filo_v16_gelu_parts filo_v16_gelu_split(filo_v16f h)
{
    filo_v16_gelu_parts g;
    filo_v16f z = h * FILO_V16_SQRT1_2, hi, lo;
    filo_v16f t = filo_v16_clamp(filo_v16_abs(z), 0.0f, FILO_V16_ERFC_MAX);
    filo_v16_neg_square(filo_v16_clamp(h, -FILO_V16_GELU_MAX, FILO_V16_GELU_MAX), &hi, &lo);
    filo_v16_erfc_parts(t, 0.5f * hi, 0.5f * lo, &g.m, &g.p, &g.n);
    filo_v16f c = filo_v16_scale2(g.m, g.n);
    filo_v16i small = filo_v16_abs_lt(z, FILO_V16_ERF_SPLIT), neg = filo_v16_sign_mask(h);
    g.phi = filo_v16_select(small, 1.0f + filo_v16_erf_small(z), filo_v16_select(neg, c, 2.0f - c));
    g.tail = neg & ~small;
    return g;
}

FILO_SIMD_INLINE filo_v16f filo_v16_gelu(filo_v16f h)
{
    filo_v16f hl = filo_v16_clamp(h, -FILO_V16_GELU_MAX, __builtin_inff());
    filo_v16_gelu_parts g = filo_v16_gelu_split(hl);
    filo_v16f y = 0.5f * hl * g.phi;
    y = filo_v16_select(g.tail, filo_v16_scale2(0.5f * hl * g.m, g.n), y);
    return filo_v16_keep_nan(h, y);
}

FILO_SIMD_INLINE filo_v16f filo_v16_gelu_grad(filo_v16f h)
{
    filo_v16f hc = filo_v16_clamp(h, -FILO_V16_GELU_MAX, FILO_V16_GELU_MAX);
    filo_v16_gelu_parts g = filo_v16_gelu_split(filo_v16_clamp(h, -FILO_V16_GELU_MAX, __builtin_inff()));
    filo_v16f y = 0.5f * g.phi + hc * filo_v16_scale2(g.p, g.n) * FILO_V16_INV_SQRT_2PI;
    y = filo_v16_select(g.tail, filo_v16_scale2(0.5f * g.m + hc * g.p * FILO_V16_INV_SQRT_2PI, g.n), y);
    return filo_v16_keep_nan(h, y);
}

/* tanh form: h s with s = 1 / (1 + exp(-2u)), u = sqrt(2/pi) (h + 0.044715 h^3). */
FILO_SIMD_INLINE filo_v16f filo_v16_gelu_tanh(filo_v16f h)
{
    filo_v16f u = FILO_V16_SQRT_2_PI * (h + FILO_V16_TANH_C * h * h * h);
    return h / (1.0f + filo_v16_exp(-2.0f * u));
}

FILO_SIMD_INLINE filo_v16f filo_v16_gelu_tanh_grad(filo_v16f h)
{
    filo_v16f u = FILO_V16_SQRT_2_PI * (h + FILO_V16_TANH_C * h * h * h);
    filo_v16f s = 1.0f / (1.0f + filo_v16_exp(-2.0f * u));
    filo_v16f du = FILO_V16_SQRT_2_PI * (1.0f + 3.0f * FILO_V16_TANH_C * h * h);
    return s + h * 2.0f * s * (1.0f - s) * du;
}

/* ---- Philox4x32-10 and dropout masks ---- */

/* Whether the vector Philox pays on this CPU: its 32 x 32 -> 64-bit products are one
 * instruction (vpmullq) with AVX-512DQ, that is in the x86-64-v4 build of FILO_SIMD_CLONES; without
 * it GCC emulates them (and lowers the element shuffle lane by lane), slower than the scalar
 * rounds, which filo_v16_philox then runs instead. The test reads the CPU, not the build: a
 * caller built only for AVX2 would take the vector path on an AVX-512 CPU at 3x the scalar
 * rounds' time, hence FILO_SIMD_CLONES on every caller. */
FILO_SIMD_INLINE int filo_v16_philox_vector(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

/* hi and lo 32 bits of a * m per lane. */
FILO_SIMD_INLINE void filo_v16_mulhilo(filo_v16u a, uint32_t m, filo_v16u *hi, filo_v16u *lo)
{
    filo_v8u64 w = (filo_v8u64)a;
    filo_v8u64 even = (w & 0xffffffffu) * (uint64_t)m, odd = (w >> 32) * (uint64_t)m;
    *hi = (filo_v16u)((even >> 32) | (odd & 0xffffffff00000000u));
    *lo = (filo_v16u)((even & 0xffffffffu) | (odd << 32));
}

/* The rounds of filo_philox_block on 16 lanes: out[l][j] = output l of block counter + j. */
FILO_SIMD_INLINE void filo_v16_philox_rounds(uint64_t counter, uint64_t subsequence, uint64_t key, filo_v16u out[4])
{
    const filo_v16u lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    uint32_t lo = (uint32_t)counter;
    filo_v16u c0 = lo + lane;
    /* the carry out of lo + lane, by the carry rule of an adder (no lane comparison) */
    filo_v16u c1 = (uint32_t)(counter >> 32) + (((lo & lane) | ((lo | lane) & ~c0)) >> 31);
    filo_v16u c2 = (filo_v16u){0} + (uint32_t)subsequence, c3 = (filo_v16u){0} + (uint32_t)(subsequence >> 32);
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        filo_v16u hi0, lo0, hi1, lo1;
        filo_v16_mulhilo(c0, 0xD2511F53u, &hi0, &lo0);
        filo_v16_mulhilo(c2, 0xCD9E8D57u, &hi1, &lo1);
        c0 = hi1 ^ c1 ^ k0;
        c2 = hi0 ^ c3 ^ k1;
        c1 = lo1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Blocks counter + j (j = 0..15, the 64-bit counter carrying) under (subsequence, key):
 * out[l][j] is output l of block j, as filo_philox_block(counter + j, subsequence, key) gives. */
FILO_SIMD_INLINE void filo_v16_philox(uint64_t counter, uint64_t subsequence, uint64_t key, filo_v16u out[4])
{
    if (filo_v16_philox_vector()) {
        filo_v16_philox_rounds(counter, subsequence, key, out);
        return;
    }
    uint32_t r[4], v[4][16];
    for (int j = 0; j < 16; j++) {
        filo_philox_block(counter + (uint64_t)j, subsequence, key, r);
        for (int l = 0; l < 4; l++)
            v[l][j] = r[l];
    }
    memcpy(out, v, sizeof v);
}

/* Two-vector shuffle with constant lane indices (0..15 from a, 16..31 from b). */
#if defined(__clang__)
#define FILO_V16_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define FILO_V16_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (filo_v16u){__VA_ARGS__})
#endif

/* The same 64 outputs in element order: element e = 4 j + l (block j, output l) is lane e % 16
 * of out[e / 16], as dropout indexes them (element i: block offset + i / 4, output i % 4). */
FILO_SIMD_INLINE void filo_v16_philox_elements(uint64_t counter, uint64_t subsequence, uint64_t key, filo_v16u out[4])
{
    if (!filo_v16_philox_vector()) {
        uint32_t v[64];
        for (int j = 0; j < 16; j++)
            filo_philox_block(counter + (uint64_t)j, subsequence, key, v + 4 * j);
        memcpy(out, v, sizeof v);
        return;
    }
    filo_v16u x[4];
    filo_v16_philox_rounds(counter, subsequence, key, x);
    /* blocks 0-7 and 8-15 of outputs 0 and 1, and of 2 and 3, interleaved; then pairs of those */
    filo_v16u a = FILO_V16_SHUFFLE(x[0], x[1], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    filo_v16u b = FILO_V16_SHUFFLE(x[2], x[3], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    filo_v16u c = FILO_V16_SHUFFLE(x[0], x[1], 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    filo_v16u d = FILO_V16_SHUFFLE(x[2], x[3], 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    out[0] = FILO_V16_SHUFFLE(a, b, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    out[1] = FILO_V16_SHUFFLE(a, b, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
    out[2] = FILO_V16_SHUFFLE(c, d, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    out[3] = FILO_V16_SHUFFLE(c, d, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
}

/* The keep mask of 16 elements from their Philox outputs: bits >= threshold
 * (filo_dropout_keep_bits), as "no borrow out of bits - threshold". */
FILO_SIMD_INLINE filo_v16i filo_v16_dropout_keep(filo_v16u bits, uint32_t threshold)
{
    filo_v16u d = bits - threshold;
    filo_v16u borrow = ((~bits & threshold) | ((~bits | threshold) & d)) >> 31;
    return (filo_v16i)(borrow - 1u);
}

#endif
