/* Internal: what the two CPU attention files share. kernels/cpu/attention.c runs f32, bf16 and
 * f16 on oneDNN GEMMs and hands f64 to the loops of kernels/cpu/attention_f64.c. */
#ifndef FILO_KERNELS_CPU_ATTENTION_CPU_H
#define FILO_KERNELS_CPU_ATTENTION_CPU_H

#include "attention_backend.h"

/* The number of valid keys of batch row b: key_lengths[b] clamped to [0, Lk], or Lk. */
static inline int64_t filo_cpu_attention_key_length(const filo_attention_desc *d, int64_t b)
{
    if (!d->key_lengths)
        return d->Lk;
    int64_t n = d->key_lengths_dtype == FILO_I64 ? ((const int64_t *)d->key_lengths)[b]
                                                 : ((const int32_t *)d->key_lengths)[b];
    return n < 0 ? 0 : (n > d->Lk ? d->Lk : n);
}

filo_status filo_cpu_attention_forward_f64(const filo_attention_desc *d);
filo_status filo_cpu_attention_backward_f64(const filo_attention_desc *d);

#endif
