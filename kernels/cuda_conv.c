/* CUDA 2-D convolution through cuDNN's legacy convolution API (host code: compiled only in CUDA
 * and emulated builds, linked to libcudnn by cmake/FiloCuda.cmake). NCHW tensors, KCRS filters,
 * cross-correlation, groups through cudnnSetConvolutionGroupCount.
 *
 * Precision: f32 computes in f32 with CUDNN_FMA_MATH (no TF32 tensor cores) unless FILO_TF32=1,
 * as filo_matmul does; bf16/f16 store in half precision and compute in f32 (tensor cores
 * allowed); f64 computes in f64.
 * Algorithms: cudnnGetConvolution*Algorithm_v7 (heuristics, no benchmarking run: it neither
 * synchronizes nor allocates), taking the first result that succeeds, is CUDNN_DETERMINISTIC
 * and whose workspace is at most WORKSPACE_CAP. For the backward that excludes
 * CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 and CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 / _ALGO_3 (they
 * accumulate with atomics); when the heuristics offer nothing usable the fallbacks are
 * IMPLICIT_GEMM (forward), BWD_DATA_ALGO_1 and BWD_FILTER_ALGO_1, all deterministic. So the
 * backward is bitwise reproducible run to run on one GPU and cuDNN version.
 * The workspace comes from filo's caching allocator on the current stream and is released right
 * after the enqueue (the allocator does not reuse it before the stream's work is done).
 * The bias and dbias are handled by kernels/conv.c.
 *
 * Under the CUDA emulator "device memory" is host memory and streams are synchronous, so the
 * convolution is the CPU one (kernels/cpu/conv.c) on the same pointers. */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "conv_backend.h"
#include "error.h"

#ifdef FILO_CUDA_EMULATION

#include <stdio.h>

#include <cuda_runtime.h>

#include "filo_emu.h"

/* A convolution recorded into a captured graph: the descriptor and pointers, run at replay. */
typedef struct conv_task_args {
    filo_conv2d_desc d;
    int backward;
    const void *a, *b, *c; /* forward: x, w, -; backward: dy, x, w */
    void *out0, *out1;     /* forward: y, -;  backward: dx, dw */
} conv_task_args;

static filo_status conv_run(const conv_task_args *t)
{
    if (t->backward)
        return filo_cpu_conv2d_backward(&t->d, t->a, t->b, t->c, t->out0, t->out1, NULL);
    return filo_cpu_conv2d_forward(&t->d, t->a, t->b, NULL, t->out0);
}

static void conv_task(void *arg)
{
    if (conv_run(arg) != FILO_OK)
        fprintf(stderr, "filo: emulated convolution in a graph replay failed: %s\n", filo_last_error());
}

/* At once, or recorded when the stream is being captured. */
static filo_status conv_enqueue(const conv_task_args *t, void *stream)
{
    enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing((cudaStream_t)stream, &capture) == cudaSuccess &&
        capture == cudaStreamCaptureStatusActive) {
        if (filo_emu_host_task(stream, conv_task, t, sizeof *t) != 0)
            return FILO_FAIL(FILO_ERR_CUDA, "recording an emulated convolution into the captured graph failed");
        return FILO_OK;
    }
    return conv_run(t);
}

filo_status filo_cuda_conv2d_forward(const filo_conv2d_desc *d, const void *x, const void *w, void *y,
                                     int device_index, void *stream)
{
    (void)device_index;
    conv_task_args t = {*d, 0, x, w, NULL, y, NULL};
    return conv_enqueue(&t, stream);
}

filo_status filo_cuda_conv2d_backward(const filo_conv2d_desc *d, const void *dy, const void *x, const void *w,
                                      void *dx, void *dw, int device_index, void *stream)
{
    (void)device_index;
    conv_task_args t = {*d, 1, dy, x, w, dx, dw};
    return conv_enqueue(&t, stream);
}

#else

#include <cudnn.h>

#define WORKSPACE_CAP ((size_t)1 << 30)
#define MAX_ALGOS 16

#define DNN_TRY(call)                                                                                     \
    do {                                                                                                  \
        cudnnStatus_t dnn_try_s_ = (call);                                                                \
        if (dnn_try_s_ != CUDNN_STATUS_SUCCESS) {                                                         \
            st = FILO_FAIL(FILO_ERR_CUDA, "%s failed: %s (%s convolution, x [%lld, %lld, %lld, %lld], "   \
                           "w [%lld, %lld, %lld, %lld])", #call, cudnnGetErrorString(dnn_try_s_),         \
                           filo_dtype_name(d->dtype), (long long)d->N, (long long)d->C, (long long)d->H,  \
                           (long long)d->W, (long long)d->K, (long long)(d->C / d->groups),               \
                           (long long)d->R, (long long)d->S);                                             \
            goto done;                                                                                    \
        }                                                                                                 \
    } while (0)

static int tf32_allowed(void)
{
    const char *v = getenv("FILO_TF32");
    return v && strcmp(v, "1") == 0;
}

/* The descriptors of one convolution. */
typedef struct dnn_conv {
    cudnnHandle_t handle;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnDataType_t type;
    int fma_only; /* f32 without TF32: every algorithm runs with CUDNN_FMA_MATH */
} dnn_conv;

static void dnn_conv_free(dnn_conv *c)
{
    if (c->x)
        cudnnDestroyTensorDescriptor(c->x);
    if (c->y)
        cudnnDestroyTensorDescriptor(c->y);
    if (c->w)
        cudnnDestroyFilterDescriptor(c->w);
    if (c->conv)
        cudnnDestroyConvolutionDescriptor(c->conv);
    memset(c, 0, sizeof *c);
}

static int fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

static filo_status dnn_conv_init(const filo_conv2d_desc *d, int device_index, void *stream, dnn_conv *c)
{
    filo_status st = FILO_OK;
    memset(c, 0, sizeof *c);
    cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    cudnnMathType_t math = CUDNN_TENSOR_OP_MATH;
    switch (d->dtype) {
    case FILO_F32:
        c->type = CUDNN_DATA_FLOAT;
        c->fma_only = !tf32_allowed();
        math = c->fma_only ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
        break;
    case FILO_BF16: c->type = CUDNN_DATA_BFLOAT16; break;
    case FILO_F16: c->type = CUDNN_DATA_HALF; break;
    case FILO_F64:
        c->type = CUDNN_DATA_DOUBLE;
        compute = CUDNN_DATA_DOUBLE;
        math = CUDNN_DEFAULT_MATH;
        break;
    default: return FILO_FAIL(FILO_ERR_DTYPE, "no cuDNN convolution for %s", filo_dtype_name(d->dtype));
    }
    if (!fits_int(d->N * d->C * d->H * d->W) || !fits_int(d->N * d->K * d->OH * d->OW) ||
        !fits_int(d->K * (d->C / d->groups) * d->R * d->S) || !fits_int(d->ph) || !fits_int(d->pw) ||
        !fits_int(d->sh) || !fits_int(d->sw) || !fits_int(d->dh) || !fits_int(d->dw))
        return FILO_FAIL(FILO_ERR_UNSUPPORTED, "cuDNN's convolution takes 32-bit sizes: x [%lld, %lld, %lld, %lld] or "
                         "y [%lld, %lld, %lld, %lld] has 2^31 elements or more",
                         (long long)d->N, (long long)d->C, (long long)d->H, (long long)d->W, (long long)d->N,
                         (long long)d->K, (long long)d->OH, (long long)d->OW);
    void *h;
    FILO_TRY(filo_cuda_dnn_handle(device_index, stream, &h));
    c->handle = (cudnnHandle_t)h;
    DNN_TRY(cudnnCreateTensorDescriptor(&c->x));
    DNN_TRY(cudnnCreateTensorDescriptor(&c->y));
    DNN_TRY(cudnnCreateFilterDescriptor(&c->w));
    DNN_TRY(cudnnCreateConvolutionDescriptor(&c->conv));
    DNN_TRY(cudnnSetTensor4dDescriptor(c->x, CUDNN_TENSOR_NCHW, c->type, (int)d->N, (int)d->C, (int)d->H, (int)d->W));
    DNN_TRY(cudnnSetTensor4dDescriptor(c->y, CUDNN_TENSOR_NCHW, c->type, (int)d->N, (int)d->K, (int)d->OH, (int)d->OW));
    DNN_TRY(cudnnSetFilter4dDescriptor(c->w, c->type, CUDNN_TENSOR_NCHW, (int)d->K, (int)(d->C / d->groups), (int)d->R,
                                       (int)d->S));
    DNN_TRY(cudnnSetConvolution2dDescriptor(c->conv, (int)d->ph, (int)d->pw, (int)d->sh, (int)d->sw, (int)d->dh,
                                            (int)d->dw, CUDNN_CROSS_CORRELATION, compute));
    DNN_TRY(cudnnSetConvolutionGroupCount(c->conv, (int)d->groups));
    DNN_TRY(cudnnSetConvolutionMathType(c->conv, math));
    int n, k, oh, ow;
    DNN_TRY(cudnnGetConvolution2dForwardOutputDim(c->conv, c->x, c->w, &n, &k, &oh, &ow));
    if (n != d->N || k != d->K || oh != d->OH || ow != d->OW)
        st = FILO_FAIL(FILO_ERR_INTERNAL, "cuDNN's output size [%d, %d, %d, %d] differs from filo's [%lld, %lld, %lld, %lld]",
                       n, k, oh, ow, (long long)d->N, (long long)d->K, (long long)d->OH, (long long)d->OW);
done:
    if (st != FILO_OK)
        dnn_conv_free(c);
    return st;
}

/* The math type an algorithm runs with: the one cuDNN reports, except FMA only for f32 without
 * TF32. */
static cudnnMathType_t algo_math(const dnn_conv *c, cudnnMathType_t reported)
{
    return c->fma_only ? CUDNN_FMA_MATH : reported;
}

/* Picks a deterministic algorithm of one kind, sets the descriptor's math type for it and
 * stores the algorithm and its workspace size. GET_V7: the kind's heuristics call, filling the
 * macro's `perf` array and `returned` count; WS_SIZE(algo, &bytes): its workspace query;
 * FALLBACK: the algorithm used when no result qualifies. */
#define PICK_ALGO(PERF_T, ALGO_T, GET_V7, WS_SIZE, FALLBACK, algo_out, ws_out)                         \
    do {                                                                                               \
        PERF_T perf[MAX_ALGOS];                                                                        \
        int returned = 0, found = 0;                                                                   \
        if (GET_V7 != CUDNN_STATUS_SUCCESS)                                                            \
            returned = 0;                                                                              \
        for (int i = 0; i < returned && !found; i++) {                                                 \
            ALGO_T a = perf[i].algo;                                                                   \
            size_t ws = 0;                                                                             \
            if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].determinism != CUDNN_DETERMINISTIC)  \
                continue;                                                                              \
            if (cudnnSetConvolutionMathType(c->conv, algo_math(c, perf[i].mathType)) != CUDNN_STATUS_SUCCESS) \
                continue;                                                                              \
            if (WS_SIZE(a, &ws) != CUDNN_STATUS_SUCCESS || ws > WORKSPACE_CAP)                         \
                continue;                                                                              \
            *(algo_out) = a;                                                                           \
            *(ws_out) = ws;                                                                            \
            found = 1;                                                                                 \
        }                                                                                              \
        if (!found) {                                                                                  \
            *(algo_out) = FALLBACK;                                                                    \
            DNN_TRY(cudnnSetConvolutionMathType(c->conv, algo_math(c, CUDNN_DEFAULT_MATH)));           \
            DNN_TRY(WS_SIZE(FALLBACK, ws_out));                                                        \
        }                                                                                              \
    } while (0)

#define FWD_WS(a, ws) cudnnGetConvolutionForwardWorkspaceSize(c->handle, c->x, c->w, c->conv, c->y, (a), (ws))
#define BWD_DATA_WS(a, ws) cudnnGetConvolutionBackwardDataWorkspaceSize(c->handle, c->w, c->y, c->conv, c->x, (a), (ws))
#define BWD_FILTER_WS(a, ws) \
    cudnnGetConvolutionBackwardFilterWorkspaceSize(c->handle, c->x, c->y, c->conv, c->w, (a), (ws))

static filo_status workspace(int device_index, size_t bytes, void **ws)
{
    *ws = NULL;
    if (bytes == 0)
        return FILO_OK;
    return filo_device_malloc(filo_cuda(device_index), bytes, NULL, ws);
}

static filo_status release(int device_index, void *ws, filo_status st)
{
    if (ws) {
        filo_status fs = filo_device_free(filo_cuda(device_index), ws);
        if (st == FILO_OK)
            st = fs;
    }
    return st;
}

filo_status filo_cuda_conv2d_forward(const filo_conv2d_desc *d, const void *x, const void *w, void *y,
                                     int device_index, void *stream)
{
    dnn_conv cc, *c = &cc;
    FILO_TRY(dnn_conv_init(d, device_index, stream, c));
    filo_status st = FILO_OK;
    void *ws = NULL;
    cudnnConvolutionFwdAlgo_t algo;
    size_t ws_bytes = 0;
    PICK_ALGO(cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t,
              cudnnGetConvolutionForwardAlgorithm_v7(c->handle, c->x, c->w, c->conv, c->y, MAX_ALGOS, &returned, perf),
              FWD_WS, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, &algo, &ws_bytes);
    st = workspace(device_index, ws_bytes, &ws);
    if (st != FILO_OK)
        goto done;
    {
        float one_f = 1.0f, zero_f = 0.0f;
        double one_d = 1.0, zero_d = 0.0;
        const void *one = d->dtype == FILO_F64 ? (const void *)&one_d : (const void *)&one_f;
        const void *zero = d->dtype == FILO_F64 ? (const void *)&zero_d : (const void *)&zero_f;
        DNN_TRY(cudnnConvolutionForward(c->handle, one, c->x, x, c->w, w, c->conv, algo, ws, ws_bytes, zero, c->y, y));
    }
done:
    st = release(device_index, ws, st);
    dnn_conv_free(c);
    return st;
}

filo_status filo_cuda_conv2d_backward(const filo_conv2d_desc *d, const void *dy, const void *x, const void *w,
                                      void *dx, void *dw, int device_index, void *stream)
{
    dnn_conv cc, *c = &cc;
    FILO_TRY(dnn_conv_init(d, device_index, stream, c));
    filo_status st = FILO_OK;
    void *ws = NULL;
    float one_f = 1.0f, zero_f = 0.0f;
    double one_d = 1.0, zero_d = 0.0;
    const void *one = d->dtype == FILO_F64 ? (const void *)&one_d : (const void *)&one_f;
    const void *zero = d->dtype == FILO_F64 ? (const void *)&zero_d : (const void *)&zero_f;
    if (dx) {
        cudnnConvolutionBwdDataAlgo_t algo;
        size_t ws_bytes = 0;
        PICK_ALGO(cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t,
                  cudnnGetConvolutionBackwardDataAlgorithm_v7(c->handle, c->w, c->y, c->conv, c->x, MAX_ALGOS,
                                                              &returned, perf),
                  BWD_DATA_WS, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, &algo, &ws_bytes);
        st = workspace(device_index, ws_bytes, &ws);
        if (st != FILO_OK)
            goto done;
        DNN_TRY(cudnnConvolutionBackwardData(c->handle, one, c->w, w, c->y, dy, c->conv, algo, ws, ws_bytes, zero,
                                             c->x, dx));
        st = release(device_index, ws, st);
        ws = NULL;
        if (st != FILO_OK)
            goto done;
    }
    if (dw) {
        cudnnConvolutionBwdFilterAlgo_t algo;
        size_t ws_bytes = 0;
        PICK_ALGO(cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t,
                  cudnnGetConvolutionBackwardFilterAlgorithm_v7(c->handle, c->x, c->y, c->conv, c->w, MAX_ALGOS,
                                                                &returned, perf),
                  BWD_FILTER_WS, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, &algo, &ws_bytes);
        st = workspace(device_index, ws_bytes, &ws);
        if (st != FILO_OK)
            goto done;
        DNN_TRY(cudnnConvolutionBackwardFilter(c->handle, one, c->x, x, c->y, dy, c->conv, algo, ws, ws_bytes, zero,
                                               c->w, dw));
    }
done:
    st = release(device_index, ws, st);
    dnn_conv_free(c);
    return st;
}

#endif
