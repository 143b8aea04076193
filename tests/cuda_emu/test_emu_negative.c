#define _POSIX_C_SOURCE 200809L
/* Planted bugs: each deliberately wrong kernel (emu_kernels_bad.cu) must be reported with its
 * specific error, a detail naming the kernel and what happened, and without crashing or hanging
 * the process. Registered with ctest under several schedules. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "emu_test_kernels.h"
#include "filo_emu.h"

#define CUDA_OK(call) cr_assert_eq((call), cudaSuccess, "%s: %s", #call, filo_emu_last_error_detail())

static float *dev_floats(int n, float v)
{
    float *d = NULL, *h = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++)
        h[i] = v + i;
    CUDA_OK(cudaMalloc((void **)&d, sizeof(float) * n));
    CUDA_OK(cudaMemcpy(d, h, sizeof(float) * n, cudaMemcpyHostToDevice));
    free(h);
    return d;
}

static void expect(cudaError_t got, cudaError_t want, filo_emu_fault fault, const char *needle1, const char *needle2)
{
    const char *detail = filo_emu_last_error_detail();
    cr_assert_eq(got, want, "got %s, want %s: %s", cudaGetErrorName(got), cudaGetErrorName(want), detail);
    cr_assert_eq(filo_emu_last_fault(), fault, "fault %s: %s", filo_emu_fault_name(filo_emu_last_fault()), detail);
    cr_assert(strstr(detail, needle1) != NULL, "'%s' not in: %s", needle1, detail);
    if (needle2)
        cr_assert(strstr(detail, needle2) != NULL, "'%s' not in: %s", needle2, detail);
}

/* After a failed launch the process goes on: a correct kernel runs and synchronizes cleanly. */
static void expect_recovery(void)
{
    float *d = dev_floats(64, 0.0f);
    CUDA_OK(emu_fill(d, 64, 1.0f, 64, 0, 0));
    CUDA_OK(cudaDeviceSynchronize());
    cudaFree(d);
}

Test(emu_negative, early_exit_before_barrier)
{
    float *d = dev_floats(64, 1.0f);
    expect(emu_bad_early_exit(d, 40, 0), cudaErrorIllegalInstruction, FILO_EMU_FAULT_BARRIER_EXIT,
           "emu_bad_early_exit_kernel", "exited");
    cr_assert(strstr(filo_emu_last_error_detail(), "emu_kernels_bad.cu:") != NULL);
    expect_recovery();
    cudaFree(d);
}

Test(emu_negative, divergent_barriers)
{
    float *d = dev_floats(64, 1.0f);
    expect(emu_bad_divergent_barrier(d, 0), cudaErrorIllegalInstruction, FILO_EMU_FAULT_BARRIER_DIVERGENT,
           "emu_bad_divergent_barrier_kernel", "divergent barriers");
    expect_recovery();
    cudaFree(d);
}

Test(emu_negative, missing_barrier_found_by_race_check)
{
    const int n = 128;
    float *x = dev_floats(2 * n, 1.0f), *y = dev_floats(2 * n, 0.0f);
    /* without the race check the kernel "succeeds" (with wrong, schedule-dependent results) */
    CUDA_OK(emu_bad_missing_barrier(x, y, n, 0));
    filo_emu_set_racecheck(1);
    cudaError_t e = emu_bad_missing_barrier(x, y, n, 0);
    expect(e, cudaErrorLaunchFailure, FILO_EMU_FAULT_RACE, "emu_bad_missing_barrier_kernel", "missing __syncthreads");
    filo_emu_set_racecheck(0);
    expect_recovery();
    cudaFree(x);
    cudaFree(y);
}

Test(emu_negative, kernel_fault_reported_once_by_next_synchronize)
{
    float *d = dev_floats(64, 1.0f);
    cudaStream_t s;
    CUDA_OK(cudaStreamCreate(&s));
    emu_bad_divergent_barrier_unchecked(d, s);
    cr_assert_eq(cudaPeekAtLastError(), cudaErrorIllegalInstruction);
    cr_assert_eq(cudaStreamSynchronize(s), cudaErrorIllegalInstruction);
    cr_assert_eq(cudaStreamSynchronize(s), cudaSuccess, "not sticky: reported once");
    cr_assert_eq(cudaGetLastError(), cudaErrorIllegalInstruction, "the failed synchronize set the last error");
    cr_assert_eq(cudaGetLastError(), cudaSuccess);
    expect_recovery();
    cudaStreamDestroy(s);
    cudaFree(d);
}

Test(emu_negative, shared_memory_overflow_canary)
{
    float *d = dev_floats(64, 1.0f);
    expect(emu_bad_shared_overflow(d, 64, 0), cudaErrorIllegalAddress, FILO_EMU_FAULT_SHARED_OOB,
           "emu_bad_shared_overflow_kernel", "past the end of dynamic shared memory");
    expect_recovery();
    cudaFree(d);
}

Test(emu_negative, shuffle_names_inactive_lane)
{
    float *d = dev_floats(32, 1.0f);
    expect(emu_bad_shuffle_inactive_lane(d, 0), cudaErrorIllegalInstruction, FILO_EMU_FAULT_WARP,
           "__shfl_sync", "is waiting at __syncthreads");
    expect_recovery();
    cudaFree(d);
}

Test(emu_negative, shuffle_names_exited_lane)
{
    float *d = dev_floats(32, 1.0f);
    expect(emu_bad_shuffle_exited_lane(d, 0), cudaErrorIllegalInstruction, FILO_EMU_FAULT_WARP,
           "__shfl_xor_sync", "has exited");
    expect_recovery();
    cudaFree(d);
}

Test(emu_negative, too_many_threads_per_block)
{
    float *d = dev_floats(4096, 1.0f);
    expect(emu_fill(d, 4096, 0.0f, 2048, 0, 0), cudaErrorInvalidConfiguration, FILO_EMU_FAULT_CONFIG,
           "emu_fill_kernel", "2048 threads");
    expect_recovery();
    cudaFree(d);
}

Test(emu_negative, too_much_dynamic_shared_memory)
{
    float *d = dev_floats(64, 1.0f);
    expect(emu_fill(d, 64, 0.0f, 64, 49 * 1024, 0), cudaErrorInvalidValue, FILO_EMU_FAULT_CONFIG,
           "emu_fill_kernel", "cudaFuncSetAttribute");
    expect(emu_reverse_dynamic(d, d, 59000, 1, 0), cudaErrorInvalidValue, FILO_EMU_FAULT_CONFIG,
           "cudaFuncSetAttribute", "227 KB");
    cudaGetLastError();
    expect_recovery();
    cudaFree(d);
}

Test(emu_negative, spin_hang_caught_by_watchdog)
{
    setenv("FILO_EMU_WATCHDOG_S", "0.5", 1); /* read at the first CUDA call of this process */
    int *flag = NULL;
    CUDA_OK(cudaMalloc((void **)&flag, sizeof(int)));
    CUDA_OK(cudaMemset(flag, 0, sizeof(int)));
    expect(emu_bad_spin_wait(flag, 0), cudaErrorLaunchTimeout, FILO_EMU_FAULT_WATCHDOG,
           "emu_bad_spin_wait_kernel", "watchdog");
    cr_assert(strstr(filo_emu_last_error_detail(), "thread (0,0,0)") != NULL, "%s", filo_emu_last_error_detail());
    expect_recovery();
    cudaFree(flag);
}
