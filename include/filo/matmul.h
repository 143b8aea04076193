/* Matrix multiply with a fused bias / bias+GELU epilogue, the GEMM behind Linear layers and
 * attention.
 *
 *   C = op(A) . op(B) (+ bias) (-> GELU, erf form),  op(X) = X or X^T (the last two dims)
 *
 * Shapes: a [M,K] with b [K,N] -> [M,N], or a [B,M,K] with b [B,K,N] or b [K,N] (shared by every
 * batch) -> [B,M,N] (shapes before op(); K >= 1). dtypes: f32, f64, bf16, f16, all inputs and
 * the bias of one dtype; bf16/f16 accumulate in f32 and round once at the store. Transposed or
 * strided views whose last or second-last stride is 1 are read in place, others are copied.
 * The output is on the inputs' device, computed on its current stream. */
#ifndef FILO_MATMUL_H
#define FILO_MATMUL_H

#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_matmul_epilogue {
    FILO_MATMUL_EPILOGUE_NONE = 0,
    FILO_MATMUL_EPILOGUE_BIAS,      /* C + bias, bias [N] broadcast over the rows */
    FILO_MATMUL_EPILOGUE_BIAS_GELU, /* GELU(C + bias); the pre-GELU value goes to *gelu_input */
} filo_matmul_epilogue;

/* bias: NULL with EPILOGUE_NONE, else a [N] tensor. gelu_input: NULL unless EPILOGUE_BIAS_GELU,
 * then it receives C + bias (the output's shape and dtype), which the GELU backward needs. */
filo_status filo_matmul(const filo_tensor *a, const filo_tensor *b, int trans_a, int trans_b,
                        const filo_tensor *bias, filo_matmul_epilogue ep, filo_tensor **out,
                        filo_tensor **gelu_input);

#ifdef __cplusplus
}
#endif
#endif
