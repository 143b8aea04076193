/* CPU optimizer kernels: the reference for kernels/cuda/optim.cu.
 * The Adam step runs filo_adam_update (kernels/optim_backend.h) on every element, the same f32
 * code the CUDA kernel runs. The gradient norm accumulates in double over the tensors in order
 * and rounds once to f32 (the CUDA kernel sums per chunk in f32, so the two agree to about 1e-7
 * relative, not bitwise). */
#include <math.h>

#include "element.h"
#include "error.h"
#include "optim_backend.h"

static float load_grad(const void *base, filo_dtype t, int64_t i)
{
    switch (t) {
    case FILO_BF16: return filo_el_bf16_to_f32(((const uint16_t *)base)[i]);
    case FILO_F16: return filo_el_f16_to_f32(((const uint16_t *)base)[i]);
    default: return ((const float *)base)[i];
    }
}

static void store_copy(void *base, filo_dtype t, int64_t i, float v)
{
    ((uint16_t *)base)[i] = t == FILO_F16 ? filo_el_f32_to_f16(v) : filo_el_f32_to_bf16(v);
}

filo_status filo_cpu_adam_step(const filo_adam_desc *d)
{
    if (d->found_inf) {
        double flag = filo_el_load_f(d->found_inf, d->found_inf_dtype);
        if (flag != 0.0)
            return FILO_OK;
    }
    float scale = d->grad_scale ? *d->grad_scale : 1.0f;
    for (int k = 0; k < d->n; k++) {
        const filo_adam_tensor *t = &d->tensors[k];
        for (int64_t i = 0; i < t->numel; i++) {
            float g = load_grad(t->grad, d->grad_dtype, i);
            if (d->grad_scale)
                g = g * scale;
            float p = filo_adam_update(t->param[i], g, &t->exp_avg[i], &t->exp_avg_sq[i], &d->s);
            t->param[i] = p;
            if (t->copy)
                store_copy(t->copy, d->copy_dtype, i, p);
        }
    }
    return FILO_OK;
}

filo_status filo_cpu_grad_norm(const filo_grad_norm_desc *d)
{
    double acc = 0.0;
    int nonfinite = 0;
    for (int k = 0; k < d->n; k++) {
        for (int64_t i = 0; i < d->numel[k]; i++) {
            double a = fabs((double)load_grad(d->grads[k], d->dtype, i));
            nonfinite |= !isfinite(a);
            if (d->kind == FILO_NORM_L2)
                acc += a * a;
            else if (d->kind == FILO_NORM_L1)
                acc += a;
            else if (a > acc || isnan(a))
                acc = isnan(acc) ? acc : a;
        }
    }
    if (d->norm)
        *d->norm = (float)(d->kind == FILO_NORM_L2 ? sqrt(acc) : acc);
    if (d->nonfinite)
        *d->nonfinite = nonfinite ? 1.0f : 0.0f;
    return FILO_OK;
}

filo_status filo_cpu_clip_coef(const float *norm, float max_norm, float *coef)
{
    *coef = filo_clip_coef_value(*norm, max_norm);
    return FILO_OK;
}
