/* filo_matmul: argument checks, each operand's layout from its strides (a transposed view is a
 * transpose flag, not a copy), output allocation, the dispatch to kernels/cpu/matmul.c or
 * kernels/cuda_matmul.c, and the GELU epilogue. GELU is applied by the elementwise op (exact erf
 * form) to the bias-added GEMM result, which is kept as gelu_input: cuBLASLt's fused GELU is the
 * tanh approximation and wants the aux buffer's leading dim to be a multiple of 8, so fusing it
 * would give different numbers on the two backends and fail on odd N. */
#include "filo/matmul.h"

#include "backend.h"
#include "error.h"
#include "filo/elementwise.h"
#include "matmul_backend.h"

#define DESC_LEN 200
static const char OP[] = "filo_matmul";

static int is_mm_dtype(filo_dtype t) { return t == FILO_F32 || t == FILO_F64 || t == FILO_BF16 || t == FILO_F16; }

static filo_status check_args(const filo_tensor *a, const filo_tensor *b, int trans_a, int trans_b,
                              const filo_tensor *bias, filo_matmul_epilogue ep, filo_tensor **out,
                              filo_tensor **gelu_input, int64_t *m, int64_t *k, int64_t *n)
{
    char da[DESC_LEN], db[DESC_LEN], dc[DESC_LEN];
    if (!a || !b || !out)
        return filo_error_set(FILO_ERR_INVALID_ARG, OP, "a, b and out must not be NULL");
    if (ep != FILO_MATMUL_EPILOGUE_NONE && ep != FILO_MATMUL_EPILOGUE_BIAS && ep != FILO_MATMUL_EPILOGUE_BIAS_GELU)
        return filo_error_set(FILO_ERR_INVALID_ARG, OP, "unknown epilogue %d", (int)ep);
    if ((ep == FILO_MATMUL_EPILOGUE_NONE) != (bias == NULL))
        return filo_error_set(FILO_ERR_INVALID_ARG, OP, "a bias is %s with epilogue %d",
                              bias ? "given but unused" : "required", (int)ep);
    if ((ep == FILO_MATMUL_EPILOGUE_BIAS_GELU) != (gelu_input != NULL))
        return filo_error_set(FILO_ERR_INVALID_ARG, OP, "gelu_input must be %s with epilogue %d",
                              gelu_input ? "NULL" : "given", (int)ep);
    filo_tensor_describe(a, da, sizeof da);
    filo_tensor_describe(b, db, sizeof db);
    if (!is_mm_dtype(a->dtype) || a->dtype != b->dtype)
        return filo_error_set(FILO_ERR_DTYPE, OP, "a %s and b %s must have one dtype of f32, f64, bf16, f16", da, db);
    if (!filo_device_equal(a->device, b->device))
        return filo_error_set(FILO_ERR_DEVICE, OP, "a %s and b %s are on different devices", da, db);
    if (a->ndim < 2 || a->ndim > 3 || b->ndim < 2 || b->ndim > a->ndim)
        return filo_error_set(FILO_ERR_SHAPE, OP,
                              "ranks do not fit: a %s and b %s (a [M,K] or [B,M,K]; b [K,N], or [B,K,N] with a 3-D a)",
                              da, db);
    int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int64_t br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    *m = trans_a ? ac : ar;
    *k = trans_a ? ar : ac;
    int64_t kb = trans_b ? bc : br;
    *n = trans_b ? br : bc;
    if (*k != kb)
        return filo_error_set(FILO_ERR_SHAPE, OP, "K mismatch: op(a) of %s (trans_a=%d) has K=%lld, op(b) of %s (trans_b=%d) has K=%lld",
                              da, trans_a, (long long)*k, db, trans_b, (long long)kb);
    if (*k == 0)
        return filo_error_set(FILO_ERR_SHAPE, OP, "K must be >= 1: a %s, b %s", da, db);
    if (b->ndim == 3 && b->shape[0] != a->shape[0])
        return filo_error_set(FILO_ERR_SHAPE, OP, "batch mismatch: a %s, b %s", da, db);
    if (bias) {
        filo_tensor_describe(bias, dc, sizeof dc);
        if (bias->ndim != 1 || bias->shape[0] != *n)
            return filo_error_set(FILO_ERR_SHAPE, OP, "bias %s must have shape [%lld] (N of a %s, b %s)", dc,
                                  (long long)*n, da, db);
        if (bias->dtype != a->dtype)
            return filo_error_set(FILO_ERR_DTYPE, OP, "bias %s must have the dtype of a %s", dc, da);
        if (!filo_device_equal(bias->device, a->device))
            return filo_error_set(FILO_ERR_DEVICE, OP, "bias %s is not on the device of a %s", dc, da);
    }
    return FILO_OK;
}

/* op(t) as a GEMM operand read in place when its last two dims are row- or column-major with
 * non-overlapping matrices; else *copy receives a contiguous copy that the operand reads.
 * `may_share`: a zero batch stride (one matrix for every batch) is allowed (b only). */
static filo_status make_operand(const filo_tensor *t, int trans, int may_share, filo_matmul_operand *o,
                                filo_tensor **copy)
{
    *copy = NULL;
    int nd = t->ndim;
    int64_t R = t->shape[nd - 2], C = t->shape[nd - 1], sr = t->strides[nd - 2], sc = t->strides[nd - 1];
    int col = 0, ok = 1;
    int64_t ld = 0;
    if ((C == 1 || sc == 1) && (R == 1 || sr >= C)) {
        ld = R == 1 ? C : sr;
    } else if ((R == 1 || sr == 1) && (C == 1 || sc >= R)) {
        col = 1;
        ld = C == 1 ? R : sc;
    } else {
        ok = 0;
    }
    int64_t bs = 0;
    if (ok && nd == 3 && t->shape[0] > 1) {
        bs = t->strides[0];
        ok = (bs == 0 && may_share) || bs >= (col ? C : R) * ld;
    }
    if (!ok) {
        FILO_TRY(filo_tensor_contiguous(t, copy));
        col = 0;
        ld = C;
        bs = nd == 3 && t->shape[0] > 1 ? R * C : 0;
        t = *copy;
    }
    o->data = filo_tensor_data(t);
    o->trans = trans ^ col;
    o->ld = ld > 0 ? ld : 1;
    o->batch_stride = bs;
    return FILO_OK;
}

static filo_status run_gemm(const filo_matmul_desc *d, filo_device device)
{
    if (device.type == FILO_DEVICE_CPU)
        return filo_cpu_matmul(d);
    filo_stream *s;
    FILO_TRY(filo_stream_current(device, &s));
    return FILO_CUDA_CALL(filo_cuda_matmul(d, device.index, s->native));
}

/* pre = op(a) op(b) (+ bias), allocated here. */
static filo_status gemm(const filo_tensor *a, const filo_tensor *b, int trans_a, int trans_b, const filo_tensor *bias,
                        int64_t m, int64_t k, int64_t n, filo_tensor **pre)
{
    int64_t batch = a->ndim == 3 ? a->shape[0] : 1;
    int64_t shape[3] = {batch, m, n};
    int nd = a->ndim;
    filo_tensor *c = NULL, *ca = NULL, *cb = NULL, *cbias = NULL;
    FILO_TRY(filo_tensor_empty(a->device, a->dtype, nd, nd == 3 ? shape : shape + 1, &c));
    if (batch == 0 || m == 0 || n == 0) {
        *pre = c;
        return FILO_OK;
    }
    /* cuBLASLt has no bias epilogue for f64: the bias is added by the elementwise op after. */
    int late_bias = bias && a->dtype == FILO_F64 && a->device.type == FILO_DEVICE_CUDA;
    filo_matmul_desc d = {.dtype = a->dtype, .batch = batch, .m = m, .n = n, .k = k, .c = filo_tensor_data(c)};
    filo_status st = make_operand(a, trans_a, 0, &d.a, &ca);
    if (st == FILO_OK)
        st = make_operand(b, trans_b, 1, &d.b, &cb);
    if (st == FILO_OK && bias && !late_bias) {
        st = filo_tensor_contiguous(bias, &cbias);
        if (st == FILO_OK)
            d.bias = filo_tensor_data(cbias);
    }
    if (st == FILO_OK)
        st = run_gemm(&d, a->device);
    filo_tensor_free(ca);
    filo_tensor_free(cb);
    filo_tensor_free(cbias);
    if (st == FILO_OK && late_bias) {
        filo_tensor *sum = NULL;
        st = filo_binary(FILO_BINARY_ADD, c, bias, &sum);
        filo_tensor_free(c);
        c = sum;
    }
    if (st != FILO_OK) {
        filo_tensor_free(c);
        return filo_error_wrap(st, OP);
    }
    *pre = c;
    return FILO_OK;
}

filo_status filo_matmul(const filo_tensor *a, const filo_tensor *b, int trans_a, int trans_b,
                        const filo_tensor *bias, filo_matmul_epilogue ep, filo_tensor **out,
                        filo_tensor **gelu_input)
{
    int64_t m, k, n;
    FILO_TRY(check_args(a, b, trans_a, trans_b, bias, ep, out, gelu_input, &m, &k, &n));
    filo_tensor *pre = NULL;
    FILO_TRY(gemm(a, b, trans_a != 0, trans_b != 0, bias, m, k, n, &pre));
    if (ep != FILO_MATMUL_EPILOGUE_BIAS_GELU) {
        *out = pre;
        return FILO_OK;
    }
    filo_status st = filo_unary(FILO_UNARY_GELU, pre, out);
    if (st != FILO_OK) {
        filo_tensor_free(pre);
        return filo_error_wrap(st, OP);
    }
    *gelu_input = pre;
    return FILO_OK;
}
