/* The CUDA backend of the runtime: devices, memory, streams, events and library handles over
 * the CUDA runtime API. The test build links the same file against the CUDA emulator, whose
 * cuBLASLt/cuDNN work is routed to CPU code, so no library handle is created there. */
#include "backend.h"

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifndef FILO_CUDA_EMULATION
#include <cublasLt.h>
#include <cudnn.h>
#endif

#include "error.h"

static filo_status cuda_fail(cudaError_t err, const char *call, const char *where)
{
    return filo_error_set(FILO_ERR_CUDA, where, "%s failed: %s (%s)", call, cudaGetErrorString(err),
                          cudaGetErrorName(err));
}

/* Checks a CUDA runtime call, naming the call and the function it was made from. */
#define CUDA_TRY(call)                                      \
    do {                                                    \
        cudaError_t cuda_try_e_ = (call);                   \
        if (cuda_try_e_ != cudaSuccess)                     \
            return cuda_fail(cuda_try_e_, #call, __func__); \
    } while (0)

/* Runs the call with `index` as the current device. */
#define CUDA_ON(index) CUDA_TRY(cudaSetDevice(index))

static pthread_once_t count_once = PTHREAD_ONCE_INIT;
static int device_count;

static void count_devices(void)
{
    int n = 0;
    /* No driver or no GPU is a normal situation: it means zero devices. */
    if (cudaGetDeviceCount(&n) != cudaSuccess)
        n = 0;
    cudaGetLastError();
    device_count = n > FILO_MAX_CUDA_DEVICES ? FILO_MAX_CUDA_DEVICES : n;
}

int filo_cuda_backend_count(void)
{
    pthread_once(&count_once, count_devices);
    return device_count;
}

int filo_cuda_backend_emulated(void)
{
#ifdef FILO_CUDA_EMULATION
    return 1;
#else
    return 0;
#endif
}

filo_status filo_cuda_backend_info(int index, filo_device_info *out)
{
    struct cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, index));
    snprintf(out->name, sizeof out->name, "%s", prop.name);
    out->total_memory = prop.totalGlobalMem;
    out->multiprocessors = prop.multiProcessorCount;
    out->compute_major = prop.major;
    out->compute_minor = prop.minor;
    out->emulated = filo_cuda_backend_emulated();
    return FILO_OK;
}

filo_status filo_cuda_backend_synchronize(int index)
{
    CUDA_ON(index);
    CUDA_TRY(cudaDeviceSynchronize());
    return FILO_OK;
}

filo_status filo_cuda_check_launch(const char *where)
{
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
        return cuda_fail(err, "kernel launch", where);
    return FILO_OK;
}

/* ---- raw memory for the caching allocator ---- */

static filo_status device_raw_alloc(void *ctx, size_t bytes, void **ptr)
{
    int index = (int)(intptr_t)ctx;
    CUDA_ON(index);
    cudaError_t err = cudaMalloc(ptr, bytes);
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return FILO_FAIL(FILO_ERR_OOM, "cudaMalloc of %zu bytes on cuda:%d: out of memory", bytes, index);
    }
    if (err != cudaSuccess)
        return cuda_fail(err, "cudaMalloc", __func__);
    return FILO_OK;
}

static void device_raw_free(void *ctx, void *ptr)
{
    cudaSetDevice((int)(intptr_t)ctx);
    cudaFree(ptr);
}

static filo_status raw_event_record(void *ctx, void *stream, void **event)
{
    int index = (int)(intptr_t)ctx;
    CUDA_ON(index);
    cudaEvent_t e;
    CUDA_TRY(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    cudaError_t err = cudaEventRecord(e, (cudaStream_t)stream);
    if (err != cudaSuccess) {
        cudaEventDestroy(e);
        return cuda_fail(err, "cudaEventRecord", __func__);
    }
    *event = e;
    return FILO_OK;
}

static int raw_event_done(void *ctx, void *event)
{
    (void)ctx;
    cudaError_t err = cudaEventQuery((cudaEvent_t)event);
    if (err == cudaErrorNotReady) {
        cudaGetLastError();
        return 0;
    }
    /* A failed event will never complete normally; treat it as done so memory is not leaked. */
    return 1;
}

static void raw_event_destroy(void *ctx, void *event)
{
    (void)ctx;
    cudaEventDestroy((cudaEvent_t)event);
}

const filo_raw_ops filo_cuda_raw_ops_template = {
    NULL, device_raw_alloc, device_raw_free, raw_event_record, raw_event_done, raw_event_destroy,
};

static filo_status pinned_raw_alloc(void *ctx, size_t bytes, void **ptr)
{
    (void)ctx;
    cudaError_t err = cudaHostAlloc(ptr, bytes, cudaHostAllocPortable);
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return FILO_FAIL(FILO_ERR_OOM, "cudaHostAlloc of %zu bytes: out of pinned memory", bytes);
    }
    if (err != cudaSuccess)
        return cuda_fail(err, "cudaHostAlloc", __func__);
    return FILO_OK;
}

static void pinned_raw_free(void *ctx, void *ptr)
{
    (void)ctx;
    cudaFreeHost(ptr);
}

const filo_raw_ops filo_pinned_raw_ops = {
    NULL, pinned_raw_alloc, pinned_raw_free, raw_event_record, raw_event_done, raw_event_destroy,
};

/* ---- streams and events ---- */

filo_status filo_cuda_stream_create(int index, void **native)
{
    CUDA_ON(index);
    cudaStream_t s;
    /* Non-blocking: filo never relies on the legacy default stream's implicit ordering. */
    CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    *native = s;
    return FILO_OK;
}

void filo_cuda_stream_destroy(int index, void *native)
{
    cudaSetDevice(index);
    cudaStreamDestroy((cudaStream_t)native);
}

filo_status filo_cuda_stream_synchronize(int index, void *native)
{
    CUDA_ON(index);
    CUDA_TRY(cudaStreamSynchronize((cudaStream_t)native));
    return FILO_OK;
}

filo_status filo_cuda_stream_wait_event(int index, void *stream, void *event)
{
    CUDA_ON(index);
    CUDA_TRY(cudaStreamWaitEvent((cudaStream_t)stream, (cudaEvent_t)event, 0));
    return FILO_OK;
}

filo_status filo_cuda_event_create(int index, void **native)
{
    CUDA_ON(index);
    cudaEvent_t e;
    CUDA_TRY(cudaEventCreate(&e));
    *native = e;
    return FILO_OK;
}

void filo_cuda_event_destroy(int index, void *native)
{
    cudaSetDevice(index);
    cudaEventDestroy((cudaEvent_t)native);
}

filo_status filo_cuda_event_record(int index, void *event, void *stream)
{
    CUDA_ON(index);
    CUDA_TRY(cudaEventRecord((cudaEvent_t)event, (cudaStream_t)stream));
    return FILO_OK;
}

filo_status filo_cuda_capture_begin(int index, void *stream)
{
    CUDA_ON(index);
    CUDA_TRY(cudaStreamBeginCapture((cudaStream_t)stream, cudaStreamCaptureModeRelaxed));
    return FILO_OK;
}

filo_status filo_cuda_capture_end(int index, void *stream, void **exec)
{
    CUDA_ON(index);
    cudaGraph_t graph = NULL;
    *exec = NULL;
    cudaError_t end = cudaStreamEndCapture((cudaStream_t)stream, &graph);
    if (end != cudaSuccess) {
        /* A failed capture is not a fault of the next launch: clear the error it left behind. */
        (void)cudaGetLastError();
        return cuda_fail(end, "cudaStreamEndCapture", __func__);
    }
    cudaGraphExec_t e = NULL;
    cudaError_t err = cudaGraphInstantiate(&e, graph, 0);
    cudaGraphDestroy(graph);
    if (err != cudaSuccess)
        return FILO_FAIL(FILO_ERR_CUDA, "cudaGraphInstantiate failed: %s", cudaGetErrorString(err));
    *exec = e;
    return FILO_OK;
}

filo_status filo_cuda_graph_launch(int index, void *exec, void *stream)
{
    CUDA_ON(index);
    CUDA_TRY(cudaGraphLaunch((cudaGraphExec_t)exec, (cudaStream_t)stream));
    return FILO_OK;
}

void filo_cuda_graph_destroy(int index, void *exec)
{
    if (!exec || cudaSetDevice(index) != cudaSuccess)
        return;
    cudaGraphExecDestroy((cudaGraphExec_t)exec);
}

filo_status filo_cuda_event_synchronize(int index, void *event)
{
    CUDA_ON(index);
    CUDA_TRY(cudaEventSynchronize((cudaEvent_t)event));
    return FILO_OK;
}

filo_status filo_cuda_event_query(int index, void *event, int *done)
{
    CUDA_ON(index);
    cudaError_t err = cudaEventQuery((cudaEvent_t)event);
    if (err == cudaErrorNotReady) {
        cudaGetLastError();
        *done = 0;
        return FILO_OK;
    }
    if (err != cudaSuccess)
        return cuda_fail(err, "cudaEventQuery", __func__);
    *done = 1;
    return FILO_OK;
}

filo_status filo_cuda_event_elapsed(int index, void *start, void *end, float *ms)
{
    CUDA_ON(index);
    CUDA_TRY(cudaEventElapsedTime(ms, (cudaEvent_t)start, (cudaEvent_t)end));
    return FILO_OK;
}

filo_status filo_cuda_memcpy_async(int index, void *dst, const void *src, size_t bytes, filo_copy_kind kind,
                                   void *stream)
{
    static const enum cudaMemcpyKind kinds[] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                                                cudaMemcpyDeviceToDevice};
    if (bytes == 0)
        return FILO_OK;
    CUDA_ON(index);
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, kinds[kind], (cudaStream_t)stream));
    return FILO_OK;
}

filo_status filo_cuda_memset_async(int index, void *dst, int byte, size_t bytes, void *stream)
{
    if (bytes == 0)
        return FILO_OK;
    CUDA_ON(index);
    CUDA_TRY(cudaMemsetAsync(dst, byte, bytes, (cudaStream_t)stream));
    return FILO_OK;
}

/* ---- library handles, one per device, created on first use ---- */

static pthread_mutex_t handle_lock = PTHREAD_MUTEX_INITIALIZER;
static void *blaslt_handles[FILO_MAX_CUDA_DEVICES];
static void *dnn_handles[FILO_MAX_CUDA_DEVICES];

filo_status filo_cuda_blaslt_handle(int index, void **out)
{
    pthread_mutex_lock(&handle_lock);
    filo_status s = FILO_OK;
    if (!blaslt_handles[index]) {
#ifdef FILO_CUDA_EMULATION
        /* The emulator routes GEMMs to the CPU: any non-NULL token serves as the handle. */
        blaslt_handles[index] = &blaslt_handles[index];
#else
        cublasLtHandle_t h;
        cudaSetDevice(index);
        cublasStatus_t st = cublasLtCreate(&h);
        if (st != CUBLAS_STATUS_SUCCESS)
            s = FILO_FAIL(FILO_ERR_CUDA, "cublasLtCreate on cuda:%d failed with status %d", index, (int)st);
        else
            blaslt_handles[index] = h;
#endif
    }
    *out = blaslt_handles[index];
    pthread_mutex_unlock(&handle_lock);
    return s;
}

filo_status filo_cuda_dnn_handle(int index, void *stream, void **out)
{
    pthread_mutex_lock(&handle_lock);
    filo_status s = FILO_OK;
    if (!dnn_handles[index]) {
#ifdef FILO_CUDA_EMULATION
        dnn_handles[index] = &dnn_handles[index];
#else
        cudnnHandle_t h;
        cudaSetDevice(index);
        cudnnStatus_t st = cudnnCreate(&h);
        if (st != CUDNN_STATUS_SUCCESS)
            s = FILO_FAIL(FILO_ERR_CUDA, "cudnnCreate on cuda:%d failed: %s", index, cudnnGetErrorString(st));
        else
            dnn_handles[index] = h;
#endif
    }
#ifndef FILO_CUDA_EMULATION
    if (s == FILO_OK) {
        cudnnStatus_t st = cudnnSetStream((cudnnHandle_t)dnn_handles[index], (cudaStream_t)stream);
        if (st != CUDNN_STATUS_SUCCESS)
            s = FILO_FAIL(FILO_ERR_CUDA, "cudnnSetStream on cuda:%d failed: %s", index, cudnnGetErrorString(st));
    }
#else
    (void)stream;
#endif
    *out = dnn_handles[index];
    pthread_mutex_unlock(&handle_lock);
    return s;
}
