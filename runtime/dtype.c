/* dtype names, sizes and host conversions. */
#include <math.h>
#include <string.h>

#include "element.h"
#include "error.h"
#include "filo/dtype.h"

static const char *const names[FILO_DTYPE_COUNT] = {"f64", "f32", "bf16", "f16", "i64", "i32", "u8"};

int filo_dtype_valid(filo_dtype dtype) { return (unsigned)dtype < FILO_DTYPE_COUNT; }

size_t filo_dtype_size(filo_dtype dtype) { return filo_dtype_valid(dtype) ? filo_el_size(dtype) : 0; }

const char *filo_dtype_name(filo_dtype dtype) { return filo_dtype_valid(dtype) ? names[dtype] : "invalid"; }

int filo_dtype_is_float(filo_dtype dtype)
{
    return dtype == FILO_F64 || dtype == FILO_F32 || dtype == FILO_BF16 || dtype == FILO_F16;
}

filo_status filo_dtype_parse(const char *name, filo_dtype *out)
{
    for (int i = 0; name && i < FILO_DTYPE_COUNT; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (filo_dtype)i;
            return FILO_OK;
        }
    }
    return FILO_FAIL(FILO_ERR_DTYPE, "'%s' is not a dtype (f64, f32, bf16, f16, i64, i32, u8)",
                     name ? name : "(null)");
}

uint16_t filo_f32_to_bf16(float x) { return filo_el_f32_to_bf16(x); }
float filo_bf16_to_f32(uint16_t x) { return filo_el_bf16_to_f32(x); }
uint16_t filo_f32_to_f16(float x) { return filo_el_f32_to_f16(x); }
float filo_f16_to_f32(uint16_t x) { return filo_el_f16_to_f32(x); }

/* The closed range of doubles that a C cast to `t` handles without undefined behaviour. */
static int fits_integer(double v, filo_dtype t)
{
    switch (t) {
    case FILO_I64: return v > -9223372036854777856.0 && v < 9223372036854775808.0;
    case FILO_I32: return v > -2147483649.0 && v < 2147483648.0;
    case FILO_U8: return v > -1.0 && v < 256.0;
    default: return 1;
    }
}

filo_status filo_convert(const void *src, filo_dtype src_dtype, void *dst, filo_dtype dst_dtype, size_t n)
{
    if (!filo_dtype_valid(src_dtype) || !filo_dtype_valid(dst_dtype))
        return FILO_FAIL(FILO_ERR_DTYPE, "invalid dtype (%d -> %d)", (int)src_dtype, (int)dst_dtype);
    if (n > 0 && (!src || !dst))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "src and dst must not be NULL");
    size_t ss = filo_el_size(src_dtype), ds = filo_el_size(dst_dtype);
    if (src_dtype == dst_dtype) {
        memmove(dst, src, n * ss);
        return FILO_OK;
    }
    int to_int_from_float = filo_el_is_int(dst_dtype) && !filo_el_is_int(src_dtype);
    for (size_t i = 0; i < n; i++) {
        const char *s = (const char *)src + i * ss;
        if (to_int_from_float) {
            double v = filo_el_load_f(s, src_dtype);
            if (isnan(v) || !fits_integer(v, dst_dtype))
                return FILO_FAIL(FILO_ERR_INVALID_ARG, "element %zu (%g) does not fit in %s", i, v,
                                 filo_dtype_name(dst_dtype));
        }
        filo_el_convert((char *)dst + i * ds, dst_dtype, s, src_dtype);
    }
    return FILO_OK;
}
