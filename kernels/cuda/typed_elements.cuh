/* Typed element access for the kernels: the storage types of bf16 and f16, the compute type of
 * each storage type (double for f64, float for the rest), and ld/st that convert through
 * runtime/element.h, the same conversions the CPU reference uses. Kernels are templates over the
 * storage type and call ld/st on every access; bf16/f16 round once at the store. */
#ifndef FILO_KERNELS_CUDA_TYPED_ELEMENTS_CUH
#define FILO_KERNELS_CUDA_TYPED_ELEMENTS_CUH

#include "compat.cuh"

extern "C" {
#include "element.h"
}

namespace {

struct bf16_el {
    uint16_t bits;
};
struct f16_el {
    uint16_t bits;
};

template <class T> struct acc_of { using type = float; };
template <> struct acc_of<double> { using type = double; };

__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ double ld(double v) { return v; }
__device__ __forceinline__ float ld(bf16_el v) { return filo_el_bf16_to_f32(v.bits); }
__device__ __forceinline__ float ld(f16_el v) { return filo_el_f16_to_f32(v.bits); }

__device__ __forceinline__ void st(float *p, float v) { *p = v; }
__device__ __forceinline__ void st(double *p, double v) { *p = v; }
__device__ __forceinline__ void st(bf16_el *p, float v) { p->bits = filo_el_f32_to_bf16(v); }
__device__ __forceinline__ void st(f16_el *p, float v) { p->bits = filo_el_f32_to_f16(v); }

} // namespace

#endif
