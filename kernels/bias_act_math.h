/* Internal: GELU and its derivative, in f32 and in double, shared verbatim by
 * kernels/cpu/bias_act.c and kernels/cuda/bias_act.cu (valid C11 and CUDA C++).
 *
 * Written without the cancellations of the textbook forms, so f32 stays within a few ulp of the
 * f64 value also for negative inputs:
 *   erf form   gelu(h) = 0.5 h erfc(-h / sqrt 2)                  (1 + erf(z) = erfc(-z))
 *              gelu'(h) = 0.5 erfc(-h / sqrt 2) + h exp(-h^2 / 2) / sqrt(2 pi)
 *   tanh form  u = sqrt(2/pi) (h + 0.044715 h^3), s = 1 / (1 + exp(-2u))   (0.5 (1 + tanh u) = s)
 *              gelu(h) = h s
 *              gelu'(h) = s + h 2 s (1 - s) sqrt(2/pi) (1 + 3 * 0.044715 h^2)  (1 - tanh^2 = 4 s (1 - s)) */
#ifndef FILO_KERNELS_BIAS_ACT_MATH_H
#define FILO_KERNELS_BIAS_ACT_MATH_H

#include <math.h>

#include "element.h"

#define FILO_GELU_SQRT1_2 0.70710678118654752440
#define FILO_GELU_INV_SQRT_2PI 0.39894228040143267794
#define FILO_GELU_SQRT_2_PI 0.79788456080286535588
#define FILO_GELU_TANH_C 0.044715

/* f32 a / b. On the GPU, __fdividef (2 ulp for b in [2^-126, 2^126], 0 above, where the exact
 * quotients here are below 1e-36): the IEEE division's slow path is a called subroutine
 * whose calling convention made ptxas spill in the backward kernel. */
#if defined(__CUDA_ARCH__)
#define FILO_GELU_FDIV(a, b) __fdividef((a), (b))
#else
#define FILO_GELU_FDIV(a, b) ((a) / (b))
#endif

FILO_HD float filo_gelu_f(float h, int approximate)
{
    if (approximate) {
        float u = (float)FILO_GELU_SQRT_2_PI * (h + (float)FILO_GELU_TANH_C * h * h * h);
        return FILO_GELU_FDIV(h, 1.0f + expf(-2.0f * u));
    }
    return 0.5f * h * erfcf(-h * (float)FILO_GELU_SQRT1_2);
}

FILO_HD float filo_gelu_grad_f(float h, int approximate)
{
    if (approximate) {
        float u = (float)FILO_GELU_SQRT_2_PI * (h + (float)FILO_GELU_TANH_C * h * h * h);
        float s = FILO_GELU_FDIV(1.0f, 1.0f + expf(-2.0f * u));
        float du = (float)FILO_GELU_SQRT_2_PI * (1.0f + 3.0f * (float)FILO_GELU_TANH_C * h * h);
        return s + h * 2.0f * s * (1.0f - s) * du;
    }
    return 0.5f * erfcf(-h * (float)FILO_GELU_SQRT1_2) + h * expf(-0.5f * h * h) * (float)FILO_GELU_INV_SQRT_2PI;
}

FILO_HD double filo_gelu_d(double h, int approximate)
{
    if (approximate) {
        double u = FILO_GELU_SQRT_2_PI * (h + FILO_GELU_TANH_C * h * h * h);
        return h / (1.0 + exp(-2.0 * u));
    }
    return 0.5 * h * erfc(-h * FILO_GELU_SQRT1_2);
}

FILO_HD double filo_gelu_grad_d(double h, int approximate)
{
    if (approximate) {
        double u = FILO_GELU_SQRT_2_PI * (h + FILO_GELU_TANH_C * h * h * h);
        double s = 1.0 / (1.0 + exp(-2.0 * u));
        double du = FILO_GELU_SQRT_2_PI * (1.0 + 3.0 * FILO_GELU_TANH_C * h * h);
        return s + h * 2.0 * s * (1.0 - s) * du;
    }
    return 0.5 * erfc(-h * FILO_GELU_SQRT1_2) + h * exp(-0.5 * h * h) * FILO_GELU_INV_SQRT_2PI;
}

#endif
