/* Internal: the optimizer kernels' C signatures, one CPU and one CUDA version each
 * (kernels/cpu/optim.c, kernels/cuda/optim.cu), and the Adam element update both of them run
 * verbatim. kernels/optim.c checks the arguments and makes the grads contiguous first. */
#ifndef FILO_KERNELS_OPTIM_BACKEND_H
#define FILO_KERNELS_OPTIM_BACKEND_H

#include <math.h>
#include <stdint.h>

#include "element.h"
#include "filo/dtype.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Work items: a tensor is split into chunks of this many elements, one CUDA block each. */
#define FILO_OPTIM_CHUNK 65536
/* Tensors and chunks one launch's table (a kernel argument) holds. */
#define FILO_OPTIM_MAX_TENSORS 24
#define FILO_OPTIM_MAX_BLOCKS 320

/* The f32 scalars of one step, converted once from the host's doubles. */
typedef struct filo_adam_scalars {
    float beta1, beta2;
    float one_minus_beta1, one_minus_beta2;
    float eps;
    float weight_decay;      /* Adam's L2 term; 0 for AdamW */
    float decay;             /* AdamW's 1 - lr * wd; 1 for Adam */
    float step_size;         /* lr / (1 - beta1^t) */
    float bias_correction2_sqrt;
    int decoupled;
    double lr, beta1_d, beta2_d; /* the hyperparameters in double, for the step-dependent terms */
} filo_adam_scalars;

/* The terms that depend on the step count t, in double as PyTorch's Python floats, rounded once
 * to f32: the host calls it with the caller's t, a device step counter calls it on the device. */
FILO_HD void filo_adam_scalars_at_step(filo_adam_scalars *s, double t)
{
    s->step_size = (float)(s->lr / (1.0 - pow(s->beta1_d, t)));
    s->bias_correction2_sqrt = (float)sqrt(1.0 - pow(s->beta2_d, t));
}

/* The update of one element (include/filo/optim.h writes the formulas out). g is already
 * multiplied by grad_scale. */
FILO_HD float filo_adam_update(float p, float g, float *m, float *v, const filo_adam_scalars *s)
{
    if (s->decoupled)
        p = p * s->decay;
    else if (s->weight_decay != 0.0f)
        g = g + s->weight_decay * p;
    float mv = s->beta1 * *m + s->one_minus_beta1 * g;
    float vv = s->beta2 * *v + s->one_minus_beta2 * (g * g);
    float denom = sqrtf(vv) / s->bias_correction2_sqrt + s->eps;
    *m = mv;
    *v = vv;
    return p - s->step_size * (mv / denom);
}

/* clip_grad_norm_'s coefficient in f32: min(1, max_norm / (norm + 1e-6)); NaN stays NaN (as
 * torch.clamp), so a NaN norm poisons the step instead of being clipped away silently. */
FILO_HD float filo_clip_coef_value(float norm, float max_norm)
{
    float c = max_norm / (norm + 1e-6f);
    return c > 1.0f ? 1.0f : c;
}

/* One parameter tensor's pointers, all contiguous with numel elements. */
typedef struct filo_adam_tensor {
    float *param;
    const void *grad;  /* grad_dtype */
    float *exp_avg;
    float *exp_avg_sq;
    void *copy;        /* copy_dtype, or NULL */
    int64_t numel;
} filo_adam_tensor;

typedef struct filo_adam_desc {
    int n;
    const filo_adam_tensor *tensors; /* host array of n */
    filo_dtype grad_dtype;           /* f32, bf16 or f16 */
    filo_dtype copy_dtype;           /* bf16 or f16 when any copy is given */
    int has_copy;
    filo_adam_scalars s;
    const float *grad_scale;         /* NULL or one f32 (device memory on CUDA) */
    const void *found_inf;           /* NULL or one found_inf_dtype element */
    filo_dtype found_inf_dtype;      /* f32 or u8 */
    /* NULL, or one f32 step counter: the step adds 1 to it (unless found_inf is set) and uses it
     * as t, so s.step_size and s.bias_correction2_sqrt are computed where it lives. */
    float *step_count;
} filo_adam_desc;

/* Norm kinds of the gradient-norm reduction. */
enum { FILO_NORM_INF = 0, FILO_NORM_L1 = 1, FILO_NORM_L2 = 2 };

typedef struct filo_grad_norm_desc {
    int n;
    const void *const *grads;  /* host array of n contiguous grads */
    const int64_t *numel;      /* host array of n */
    filo_dtype dtype;          /* f32, bf16 or f16 */
    int kind;                  /* FILO_NORM_* */
    float *norm;               /* one f32, or NULL (only the flag is wanted) */
    float *nonfinite;          /* one f32 (1/0), or NULL */
    /* CUDA only: scratch of 2 * partial_count f32 (a sum and a flag per chunk), partial_count =
     * the total of ceil(numel / FILO_OPTIM_CHUNK); NULL when that is 0. */
    float *partial;
    int64_t partial_count;
} filo_grad_norm_desc;

filo_status filo_cpu_adam_step(const filo_adam_desc *d);
filo_status filo_cpu_grad_norm(const filo_grad_norm_desc *d);
filo_status filo_cpu_clip_coef(const float *norm, float max_norm, float *coef);

filo_status filo_cuda_adam_step(const filo_adam_desc *d, void *stream);
filo_status filo_cuda_grad_norm(const filo_grad_norm_desc *d, void *stream);
filo_status filo_cuda_clip_coef(const float *norm, float max_norm, float *coef, void *stream);

#ifdef __cplusplus
}
#endif
#endif
