/* Internal: the Adam/AdamW element update (filo_adam_update, kernels/optim_backend.h) over a
 * range of contiguous f32 elements, 16 lanes at a time, for the CPU optimizer loops
 * (kernels/cpu/optim.c and optim_rules.c). Each lane runs the scalar update's f32 operations in
 * its order, so the bits are those of filo_adam_update; the tail runs filo_adam_update itself.
 * Call it from a function built with FILO_SIMD_CLONES. */
#ifndef FILO_KERNELS_CPU_ADAM_SIMD_H
#define FILO_KERNELS_CPU_ADAM_SIMD_H

#include "element.h"
#include "optim_backend.h"
#include "simd.h"
#include "vec_math.h"

/* Elements [begin, end): p, m, v updated in place from g * scale (scale 1 leaves g as it is);
 * copy: NULL, or a bf16/f16 copy of the new p. */
FILO_SIMD_INLINE void adam_range_f32(float *p, const float *g, float *m, float *v, void *copy,
                                     filo_dtype copy_dtype, float scale, const filo_adam_scalars *s,
                                     int64_t begin, int64_t end)
{
    const filo_v16f b1 = (filo_v16f){0} + s->beta1, b2 = (filo_v16f){0} + s->beta2;
    const filo_v16f omb1 = (filo_v16f){0} + s->one_minus_beta1, omb2 = (filo_v16f){0} + s->one_minus_beta2;
    const filo_v16f eps = (filo_v16f){0} + s->eps, wd = (filo_v16f){0} + s->weight_decay;
    const filo_v16f decay = (filo_v16f){0} + s->decay, step = (filo_v16f){0} + s->step_size;
    const filo_v16f bc2 = (filo_v16f){0} + s->bias_correction2_sqrt, sc = (filo_v16f){0} + scale;
    int64_t i = begin;
    for (; i + FILO_V16 <= end; i += FILO_V16) {
        filo_v16f pv = *(filo_v16f *)(p + i), gv = *(const filo_v16f *)(g + i) * sc;
        if (s->decoupled)
            pv = pv * decay;
        else if (s->weight_decay != 0.0f)
            gv = gv + wd * pv;
        filo_v16f mv = b1 * *(filo_v16f *)(m + i) + omb1 * gv;
        filo_v16f vv = b2 * *(filo_v16f *)(v + i) + omb2 * (gv * gv);
        filo_v16f denom = vv;
        filo_v16f_sqrt(&denom);
        denom = denom / bc2 + eps;
        *(filo_v16f *)(m + i) = mv;
        *(filo_v16f *)(v + i) = vv;
        pv = pv - step * (mv / denom);
        *(filo_v16f *)(p + i) = pv;
        if (copy && copy_dtype == FILO_BF16) {
            filo_v16_store_bf16((uint16_t *)copy + i, pv);
        } else if (copy) {
            for (int l = 0; l < FILO_V16; l++)
                ((uint16_t *)copy)[i + l] = filo_el_f32_to_f16(pv[l]);
        }
    }
    for (; i < end; i++) {
        float pi = filo_adam_update(p[i], g[i] * scale, &m[i], &v[i], s);
        p[i] = pi;
        if (copy)
            ((uint16_t *)copy)[i] = copy_dtype == FILO_BF16 ? filo_el_f32_to_bf16(pi) : filo_el_f32_to_f16(pi);
    }
}

#endif
