/* The emulated CUDA runtime API: device properties, memory, copies, streams, events, errors,
 * the memory limit and the host-synchronization counter. Runs with FILO_EMU_MEMORY_MB=64. */
#include <criterion/criterion.h>
#include <string.h>

#include "emu_test_kernels.h"
#include "filo_emu.h"

#define CUDA_OK(call) cr_assert_eq((call), cudaSuccess, "%s: %s", #call, filo_emu_last_error_detail())

Test(emu_runtime, one_emulated_sm90_device)
{
    int n = 0, dev = -1, v = 0, rt = 0;
    CUDA_OK(cudaGetDeviceCount(&n));
    cr_assert_eq(n, 1);
    CUDA_OK(cudaSetDevice(0));
    cr_assert_eq(cudaSetDevice(1), cudaErrorInvalidDevice);
    cr_assert_eq(cudaGetLastError(), cudaErrorInvalidDevice);
    cr_assert_eq(cudaGetLastError(), cudaSuccess);
    CUDA_OK(cudaGetDevice(&dev));
    cr_assert_eq(dev, 0);
    struct cudaDeviceProp p;
    CUDA_OK(cudaGetDeviceProperties(&p, 0));
    cr_assert(strstr(p.name, "emulator") != NULL);
    cr_assert_eq(p.major, 9);
    cr_assert_eq(p.minor, 0);
    cr_assert_eq(p.multiProcessorCount, 132);
    cr_assert_eq(p.sharedMemPerBlockOptin, 227 * 1024);
    cr_assert_eq(p.sharedMemPerBlock, 48 * 1024);
    cr_assert_eq(p.maxThreadsPerBlock, 1024);
    cr_assert_eq(p.warpSize, 32);
    cr_assert_eq(p.totalGlobalMem, (size_t)64 << 20);
    CUDA_OK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    cr_assert_eq(v, 227 * 1024);
    CUDA_OK(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, 0));
    cr_assert_eq(v, 9);
    CUDA_OK(cudaRuntimeGetVersion(&rt));
    cr_assert_eq(rt, CUDART_VERSION);
    CUDA_OK(cudaDriverGetVersion(&rt));
    cr_assert_str_eq(cudaGetErrorName(cudaErrorMemoryAllocation), "cudaErrorMemoryAllocation");
    cr_assert(strlen(cudaGetErrorString(cudaErrorInvalidValue)) > 0);
    cr_assert_eq(filo_emu_active(), 1);
}

Test(emu_runtime, memory_limit_and_oom)
{
    size_t free_b = 0, total = 0;
    CUDA_OK(cudaMemGetInfo(&free_b, &total));
    cr_assert_eq(total, (size_t)64 << 20);
    cr_assert_eq(free_b, total);
    void *a = NULL, *b = NULL, *c = NULL;
    CUDA_OK(cudaMalloc(&a, 40u << 20));
    cr_assert_eq(cudaMalloc(&b, 30u << 20), cudaErrorMemoryAllocation);
    cr_assert_null(b);
    cr_assert(strstr(filo_emu_last_error_detail(), "out of memory") != NULL);
    cr_assert_eq(cudaGetLastError(), cudaErrorMemoryAllocation);
    CUDA_OK(cudaMalloc(&c, 20u << 20));
    CUDA_OK(cudaMemGetInfo(&free_b, &total));
    cr_assert_eq(free_b, (size_t)4 << 20);
    cr_assert_eq(filo_emu_device_bytes_in_use(), (size_t)60 << 20);
    CUDA_OK(cudaFree(a));
    CUDA_OK(cudaFree(c));
    CUDA_OK(cudaFree(NULL));
    cr_assert_eq(filo_emu_device_bytes_in_use(), 0);
    int local;
    cr_assert_eq(cudaFree(&local), cudaErrorInvalidValue, "freeing a host pointer");
    cudaGetLastError();
}

Test(emu_runtime, fresh_memory_is_poisoned_and_copies_are_checked)
{
    unsigned char *d = NULL, h[64];
    CUDA_OK(cudaMalloc((void **)&d, 64));
    CUDA_OK(cudaMemcpy(h, d, 64, cudaMemcpyDeviceToHost));
    for (int i = 0; i < 64; i++)
        cr_assert_eq(h[i], 0x7f, "poison byte");
    CUDA_OK(cudaMemset(d, 3, 64));
    CUDA_OK(cudaMemcpy(h, d, 64, cudaMemcpyDefault));
    cr_assert_eq(h[63], 3);
    /* past the end of the allocation */
    cr_assert_eq(cudaMemcpy(h, d + 32, 64, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
    cr_assert(strstr(filo_emu_last_error_detail(), "past the end") != NULL);
    /* direction does not match the pointers */
    cr_assert_eq(cudaMemcpy(d, h, 8, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
    cr_assert_eq(cudaMemsetAsync(h, 0, 8, 0), cudaErrorInvalidValue);
    cudaGetLastError();
    unsigned char *d2 = NULL;
    CUDA_OK(cudaMalloc((void **)&d2, 64));
    CUDA_OK(cudaMemcpyAsync(d2, d, 64, cudaMemcpyDeviceToDevice, 0));
    CUDA_OK(cudaMemcpy(h, d2, 64, cudaMemcpyDeviceToHost));
    cr_assert_eq(h[0], 3);
    cudaFree(d);
    cudaFree(d2);
}

Test(emu_runtime, pinned_memory_and_pointer_attributes)
{
    void *h = NULL, *d = NULL;
    CUDA_OK(cudaMallocHost(&h, 1000));
    CUDA_OK(cudaMalloc(&d, 1000));
    struct cudaPointerAttributes a;
    CUDA_OK(cudaPointerGetAttributes(&a, d));
    cr_assert_eq(a.type, cudaMemoryTypeDevice);
    CUDA_OK(cudaPointerGetAttributes(&a, h));
    cr_assert_eq(a.type, cudaMemoryTypeHost);
    int x;
    CUDA_OK(cudaPointerGetAttributes(&a, &x));
    cr_assert_eq(a.type, cudaMemoryTypeUnregistered);
    unsigned long long implicit = filo_emu_implicit_sync_count();
    CUDA_OK(cudaMemcpyAsync(h, d, 1000, cudaMemcpyDeviceToHost, 0));
    cr_assert_eq(filo_emu_implicit_sync_count(), implicit, "pinned copies do not synchronize");
    char pageable[1000];
    CUDA_OK(cudaMemcpyAsync(pageable, d, 1000, cudaMemcpyDeviceToHost, 0));
    cr_assert_eq(filo_emu_implicit_sync_count(), implicit + 1, "pageable copies do");
    CUDA_OK(cudaFreeHost(h));
    void *h2 = NULL;
    CUDA_OK(cudaHostAlloc(&h2, 10, 0));
    cr_assert_eq(cudaFreeHost(d), cudaErrorInvalidValue);
    cudaGetLastError();
    CUDA_OK(cudaFreeHost(h2));
    CUDA_OK(cudaFree(d));
}

static int host_fn_calls;
static void host_fn(void *p) { host_fn_calls += *(int *)p; }

Test(emu_runtime, streams_events_and_host_functions)
{
    cudaStream_t s1, s2;
    cudaEvent_t e1, e2, e3;
    CUDA_OK(cudaStreamCreate(&s1));
    CUDA_OK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    CUDA_OK(cudaEventCreate(&e1));
    CUDA_OK(cudaEventCreate(&e2));
    CUDA_OK(cudaEventCreateWithFlags(&e3, cudaEventDisableTiming));
    float *d = NULL, h[256];
    CUDA_OK(cudaMalloc((void **)&d, sizeof h));
    CUDA_OK(cudaEventRecord(e1, s1));
    CUDA_OK(emu_fill(d, 256, 4.0f, 64, 0, s1));
    CUDA_OK(cudaEventRecord(e2, s1));
    CUDA_OK(cudaEventRecord(e3, s1));
    CUDA_OK(cudaStreamWaitEvent(s2, e3, 0));
    CUDA_OK(cudaMemcpyAsync(h, d, sizeof h, cudaMemcpyDeviceToHost, s2));
    CUDA_OK(cudaStreamQuery(s2));
    CUDA_OK(cudaEventQuery(e2));
    int inc = 5;
    CUDA_OK(cudaLaunchHostFunc(s2, host_fn, &inc));
    CUDA_OK(cudaStreamSynchronize(s2));
    cr_assert_eq(host_fn_calls, 5);
    cr_assert_eq(h[255], 4.0f);
    float ms = -1;
    CUDA_OK(cudaEventSynchronize(e2));
    CUDA_OK(cudaEventElapsedTime(&ms, e1, e2));
    cr_assert(ms >= 0.0f);
    cr_assert_eq(cudaEventElapsedTime(&ms, e1, e3), cudaErrorInvalidResourceHandle, "timing disabled");
    CUDA_OK(cudaEventDestroy(e1));
    CUDA_OK(cudaEventDestroy(e2));
    CUDA_OK(cudaEventDestroy(e3));
    CUDA_OK(cudaStreamDestroy(s1));
    CUDA_OK(cudaStreamDestroy(s2));
    /* a destroyed stream is an invalid handle, for copies and launches alike */
    cr_assert_eq(cudaMemsetAsync(d, 0, 4, s1), cudaErrorInvalidResourceHandle);
    cr_assert_eq(emu_fill(d, 256, 1.0f, 64, 0, s1), cudaErrorInvalidResourceHandle);
    cudaFree(d);
}

Test(emu_runtime, host_sync_counter)
{
    float *d = NULL, *pinned = NULL;
    cudaStream_t s;
    CUDA_OK(cudaStreamCreate(&s));
    CUDA_OK(cudaMalloc((void **)&d, 4096));
    CUDA_OK(cudaMallocHost((void **)&pinned, 4096));
    unsigned long long before = filo_emu_host_sync_count();
    for (int i = 0; i < 10; i++) {
        CUDA_OK(emu_fill(d, 1024, (float)i, 128, 0, s));
        CUDA_OK(cudaMemcpyAsync(pinned, d, 4096, cudaMemcpyDeviceToHost, s));
        CUDA_OK(cudaMemsetAsync(d, 0, 4096, s));
    }
    cr_assert_eq(filo_emu_host_sync_count(), before, "async work does not synchronize");
    CUDA_OK(cudaStreamSynchronize(s));
    CUDA_OK(cudaDeviceSynchronize());
    float h;
    CUDA_OK(cudaMemcpy(&h, d, 4, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemset(d, 0, 4));
    cr_assert_eq(filo_emu_host_sync_count(), before + 4);
    cr_assert_eq(pinned[1023], 9.0f);
    cudaFree(d);
    cudaFreeHost(pinned);
    cudaStreamDestroy(s);
}

Test(emu_runtime, launch_configuration_errors)
{
    float *d = NULL;
    CUDA_OK(cudaMalloc((void **)&d, 4096));
    cr_assert_eq(emu_fill(d, 1024, 1.0f, 2048, 0, 0), cudaErrorInvalidConfiguration);
    cr_assert_eq(filo_emu_last_fault(), FILO_EMU_FAULT_CONFIG);
    cr_assert(strstr(filo_emu_last_error_detail(), "emu_fill_kernel") != NULL);
    cr_assert_eq(emu_fill(d, 0, 1.0f, 64, 0, 0), cudaErrorInvalidConfiguration, "zero-sized grid");
    cr_assert_eq(emu_indices((unsigned *)d, 1, 1, 1, 1, 65, 0), cudaErrorInvalidConfiguration, "blockDim.z 65");
    cr_assert_eq(emu_indices((unsigned *)d, 1, 70000, 1, 1, 1, 0), cudaErrorInvalidConfiguration, "gridDim.y");
    cr_assert_eq(emu_fill(d, 1024, 1.0f, 64, 64 * 1024, 0), cudaErrorInvalidValue, "64 KB without opt-in");
    cr_assert(strstr(filo_emu_last_error_detail(), "cudaFuncSetAttribute") != NULL);
    cr_assert_eq(emu_reverse_dynamic((float *)d, (float *)d, 60000, 1, 0), cudaErrorInvalidValue,
                 "240 KB is over the 227 KB maximum even with opt-in");
    cr_assert_eq(cudaGetLastError(), cudaErrorInvalidValue, "the failed cudaFuncSetAttribute set the last error");
    /* the wrapper's cudaGetLastError cleared it; peek keeps an error, get clears it */
    cr_assert_eq(cudaGetLastError(), cudaSuccess);
    cr_assert_eq(cudaSetDevice(3), cudaErrorInvalidDevice);
    cr_assert_eq(cudaPeekAtLastError(), cudaErrorInvalidDevice);
    cr_assert_eq(cudaPeekAtLastError(), cudaErrorInvalidDevice);
    cr_assert_eq(cudaGetLastError(), cudaErrorInvalidDevice);
    cr_assert_eq(cudaPeekAtLastError(), cudaSuccess);
    CUDA_OK(emu_fill(d, 1024, 1.0f, 1024, 48 * 1024, 0));
    CUDA_OK(cudaDeviceSynchronize());
    cudaFree(d);
}
