/* CPU elementwise losses (BCE with logits, focal, MSE), forward and backward: the reference for
 * kernels/cuda/losses.cu. Each element runs the shared math of kernels/losses_backend.h in the
 * compute type (float, double for f64 inputs), as the CUDA kernels do. Elements are spread over
 * the CPU pool; for SUM/MEAN each chunk adds its losses in order in double and the chunks are
 * added in order (chunk bounds depend only on the size), so results are reproducible. */
#include "element.h"
#include "error.h"
#include "losses_backend.h"
#include "parallel.h"

#define GRAIN 16384

typedef struct losses_job {
    const filo_losses_desc *d;
    double total[FILO_PARALLEL_MAX_CHUNKS];
} losses_job;

static void losses_chunk(void *ctx, int chunk, int64_t i0, int64_t i1)
{
    losses_job *job = ctx;
    const filo_losses_desc *d = job->d;
    int f64 = d->dtype == FILO_F64;
    filo_dtype ad = f64 ? FILO_F64 : FILO_F32;
    size_t xs = filo_el_size(d->dtype), ys = filo_el_size(d->y_dtype), as = filo_el_size(ad);
    double total = 0, g = 0;
    if (d->grad && d->reduction != FILO_LOSS_NONE) {
        g = filo_losses_load(d->dloss, ad, 0);
        /* PyTorch's mean backward divides the incoming gradient by the element count. */
        if (d->reduction == FILO_LOSS_MEAN)
            g = f64 ? g / (double)d->n : (double)((float)g / (float)d->n);
    }
    for (int64_t i = i0; i < i1; i++) {
        double l, dl = 0;
        if (f64) {
            l = filo_losses_element_f64(d, i, d->grad ? &dl : NULL);
        } else {
            float df = 0;
            l = filo_losses_element_f32(d, i, d->grad ? &df : NULL);
            dl = df;
        }
        if (!d->grad) {
            if (d->reduction == FILO_LOSS_NONE)
                filo_el_store_f((char *)d->loss + i * (int64_t)as, ad, l);
            else
                total += l;
            continue;
        }
        double gi = d->reduction == FILO_LOSS_NONE ? filo_losses_load(d->dloss, ad, i) : g;
        /* The product in the compute type, as the CUDA kernel forms it. */
        double gx = f64 ? gi * dl : (double)((float)gi * (float)dl);
        if (d->dx)
            filo_el_store_f((char *)d->dx + i * (int64_t)xs, d->dtype, gx);
        if (d->dy)
            filo_el_store_f((char *)d->dy + i * (int64_t)ys, d->y_dtype, -gx);
    }
    job->total[chunk] = total;
}

filo_status filo_cpu_losses(const filo_losses_desc *d)
{
    losses_job job = {.d = d};
    int chunks = filo_parallel_for(d->n, GRAIN, losses_chunk, &job);
    if (!d->grad && d->reduction != FILO_LOSS_NONE) {
        double total = 0;
        for (int k = 0; k < chunks; k++)
            total += job.total[k];
        /* An empty MEAN is 0 / 0 = NaN, as PyTorch's. */
        double v = d->reduction == FILO_LOSS_MEAN ? total / (double)d->n : total;
        filo_el_store_f(d->loss, d->dtype == FILO_F64 ? FILO_F64 : FILO_F32, v);
    }
    return FILO_OK;
}
