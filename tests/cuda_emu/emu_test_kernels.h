/* Host entry points of the emulator's own test kernels (emu_kernels_ok.cu, emu_kernels_bad.cu).
 * Pointers are device pointers; each function launches on `stream` and returns
 * cudaGetLastError() right after the launch. */
#ifndef FILO_EMU_TEST_KERNELS_H
#define FILO_EMU_TEST_KERNELS_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* positive kernels */
cudaError_t emu_block_sum(const float *x, float *out, int rows, int cols, int threads, cudaStream_t stream);
cudaError_t emu_warp_ops(int *out, int threads, cudaStream_t stream);
cudaError_t emu_atomics(const int *values, int n, int *counters, float *fsum, double *dsum,
                        unsigned long long *usum, cudaStream_t stream);
cudaError_t emu_reverse_dynamic(const float *x, float *y, int n, int optin, cudaStream_t stream);
cudaError_t emu_convert_half(const float *x, float *via_bf16, float *via_f16, float *extra, int n, cudaStream_t stream);
cudaError_t emu_layernorm(const float *x, const float *gamma, const float *beta, float *y, int rows, int cols,
                          cudaStream_t stream);
cudaError_t emu_barrier_heavy(float *data, int blocks, int threads, int rounds, cudaStream_t stream);
cudaError_t emu_sync_votes(int *out, int threads, cudaStream_t stream);
cudaError_t emu_indices(unsigned *out, int gx, int gy, int bx, int by, int bz, cudaStream_t stream);
cudaError_t emu_fill(float *x, int n, float v, int threads, size_t smem, cudaStream_t stream);

/* deliberately wrong kernels */
cudaError_t emu_bad_early_exit(float *x, int n, cudaStream_t stream);
cudaError_t emu_bad_divergent_barrier(float *x, cudaStream_t stream);
void emu_bad_divergent_barrier_unchecked(float *x, cudaStream_t stream); /* leaves the error pending */
cudaError_t emu_bad_missing_barrier(const float *x, float *y, int n, cudaStream_t stream);
cudaError_t emu_bad_shared_overflow(float *x, int n, cudaStream_t stream);
cudaError_t emu_bad_shuffle_inactive_lane(float *x, cudaStream_t stream);
cudaError_t emu_bad_shuffle_exited_lane(float *x, cudaStream_t stream);
cudaError_t emu_bad_spin_wait(int *flag, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
