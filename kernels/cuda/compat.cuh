/* The one header every filo .cu file includes: the same kernel source builds with nvcc for the
 * GPU and with the host C++ compiler against the CUDA emulator (tests/cuda_emu, selected by
 * FILO_CUDA_EMULATION), which is how CI without a GPU runs every kernel.
 *
 *   FILO_LAUNCH(kernel, grid, block, smem, stream)(args...);
 *   FILO_LAUNCH((kernel<float, 128>), grid, block, smem, stream)(args...);   // templates: parens
 *   FILO_DYNAMIC_SHARED(float, smem);   // in a kernel: pointer to the dynamic shared memory
 *   if (FILO_CUDA_EMULATED) { ... }     // 1 in the emulated build, 0 under nvcc
 *
 * Dynamic shared memory must be declared through FILO_DYNAMIC_SHARED, not with
 * `extern __shared__ T name[]` (the emulator cannot give a per-launch buffer to an arbitrary
 * extern symbol). Launches must name the kernel (not a function-pointer variable) so that the
 * emulator's coverage list records the kernel's own name. */
#ifndef FILO_KERNELS_CUDA_COMPAT_CUH
#define FILO_KERNELS_CUDA_COMPAT_CUH

#if defined(__CUDACC__)

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define FILO_CUDA_EMULATED 0
#define FILO_LAUNCH(kernel, grid, block, smem, stream) kernel<<<(grid), (block), (smem), (stream)>>>
/* One untyped symbol for all kernels of a file: typed extern __shared__ arrays of the same name
 * but different element types conflict under nvcc. */
#define FILO_DYNAMIC_SHARED(type, name)                                                           \
    extern __shared__ __align__(16) unsigned char filo_dynamic_smem_[];                           \
    type *name = reinterpret_cast<type *>(filo_dynamic_smem_)

#elif defined(FILO_CUDA_EMULATION)

#include "cuda_emu.h"

#define FILO_CUDA_EMULATED 1
#define FILO_LAUNCH(kernel, grid, block, smem, stream)                                            \
    ::filo_emu::make_launcher((kernel), #kernel, (grid), (block), (smem), (stream), __FILE__, __LINE__)
#define FILO_DYNAMIC_SHARED(type, name) FILO_EMU_DYNAMIC_SHARED(type, name)

#else
#error "kernels/cuda/*.cu build with nvcc, or with a host C++17 compiler and -DFILO_CUDA_EMULATION=1"
#endif

#endif
