/* filo CUDA emulator: the C-callable control and inspection API.
 *
 * The emulator (tests/cuda_emu) runs filo's .cu kernels and CUDA backend on the CPU when the
 * build has no GPU. The CUDA runtime API itself (cudaMalloc, cudaMemcpyAsync, ...) is provided
 * with the real signatures from <cuda_runtime_api.h>; this header adds what only an emulator
 * can say: why the last kernel failed, how often the host synchronized, which schedule runs.
 * See docs/cuda-emulation.md. */
#ifndef FILO_EMU_H
#define FILO_EMU_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What went wrong in the last failed launch (or FILO_EMU_FAULT_NONE). */
typedef enum filo_emu_fault {
    FILO_EMU_FAULT_NONE = 0,
    FILO_EMU_FAULT_CONFIG,             /* bad launch configuration (threads, dims, shared memory) */
    FILO_EMU_FAULT_BARRIER_EXIT,       /* a thread exited while others wait at __syncthreads */
    FILO_EMU_FAULT_BARRIER_DIVERGENT,  /* threads wait at different __syncthreads call sites */
    FILO_EMU_FAULT_WARP,               /* warp collective with missing/exited/foreign lanes or bad mask */
    FILO_EMU_FAULT_SHARED_OOB,         /* write past the end of dynamic shared memory (canary) */
    FILO_EMU_FAULT_WATCHDOG,           /* a block ran longer than FILO_EMU_WATCHDOG_S (spin-hang) */
    FILO_EMU_FAULT_RACE                /* result depends on the thread schedule (race-check mode) */
} filo_emu_fault;

/* Human-readable description of the last emulator error: kernel, block, thread, source
 * location and what happened. Empty string when none. The pointer stays valid until the
 * calling thread calls this function again. */
const char *filo_emu_last_error_detail(void);

/* Kind of the last emulator error (kept until filo_emu_reset_error). */
filo_emu_fault filo_emu_last_fault(void);
const char *filo_emu_fault_name(filo_emu_fault fault);

/* Clears the last error detail, the fault kind, the pending asynchronous error and the calling
 * thread's cudaGetLastError state. */
void filo_emu_reset_error(void);

/* Host synchronizations so far: cudaStreamSynchronize, cudaDeviceSynchronize,
 * cudaEventSynchronize, synchronous cudaMemcpy and cudaMemset. */
unsigned long long filo_emu_host_sync_count(void);

/* Calls that synchronize implicitly on a real GPU: cudaFree, cudaFreeHost, cudaMallocHost,
 * cudaHostAlloc, and cudaMemcpyAsync to or from pageable (not cudaMallocHost'd) host memory. */
unsigned long long filo_emu_implicit_sync_count(void);

/* Host work in stream order (what the emulated cuBLASLt and cuDNN calls run): fn(arg) at once,
 * or, while the stream is being captured, at every replay of the graph, on the graph's own copy
 * of the `size` bytes at arg. Returns 0 or a cudaError_t. */
int filo_emu_host_task(void *stream, void (*fn)(void *arg), const void *arg, size_t size);

/* Kernel launches so far (successful or not). */
unsigned long long filo_emu_launch_count(void);

/* The thread schedule in use: "forward", "reverse", "random:<seed>" or "depth-first". */
const char *filo_emu_schedule_name(void);

/* Number of worker threads that run blocks (FILO_EMU_WORKERS). */
int filo_emu_worker_count(void);

/* Bytes currently allocated with cudaMalloc and the emulated device's total memory. */
size_t filo_emu_device_bytes_in_use(void);
size_t filo_emu_device_total_bytes(void);

/* Whether the race-check mode (FILO_EMU_RACECHECK) is on; can be switched per test. */
int filo_emu_racecheck_enabled(void);
void filo_emu_set_racecheck(int enabled);

/* 1 when this build is the emulator (always, in this library). */
int filo_emu_active(void);

#ifdef __cplusplus
}
#endif

#endif
