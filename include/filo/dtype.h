/* Element types and conversions between them. */
#ifndef FILO_DTYPE_H
#define FILO_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_dtype {
    FILO_F64 = 0,
    FILO_F32,
    FILO_BF16,
    FILO_F16,
    FILO_I64,
    FILO_I32,
    FILO_U8,
    FILO_DTYPE_COUNT
} filo_dtype;

size_t filo_dtype_size(filo_dtype dtype);        /* 0 for an invalid dtype */
const char *filo_dtype_name(filo_dtype dtype);   /* "f32"...; "invalid" otherwise */
int filo_dtype_is_float(filo_dtype dtype);
int filo_dtype_valid(filo_dtype dtype);
filo_status filo_dtype_parse(const char *name, filo_dtype *out);

/* Round-to-nearest-even conversions, NaN preserved, as CUDA's __float2bfloat16_rn / __float2half_rn. */
uint16_t filo_f32_to_bf16(float x);
float filo_bf16_to_f32(uint16_t x);
uint16_t filo_f32_to_f16(float x);
float filo_f16_to_f32(uint16_t x);

/* Converts n contiguous host elements. Float → integer truncates toward zero like a C cast;
 * NaN or out-of-range values going to an integer type give FILO_ERR_INVALID_ARG. */
filo_status filo_convert(const void *src, filo_dtype src_dtype, void *dst, filo_dtype dst_dtype, size_t n);

#ifdef __cplusplus
}
#endif
#endif
