/* CUDA GEMM through cuBLASLt (host code: compiled only in CUDA builds, linked to libcublasLt).
 * filo's matrices are row-major, cuBLASLt's column-major: a row-major m x n C is a column-major
 * n x m C^T, so the call computes C^T = op(B)^T op(A)^T with B in cuBLASLt's "A" slot. bf16/f16
 * and f32 accumulate in f32 (TF32 tensor cores only when FILO_TF32=1 opts in); f64 in f64, where
 * cuBLASLt has no bias epilogue (kernels/matmul.c adds the bias afterwards for f64).
 * Under the CUDA emulator "device memory" is host memory and streams are synchronous, so the
 * GEMM is the CPU one (kernels/cpu/matmul.c) on the same pointers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "matmul_backend.h"

#ifdef FILO_CUDA_EMULATION

#include <cuda_runtime.h>

#include "filo_emu.h"

/* A GEMM recorded into a captured graph runs at replay, where no caller sees a status. */
static void matmul_task(void *arg)
{
    if (filo_cpu_matmul(arg) != FILO_OK)
        fprintf(stderr, "filo: emulated GEMM in a graph replay failed: %s\n", filo_last_error());
}

filo_status filo_cuda_matmul(const filo_matmul_desc *d, int device_index, void *stream)
{
    (void)device_index;
    enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing((cudaStream_t)stream, &capture) == cudaSuccess &&
        capture == cudaStreamCaptureStatusActive) {
        if (filo_emu_host_task(stream, matmul_task, d, sizeof *d) != 0)
            return FILO_FAIL(FILO_ERR_CUDA, "recording an emulated GEMM into the captured graph failed");
        return FILO_OK;
    }
    return filo_cpu_matmul(d);
}

#else

#include <cublasLt.h>

/* cuBLASLt's recommended workspace for Hopper; smaller GPUs just use part of it. */
#define WORKSPACE_BYTES ((size_t)32 << 20)

#define LT_TRY(call)                                                                                  \
    do {                                                                                              \
        cublasStatus_t lt_try_s_ = (call);                                                            \
        if (lt_try_s_ != CUBLAS_STATUS_SUCCESS) {                                                     \
            st = FILO_FAIL(FILO_ERR_CUDA, "%s failed with cuBLAS status %d (%dx%dx%d %s GEMM)", #call, \
                           (int)lt_try_s_, (int)d->m, (int)d->k, (int)d->n, filo_dtype_name(d->dtype)); \
            goto done;                                                                                \
        }                                                                                             \
    } while (0)

static int tf32_allowed(void)
{
    const char *v = getenv("FILO_TF32");
    return v && strcmp(v, "1") == 0;
}

/* The stored matrix of an operand in column-major terms: a row-major-indexed (trans = 0) logical
 * rows x cols matrix is the column-major cols x rows matrix op^T; trans = 1 is the column-major
 * rows x cols matrix itself. `want_t`: whether cuBLASLt must transpose what is stored. */
static cublasStatus_t operand_layout(cublasLtMatrixLayout_t *lay, cudaDataType_t type, const filo_matmul_operand *o,
                                     int64_t rows, int64_t cols, int64_t batch, cublasOperation_t *op)
{
    *op = o->trans ? CUBLAS_OP_T : CUBLAS_OP_N;
    uint64_t r = (uint64_t)(o->trans ? rows : cols), c = (uint64_t)(o->trans ? cols : rows);
    cublasStatus_t s = cublasLtMatrixLayoutCreate(lay, type, r, c, o->ld);
    if (s != CUBLAS_STATUS_SUCCESS)
        return s;
    int32_t count = (int32_t)batch;
    int64_t stride = o->batch_stride;
    s = cublasLtMatrixLayoutSetAttribute(*lay, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutSetAttribute(*lay, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                             sizeof stride);
    return s;
}

filo_status filo_cuda_matmul(const filo_matmul_desc *d, int device_index, void *stream)
{
    cudaDataType_t type;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    cudaDataType_t scale = CUDA_R_32F;
    switch (d->dtype) {
    case FILO_F32:
        type = CUDA_R_32F;
        if (tf32_allowed())
            compute = CUBLAS_COMPUTE_32F_FAST_TF32;
        break;
    case FILO_BF16: type = CUDA_R_16BF; break;
    case FILO_F16: type = CUDA_R_16F; break;
    case FILO_F64:
        type = CUDA_R_64F;
        compute = CUBLAS_COMPUTE_64F;
        scale = CUDA_R_64F;
        break;
    default: return FILO_FAIL(FILO_ERR_DTYPE, "no GEMM for %s", filo_dtype_name(d->dtype));
    }
    if (d->dtype == FILO_F64 && d->bias)
        return FILO_FAIL(FILO_ERR_UNSUPPORTED, "cuBLASLt has no bias epilogue for f64 (add the bias separately)");

    void *handle_ptr;
    FILO_TRY(filo_cuda_blaslt_handle(device_index, &handle_ptr));
    cublasLtHandle_t handle = (cublasLtHandle_t)handle_ptr;
    filo_device device = filo_cuda(device_index);

    filo_status st = FILO_OK;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t lb = NULL, la = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    void *workspace = NULL;

    LT_TRY(cublasLtMatmulDescCreate(&op, compute, scale));
    /* cuBLASLt's A slot holds filo's B: D (n x m) = op(B^T) op(A^T). */
    cublasOperation_t op_b, op_a;
    LT_TRY(operand_layout(&lb, type, &d->b, d->k, d->n, d->batch, &op_b));
    LT_TRY(operand_layout(&la, type, &d->a, d->m, d->k, d->batch, &op_a));
    LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &op_b, sizeof op_b));
    LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &op_a, sizeof op_a));
    filo_matmul_operand c_operand = {d->c, 0, d->n, d->m * d->n};
    cublasOperation_t unused_op;
    LT_TRY(operand_layout(&lc, type, &c_operand, d->m, d->n, d->batch, &unused_op));
    if (d->bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
        LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &d->bias, sizeof d->bias));
        LT_TRY(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &type, sizeof type));
    }

    size_t ws_bytes = WORKSPACE_BYTES;
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws_max = ws_bytes;
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_max,
                                                sizeof ws_max));
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    LT_TRY(cublasLtMatmulAlgoGetHeuristic(handle, op, lb, la, lc, lc, pref, 1, &result, &found));
    if (found == 0) {
        st = FILO_FAIL(FILO_ERR_UNSUPPORTED, "cublasLtMatmulAlgoGetHeuristic found no algorithm for a %lldx%lldx%lld %s GEMM",
                       (long long)d->m, (long long)d->k, (long long)d->n, filo_dtype_name(d->dtype));
        goto done;
    }
    ws_bytes = result.workspaceSize;
    if (ws_bytes > 0) {
        st = filo_device_malloc(device, ws_bytes, NULL, &workspace);
        if (st != FILO_OK)
            goto done;
    }

    float alpha_f = 1.0f, beta_f = 0.0f;
    double alpha_d = 1.0, beta_d = 0.0;
    const void *alpha = d->dtype == FILO_F64 ? (const void *)&alpha_d : (const void *)&alpha_f;
    const void *beta = d->dtype == FILO_F64 ? (const void *)&beta_d : (const void *)&beta_f;
    LT_TRY(cublasLtMatmul(handle, op, alpha, d->b.data, lb, d->a.data, la, beta, d->c, lc, d->c, lc, &result.algo,
                          workspace, ws_bytes, (cudaStream_t)stream));

done:
    /* The caching allocator keeps the block from reuse until the stream's work is done. */
    if (workspace) {
        filo_status fs = filo_device_free(device, workspace);
        if (st == FILO_OK)
            st = fs;
    }
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (lc)
        cublasLtMatrixLayoutDestroy(lc);
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (lb)
        cublasLtMatrixLayoutDestroy(lb);
    if (op)
        cublasLtMatmulDescDestroy(op);
    return st;
}

#endif
