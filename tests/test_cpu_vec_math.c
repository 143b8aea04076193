/* kernels/cpu/vec_math.h: exp, erf, erfc and GELU against double over a walk of the float range
 * (every 1999th bit pattern, every float with FILO_VEC_MATH_EXHAUSTIVE=1), dense grids and special
 * values; the same bits from the x86-64-v4, AVX2 and baseline builds; vector Philox and the
 * dropout keep test against the scalar ones for many counters, keys and thresholds; bf16 loads
 * and stores against runtime/element.h. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/vec_math.h"
#include "element.h"
#include "filo_test.h"

#define PI 3.14159265358979323846

/* ---- each function in each build ---- */

typedef void (*eval_fn)(const float *x, float *y, long n);

#define EVAL_ONE(NAME, ATTR, FN)                                                                  \
    ATTR static void NAME(const float *x, float *y, long n)                                       \
    {                                                                                             \
        for (long i = 0; i < n; i += FILO_V16)                                                    \
            filo_v16_store(y + i, FN(filo_v16_load(x + i)));                                      \
    }

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ISA_COUNT 3
#define EVAL(NAME, FN)                                                                            \
    EVAL_ONE(NAME##_v4, __attribute__((target("arch=x86-64-v4"))), FN)                           \
    EVAL_ONE(NAME##_avx2, __attribute__((target("avx2"))), FN)                                    \
    EVAL_ONE(NAME##_base, , FN)                                                                   \
    static const eval_fn NAME[ISA_COUNT] = {NAME##_v4, NAME##_avx2, NAME##_base};

static int isa_available(int isa)
{
    if (isa == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    if (isa == 1)
        return __builtin_cpu_supports("avx2");
    return 1;
}
#else
#define ISA_COUNT 1
#define EVAL(NAME, FN)                                                                            \
    EVAL_ONE(NAME##_base, , FN)                                                                   \
    static const eval_fn NAME[ISA_COUNT] = {NAME##_base};
static int isa_available(int isa) { return isa == 0; }
#endif

EVAL(eval_exp, filo_v16_exp)
EVAL(eval_erf, filo_v16_erf)
EVAL(eval_erfc, filo_v16_erfc)
EVAL(eval_gelu, filo_v16_gelu)
EVAL(eval_gelu_grad, filo_v16_gelu_grad)
EVAL(eval_gelu_tanh, filo_v16_gelu_tanh)
EVAL(eval_gelu_tanh_grad, filo_v16_gelu_tanh_grad)

/* ---- double references ---- */

static double ref_exp(double x) { return exp(x); }
static double ref_erf(double x) { return erf(x); }
static double ref_erfc(double x) { return erfc(x); }
static double ref_gelu(double h) { return 0.5 * h * erfc(-h / sqrt(2.0)); }
static double ref_gelu_grad(double h) { return 0.5 * erfc(-h / sqrt(2.0)) + h * exp(-0.5 * h * h) / sqrt(2.0 * PI); }

static double ref_gelu_tanh(double h)
{
    return 0.5 * h * (1.0 + tanh(sqrt(2.0 / PI) * (h + 0.044715 * h * h * h)));
}

static double ref_gelu_tanh_grad(double h)
{
    double k = sqrt(2.0 / PI), t = tanh(k * (h + 0.044715 * h * h * h));
    return 0.5 * (1.0 + t) + 0.5 * h * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * h * h);
}

/* ---- error measures ---- */

/* The spacing of floats at |w| (2^-149 in the subnormal range). */
static double ulp_at(double w)
{
    w = fabs(w);
    if (w < 0x1p-126)
        return 0x1p-149;
    int e;
    frexp(w, &e);
    return ldexp(1.0, e - 24);
}

/* How one function is judged: an error is within bounds when it is below max_ulp ulp of the exact
 * value (for |want| >= rel_floor) or below atol. */
typedef struct accuracy {
    const char *name;
    const eval_fn *fn;
    double (*ref)(double);
    double max_ulp, rel_floor, atol;
    double lo, hi; /* the inputs judged; others must only be finite-and-sane */
} accuracy;

typedef struct worst {
    double ulp, abs;
    float at_ulp, at_abs;
    long checked;
} worst;

static void judge(const accuracy *a, const float *x, const float *y, long n, worst *w)
{
    for (long i = 0; i < n; i++) {
        if (!(x[i] >= a->lo && x[i] <= a->hi))
            continue;
        double want = a->ref((double)x[i]), got = y[i];
        if (fabs(want) >= 0x1.ffffffp+127)
            want = want > 0 ? INFINITY : -INFINITY; /* what rounding to float gives */
        if (isnan(want) || isinf(want) || isnan(got) || isinf(got)) {
            cr_assert(got == want || (isnan(got) && isnan(want)), "%s(%a) = %a, want %a", a->name, (double)x[i], got,
                      want);
            continue;
        }
        double e = fabs(got - want), u = e / ulp_at(want);
        w->checked++;
        if (e > w->abs) {
            w->abs = e;
            w->at_abs = x[i];
        }
        if (fabs(want) >= a->rel_floor && u > w->ulp) {
            w->ulp = u;
            w->at_ulp = x[i];
        }
        cr_assert(e <= a->atol || (fabs(want) >= a->rel_floor && u <= a->max_ulp),
                  "%s(%a) = %a, want %.17g: error %.3g (%.3f ulp)", a->name, (double)x[i], got, want, e, u);
    }
}

enum { BATCH = 1 << 16 };

/* Runs every available build on x[0, n) (n a multiple of 16), asserts they agree bit for bit,
 * and judges the first. */
static void check_batch(const accuracy *a, const float *x, float *y, float *y2, long n, worst *w)
{
    int first = -1;
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (!isa_available(isa))
            continue;
        if (first < 0) {
            a->fn[isa](x, y, n);
            first = isa;
            continue;
        }
        a->fn[isa](x, y2, n);
        for (long i = 0; i < n; i++)
            cr_assert(memcmp(&y[i], &y2[i], 4) == 0, "%s(%a): build %d gives %a, build %d %a", a->name,
                      (double)x[i], first, (double)y[i], isa, (double)y2[i]);
    }
    judge(a, x, y, n, w);
}

/* Every stride-th float bit pattern of both signs (every float with FILO_VEC_MATH_EXHAUSTIVE=1),
 * then the grid lo + k (hi - lo) / 2^18 and the inputs around the function's break points. */
static void check_accuracy(const accuracy *a)
{
    float *x = malloc(sizeof(float) * BATCH), *y = malloc(sizeof(float) * BATCH), *y2 = malloc(sizeof(float) * BATCH);
    const char *env = getenv("FILO_VEC_MATH_EXHAUSTIVE");
    uint64_t stride = env && env[0] == '1' ? 1 : 1999;
    worst w = {0};
    long n = 0;
    for (uint64_t u = 0; u < 0x100000000ull; u += stride) {
        uint32_t b = (uint32_t)u;
        memcpy(&x[n++], &b, 4);
        if (n == BATCH) {
            check_batch(a, x, y, y2, n, &w);
            n = 0;
        }
    }
    const float breaks[] = {0.75f, -0.75f, 0.75f * 1.41421356f, -0.75f * 1.41421356f, 10.5f, 15.0f, -15.0f,
                            88.72283f, -87.33654f, -103.97208f, 1.0f, -1.0f};
    for (size_t k = 0; k < sizeof breaks / sizeof breaks[0]; k++) {
        float v = breaks[k];
        for (int s = 0; s < 64; s++)
            v = nextafterf(v, -INFINITY);
        for (int s = 0; s < 128; s++, v = nextafterf(v, INFINITY)) {
            x[n++] = v;
            if (n == BATCH) {
                check_batch(a, x, y, y2, n, &w);
                n = 0;
            }
        }
    }
    double lo = fmax(a->lo, -20.0), hi = fmin(a->hi, 20.0);
    for (long k = 0; k <= (1 << 18); k++) {
        x[n++] = (float)(lo + (hi - lo) * (double)k / (double)(1 << 18));
        if (n == BATCH) {
            check_batch(a, x, y, y2, n, &w);
            n = 0;
        }
    }
    while (n % FILO_V16)
        x[n++] = 0.0f;
    check_batch(a, x, y, y2, n, &w);
    cr_log_info("%s: %ld values, worst %.3f ulp at %a, worst absolute error %.3g at %a", a->name, w.checked, w.ulp,
                (double)w.at_ulp, w.abs, (double)w.at_abs);
    free(x);
    free(y);
    free(y2);
}

/* The bounds: measured over every float, with a little room. */
Test(cpu_vec_math, exp_accuracy)
{
    accuracy a = {"exp", eval_exp, ref_exp, 1.01, 0.0, 0.0, -INFINITY, INFINITY};
    check_accuracy(&a);
}

Test(cpu_vec_math, erf_accuracy)
{
    accuracy a = {"erf", eval_erf, ref_erf, 2.4, 0x1p-126, 1.4e-7, -INFINITY, INFINITY};
    check_accuracy(&a);
}

Test(cpu_vec_math, erfc_accuracy)
{
    accuracy a = {"erfc", eval_erfc, ref_erfc, 6.6, 0x1p-126, 0x1p-149 * 4, -INFINITY, INFINITY};
    check_accuracy(&a);
}

/* gelu(-inf) is -0 by design (the double formula gives NaN), so the judged range stops short. */
Test(cpu_vec_math, gelu_accuracy)
{
    accuracy a = {"gelu", eval_gelu, ref_gelu, 6.7, 0x1p-126, 0x1p-149 * 4, -3.4e38, INFINITY};
    check_accuracy(&a);
}

Test(cpu_vec_math, gelu_grad_accuracy)
{
    accuracy a = {"gelu_grad", eval_gelu_grad, ref_gelu_grad, 4.0, 1.0, 1.5e-7, -3.4e38, 3.4e38};
    check_accuracy(&a);
}

/* The tanh forms inherit their formula's float cancellations (1 - s near s = 1) and its overflow
 * of exp(-2u) below h = -9.9 (where the value is below 2e-38): absolute errors, as for the scalar
 * filo_gelu_f. Beyond |h| = 2^40, h^3 overflows in the formula. */
Test(cpu_vec_math, gelu_tanh_accuracy)
{
    accuracy a = {"gelu_tanh", eval_gelu_tanh, ref_gelu_tanh, 4.0, 1.0, 6e-7, -0x1p40, 0x1p40};
    check_accuracy(&a);
}

Test(cpu_vec_math, gelu_tanh_grad_accuracy)
{
    accuracy a = {"gelu_tanh_grad", eval_gelu_tanh_grad, ref_gelu_tanh_grad, 4.0, 1e30, 2.5e-6, -0x1p40, 0x1p40};
    check_accuracy(&a);
}

/* ---- special values, in every build ---- */

static void expect_at(const eval_fn *fn, const char *name, float x, float want)
{
    float in[FILO_V16], out[FILO_V16];
    for (int i = 0; i < FILO_V16; i++)
        in[i] = i == 5 ? x : 0.5f;
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (!isa_available(isa))
            continue;
        fn[isa](in, out, FILO_V16);
        int same = isnan(want) ? isnan(out[5]) : memcmp(&out[5], &want, 4) == 0;
        cr_assert(same, "%s(%a) = %a in build %d, want %a", name, (double)x, (double)out[5], isa, (double)want);
    }
}

Test(cpu_vec_math, special_values)
{
    float inf = INFINITY, nan = NAN;
    expect_at(eval_exp, "exp", inf, inf);
    expect_at(eval_exp, "exp", -inf, 0.0f);
    expect_at(eval_exp, "exp", nan, nan);
    expect_at(eval_exp, "exp", -nan, nan);
    expect_at(eval_exp, "exp", 0.0f, 1.0f);
    expect_at(eval_exp, "exp", -0.0f, 1.0f);
    expect_at(eval_exp, "exp", 0x1.62e430p+6f, inf); /* the first float above ln(2^128) */
    expect_at(eval_exp, "exp", 1000.0f, inf);
    expect_at(eval_exp, "exp", -104.0f, 0.0f);
    expect_at(eval_exp, "exp", -1000.0f, 0.0f);
    expect_at(eval_exp, "exp", -103.9f, 0x1p-149f);
    expect_at(eval_exp, "exp", 0x1p-30f, 1.0f);
    expect_at(eval_erf, "erf", 0.0f, 0.0f);
    expect_at(eval_erf, "erf", -0.0f, -0.0f);
    expect_at(eval_erf, "erf", inf, 1.0f);
    expect_at(eval_erf, "erf", -inf, -1.0f);
    expect_at(eval_erf, "erf", 12.0f, 1.0f);
    expect_at(eval_erf, "erf", nan, nan);
    expect_at(eval_erfc, "erfc", 0.0f, 1.0f);
    expect_at(eval_erfc, "erfc", inf, 0.0f);
    expect_at(eval_erfc, "erfc", -inf, 2.0f);
    expect_at(eval_erfc, "erfc", 11.0f, 0.0f);
    expect_at(eval_erfc, "erfc", nan, nan);
    expect_at(eval_gelu, "gelu", 0.0f, 0.0f);
    expect_at(eval_gelu, "gelu", -0.0f, -0.0f);
    expect_at(eval_gelu, "gelu", inf, inf);
    expect_at(eval_gelu, "gelu", -inf, -0.0f);
    expect_at(eval_gelu, "gelu", -40.0f, -0.0f);
    expect_at(eval_gelu, "gelu", 40.0f, 40.0f);
    expect_at(eval_gelu, "gelu", nan, nan);
    expect_at(eval_gelu_grad, "gelu_grad", 0.0f, 0.5f);
    expect_at(eval_gelu_grad, "gelu_grad", inf, 1.0f);
    expect_at(eval_gelu_grad, "gelu_grad", -inf, -0.0f); /* the limit from below */
    expect_at(eval_gelu_grad, "gelu_grad", 40.0f, 1.0f);
    expect_at(eval_gelu_grad, "gelu_grad", nan, nan);
    expect_at(eval_gelu_tanh, "gelu_tanh", 0.0f, 0.0f);
    expect_at(eval_gelu_tanh, "gelu_tanh", 30.0f, 30.0f);
    expect_at(eval_gelu_tanh, "gelu_tanh", nan, nan);
    expect_at(eval_gelu_tanh_grad, "gelu_tanh_grad", 0.0f, 0.5f);
    expect_at(eval_gelu_tanh_grad, "gelu_tanh_grad", nan, nan);
}

/* The tanh forms follow the scalar filo_gelu_f / filo_gelu_grad_f closely (exp within an ulp). */
Test(cpu_vec_math, gelu_tanh_matches_scalar_formula)
{
    float x[1024], y[1024], g[1024];
    for (int i = 0; i < 1024; i++)
        x[i] = -12.0f + 24.0f * (float)i / 1024.0f;
    eval_gelu_tanh[ISA_COUNT - 1](x, y, 1024);
    eval_gelu_tanh_grad[ISA_COUNT - 1](x, g, 1024);
    for (int i = 0; i < 1024; i++) {
        float h = x[i], u = 0.79788456080286535588f * (h + 0.044715f * h * h * h);
        float ys = h / (1.0f + expf(-2.0f * u)), s = 1.0f / (1.0f + expf(-2.0f * u));
        float du = 0.79788456080286535588f * (1.0f + 3.0f * 0.044715f * h * h);
        float gs = s + h * 2.0f * s * (1.0f - s) * du;
        cr_assert(fabsf(y[i] - ys) <= 1e-6f * fmaxf(1.0f, fabsf(ys)), "gelu_tanh(%a) = %a, scalar %a", (double)h,
                  (double)y[i], (double)ys);
        cr_assert(fabsf(g[i] - gs) <= 1e-6f, "gelu_tanh_grad(%a) = %a, scalar %a", (double)h, (double)g[i], (double)gs);
    }
}

/* ---- Philox ---- */

typedef void (*philox_fn)(uint64_t counter, uint64_t subsequence, uint64_t key, uint32_t *out);

#define PHILOX_ONE(NAME, ATTR)                                                                    \
    ATTR static void NAME##_blocks(uint64_t c, uint64_t s, uint64_t k, uint32_t *out)             \
    {                                                                                             \
        filo_v16u v[4];                                                                           \
        filo_v16_philox(c, s, k, v);                                                              \
        memcpy(out, v, sizeof v);                                                                 \
    }                                                                                             \
    ATTR static void NAME##_rounds(uint64_t c, uint64_t s, uint64_t k, uint32_t *out)             \
    {                                                                                             \
        filo_v16u v[4];                                                                           \
        filo_v16_philox_rounds(c, s, k, v);                                                       \
        memcpy(out, v, sizeof v);                                                                 \
    }                                                                                             \
    ATTR static void NAME##_elements(uint64_t c, uint64_t s, uint64_t k, uint32_t *out)           \
    {                                                                                             \
        filo_v16u v[4];                                                                           \
        filo_v16_philox_elements(c, s, k, v);                                                     \
        memcpy(out, v, sizeof v);                                                                 \
    }

#if ISA_COUNT == 3
PHILOX_ONE(philox_v4, __attribute__((target("arch=x86-64-v4"))))
PHILOX_ONE(philox_avx2, __attribute__((target("avx2"))))
PHILOX_ONE(philox_base, )
static const philox_fn philox_blocks[] = {philox_v4_blocks, philox_avx2_blocks, philox_base_blocks};
static const philox_fn philox_rounds[] = {philox_v4_rounds, philox_avx2_rounds, philox_base_rounds};
static const philox_fn philox_elements[] = {philox_v4_elements, philox_avx2_elements, philox_base_elements};
#else
PHILOX_ONE(philox_base, )
static const philox_fn philox_blocks[] = {philox_base_blocks};
static const philox_fn philox_rounds[] = {philox_base_rounds};
static const philox_fn philox_elements[] = {philox_base_elements};
#endif

static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void check_philox_at(uint64_t counter, uint64_t sub, uint64_t key)
{
    uint32_t want[16][4], got[64];
    for (int j = 0; j < 16; j++)
        filo_philox_block(counter + (uint64_t)j, sub, key, want[j]);
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (!isa_available(isa))
            continue;
        const philox_fn *fns[2] = {philox_blocks, philox_rounds};
        for (int f = 0; f < 2; f++) {
            fns[f][isa](counter, sub, key, got);
            for (int l = 0; l < 4; l++)
                for (int j = 0; j < 16; j++)
                    cr_assert_eq(got[16 * l + j], want[j][l],
                                 "build %d %s: counter %#llx + %d, sub %#llx, key %#llx, output %d: %#x, want %#x", isa,
                                 f ? "rounds" : "philox", (unsigned long long)counter, j, (unsigned long long)sub,
                                 (unsigned long long)key, l, got[16 * l + j], want[j][l]);
        }
        philox_elements[isa](counter, sub, key, got);
        cr_assert(memcmp(got, want, sizeof want) == 0, "build %d elements: counter %#llx, key %#llx", isa,
                  (unsigned long long)counter, (unsigned long long)key);
    }
}

Test(cpu_vec_math, philox_matches_scalar)
{
    /* counters whose low word wraps inside the 16 blocks, the 64-bit wrap, and random ones */
    const uint64_t edges[] = {0,           1,           15,          0xfffffff0ull, 0xfffffff1ull, 0xffffffffull,
                              0x1fffffff8ull, 0xffffffffffffffffull, 0xfffffffffffffff5ull, 0x7fffffffffffffffull};
    const uint64_t keys[] = {0, 1, 0xffffffffffffffffull, 0x299f31d0a4093822ull, 42};
    for (size_t c = 0; c < sizeof edges / sizeof edges[0]; c++)
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            check_philox_at(edges[c], 0, keys[k]);
            check_philox_at(edges[c], 0xffffffffffffffffull, keys[k]);
        }
    uint64_t s = 99;
    for (int i = 0; i < 3000; i++) {
        uint64_t counter = next_u64(&s), key = next_u64(&s), sub = i % 3 ? 0 : next_u64(&s);
        if (i % 2)
            counter &= 0xfffffffffull; /* the offsets of real runs are small */
        check_philox_at(counter, sub, key);
    }
}

/* Dropout masks over n elements from offset, 64 at a time with the lanes past n unused (the
 * kernels' tails), equal filo_dropout_keep for every element. */
Test(cpu_vec_math, dropout_masks_match_scalar_with_tails)
{
    const uint32_t thresholds[] = {0, 1, 0x19999999u, 0x80000000u, 0xfffffffeu, 0xffffffffu};
    const int64_t sizes[] = {1, 3, 15, 16, 63, 64, 65, 127, 1000, 4099};
    uint64_t s = 7;
    for (size_t t = 0; t < sizeof thresholds / sizeof thresholds[0]; t++)
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            uint64_t seed = next_u64(&s), offset = next_u64(&s) & 0xffffffffffull;
            int64_t n = sizes[z];
            for (int64_t i = 0; i < n; i += 64) {
                filo_v16u bits[4];
                filo_v16_philox_elements(offset + (uint64_t)i / 4, 0, seed, bits);
                for (int k = 0; k < 4; k++) {
                    filo_v16i keep = filo_v16_dropout_keep(bits[k], thresholds[t]);
                    for (int e = 0; e < 16 && i + 16 * k + e < n; e++) {
                        int want = filo_dropout_keep(seed, offset, (uint64_t)(i + 16 * k + e), thresholds[t]);
                        cr_assert(keep[e] == (want ? -1 : 0), "threshold %#x, element %lld: %d, want %d",
                                  thresholds[t], (long long)(i + 16 * k + e), keep[e], want);
                    }
                }
            }
        }
}

/* The keep test itself, on outputs around each threshold. */
Test(cpu_vec_math, dropout_keep_is_unsigned_compare)
{
    const uint32_t thresholds[] = {0, 1, 2, 0x7fffffffu, 0x80000000u, 0x80000001u, 0xfffffffeu, 0xffffffffu, 0x12345678u};
    for (size_t t = 0; t < sizeof thresholds / sizeof thresholds[0]; t++) {
        uint32_t th = thresholds[t];
        filo_v16u bits;
        const uint32_t around[16] = {0,          1,          th - 2,     th - 1,     th,         th + 1,
                                     th + 2,     0x7fffffffu, 0x80000000u, 0xffffffffu, 0xfffffffeu, th ^ 0x80000000u,
                                     th >> 1,    th << 1,    ~th,        0x55555555u};
        memcpy(&bits, around, sizeof around);
        filo_v16i keep = filo_v16_dropout_keep(bits, th);
        for (int e = 0; e < 16; e++)
            cr_assert_eq(keep[e] != 0, filo_dropout_keep_bits(around[e], th), "bits %#x, threshold %#x", around[e], th);
    }
}

/* ---- bf16 ---- */

Test(cpu_vec_math, bf16_load_store_match_element_h)
{
    uint16_t h[FILO_V16], back[FILO_V16];
    for (uint32_t base = 0; base < 65536; base += FILO_V16) {
        for (int i = 0; i < FILO_V16; i++)
            h[i] = (uint16_t)(base + (uint32_t)i);
        filo_v16f v = filo_v16_load_bf16(h);
        for (int i = 0; i < FILO_V16; i++) {
            float want = filo_el_bf16_to_f32(h[i]);
            cr_assert(memcmp(&v[i], &want, 4) == 0, "bf16 %#x loads as %a", h[i], (double)v[i]);
        }
    }
    uint64_t s = 3;
    for (int it = 0; it < 20000; it++) {
        float f[FILO_V16];
        for (int i = 0; i < FILO_V16; i++) {
            uint32_t b = (uint32_t)next_u64(&s);
            if (i == 0)
                b = (b & 0xffff0000u) | 0x8000u; /* a tie */
            if (i == 1)
                b |= 0x7f800001u; /* a NaN */
            if (i == 2)
                b = (b & 0x80000000u) | 0x7f7fffffu; /* rounds to infinity */
            memcpy(&f[i], &b, 4);
        }
        filo_v16_store_bf16(back, filo_v16_load(f));
        for (int i = 0; i < FILO_V16; i++)
            cr_assert_eq(back[i], filo_el_f32_to_bf16(f[i]), "%a stores as %#x, want %#x", (double)f[i], back[i],
                         filo_el_f32_to_bf16(f[i]));
    }
}
