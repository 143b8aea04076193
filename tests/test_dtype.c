/* dtype sizes, names and conversions against exact references. */
#include <math.h>
#include <string.h>

#include "filo_test.h"

Test(dtype, sizes_and_names)
{
    size_t sizes[] = {8, 4, 2, 2, 8, 4, 1};
    for (int t = 0; t < FILO_DTYPE_COUNT; t++) {
        cr_assert_eq(filo_dtype_size((filo_dtype)t), sizes[t]);
        filo_dtype back;
        FILO_CHECK(filo_dtype_parse(filo_dtype_name((filo_dtype)t), &back));
        cr_assert_eq(back, t);
    }
    cr_assert_eq(filo_dtype_size((filo_dtype)99), 0);
    filo_dtype d;
    FILO_CHECK_FAILS(filo_dtype_parse("f8", &d), FILO_ERR_DTYPE, "'f8' is not a dtype");
}

/* bf16 is the top half of f32 rounded to nearest even: check every bf16 value round-trips and
 * that midpoints go to the even neighbour. */
Test(dtype, bf16_exhaustive_roundtrip_and_ties)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = filo_bf16_to_f32((uint16_t)h);
        if (isnan(f)) {
            cr_assert(isnan(filo_bf16_to_f32(filo_f32_to_bf16(f))));
            continue;
        }
        cr_assert_eq(filo_f32_to_bf16(f), h, "bf16 0x%04x", h);
    }
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to 1 (even mantissa). */
    cr_assert_eq(filo_f32_to_bf16(1.0f + 0x1p-8f), filo_f32_to_bf16(1.0f));
    cr_assert_eq(filo_f32_to_bf16(1.0f + 0x1p-7f + 0x1p-8f), filo_f32_to_bf16(1.0f + 0x1p-6f));
}

/* f16: every value round-trips; conversion of arbitrary floats equals the nearest f16 found by
 * searching all 65536 values (ties to even). */
Test(dtype, f16_exhaustive_against_search)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = filo_f16_to_f32((uint16_t)h);
        if (isnan(f))
            continue;
        cr_assert_eq(filo_f32_to_f16(f), h, "f16 0x%04x (%g)", h, f);
    }
    float probes[] = {0.1f, -3.14159f, 65504.f, 65519.f, 65520.f, 1e-8f, 3e-8f, 6.0e-5f, 6.2e-5f, -1e-6f, 1e10f, 2.98e-8f};
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        double x = probes[i], best_err = INFINITY;
        uint16_t best = 0;
        for (uint32_t h = 0; h < 0x10000; h++) {
            float f = filo_f16_to_f32((uint16_t)h);
            if (isnan(f) || (!!signbit(f) != !!signbit(x) && f != 0))
                continue;
            double err = fabs((double)f - x);
            if (err < best_err || (err == best_err && (h & 1) == 0 && f != 0)) {
                best_err = err;
                best = (uint16_t)h;
            }
        }
        if (fabs(x) >= 65520.0)
            best = signbit(x) ? 0xfc00 : 0x7c00;
        float got = filo_f16_to_f32(filo_f32_to_f16((float)x)), want = filo_f16_to_f32(best);
        cr_assert_eq(got, want, "f16(%g) = %g, want %g", x, got, want);
    }
}

Test(dtype, convert_between_types)
{
    double src[5] = {1.5, -2.25, 3.0, 1e6, -0.0};
    float f[5];
    FILO_CHECK(filo_convert(src, FILO_F64, f, FILO_F32, 5));
    cr_assert_eq(f[1], -2.25f);
    int32_t i[5];
    FILO_CHECK(filo_convert(src, FILO_F64, i, FILO_I32, 5));
    cr_assert_eq(i[0], 1);
    cr_assert_eq(i[1], -2);
    int64_t big[2] = {(int64_t)1 << 62, -7};
    int64_t back[2];
    int32_t small[2];
    FILO_CHECK(filo_convert(big, FILO_I64, back, FILO_I64, 2));
    cr_assert_eq(back[0], (int64_t)1 << 62);
    FILO_CHECK(filo_convert(big + 1, FILO_I64, small, FILO_I32, 1));
    cr_assert_eq(small[0], -7);
    double bad[1] = {NAN};
    uint8_t u[1];
    FILO_CHECK_FAILS(filo_convert(bad, FILO_F64, u, FILO_U8, 1), FILO_ERR_INVALID_ARG, "does not fit in u8");
    double huge[1] = {1e30};
    FILO_CHECK_FAILS(filo_convert(huge, FILO_F64, i, FILO_I32, 1), FILO_ERR_INVALID_ARG, "does not fit in i32");
    FILO_CHECK_FAILS(filo_convert(src, (filo_dtype)42, f, FILO_F32, 1), FILO_ERR_DTYPE, "invalid dtype");
}
