/* Elementwise losses (BCE with logits, focal, MSE), forward and backward. Reference:
 * kernels/cpu/losses.c (filo_cpu_losses); both run the element math of kernels/losses_backend.h
 * in A = float (double for f64 inputs). S = sizeof(input element), A = sizeof(compute type).
 *
 * losses_elem_kernel<A, GRAD> (256 threads, grid-stride, up to 65535 blocks): forward NONE
 *   writes each element's loss; backward writes dx (and MSE's dy) = g * dloss/dx with
 *   g = dloss[i] (NONE), dloss[0] (SUM) or dloss[0] / n (MEAN), read on the device. Bytes an
 *   element: read S (x) + the target's, weight's and pos_weight's elements (the last two small
 *   and cache-resident when broadcast), + A (dloss, NONE backward); write A (loss) or S (dx).
 * losses_partial_kernel<A> (256 threads, nb <= FILO_LOSSES_MAX_BLOCKS blocks, nb a function of n
 *   only): SUM/MEAN forward; each thread adds its grid-stride elements in A, the block adds its
 *   threads in a fixed tree (block_sum2) and writes partial[b]. Bytes: the reads above, write
 *   nb * A. losses_final_kernel (1 block, 256 threads) adds the partials in double in a fixed
 *   order and divides by n for MEAN (the divisor never leaves the device). No atomics: the
 *   result is bitwise reproducible run to run. */
#include "compat.cuh"
#include "block_reduce.cuh"

extern "C" {
#include "backend.h"
#include "element.h"
#include "error.h"
#include "losses_backend.h"
}

namespace {

const int threads = 256;
const int64_t max_grid = 65535;

template <class A> struct math;
template <> struct math<float> {
    __device__ static float element(const filo_losses_desc *d, int64_t i, float *dl)
    {
        return filo_losses_element_f32(d, i, dl);
    }
};
template <> struct math<double> {
    __device__ static double element(const filo_losses_desc *d, int64_t i, double *dl)
    {
        return filo_losses_element_f64(d, i, dl);
    }
};

template <class A, bool GRAD> __global__ void losses_elem_kernel(filo_losses_desc d)
{
    A g = 0;
    if (GRAD && d.reduction != FILO_LOSS_NONE) {
        g = ((const A *)d.dloss)[0];
        if (d.reduction == FILO_LOSS_MEAN)
            g = g / (A)d.n;
    }
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < d.n; i += (int64_t)gridDim.x * blockDim.x) {
        if (!GRAD) {
            ((A *)d.loss)[i] = math<A>::element(&d, i, nullptr);
            continue;
        }
        A dl = 0;
        math<A>::element(&d, i, &dl);
        A gi = d.reduction == FILO_LOSS_NONE ? ((const A *)d.dloss)[i] : g;
        A gx = gi * dl;
        if (d.dx)
            filo_el_store_f((char *)d.dx + i * (int64_t)filo_el_size(d.dtype), d.dtype, gx);
        if (d.dy)
            filo_el_store_f((char *)d.dy + i * (int64_t)filo_el_size(d.y_dtype), d.y_dtype, -gx);
    }
}

template <class A> __global__ void losses_partial_kernel(filo_losses_desc d, A *partial)
{
    A s = 0, unused = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < d.n; i += (int64_t)gridDim.x * blockDim.x)
        s += math<A>::element(&d, i, nullptr);
    block_sum2(s, unused);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = s;
}

/* loss = the sum of the partials (SUM) divided by n (MEAN): an empty MEAN is 0 / 0 = NaN. */
template <class A> __global__ void losses_final_kernel(const A *partial, int nb, int64_t n, int mean, A *loss)
{
    double s = 0, unused = 0;
    for (int b = threadIdx.x; b < nb; b += blockDim.x)
        s += (double)partial[b];
    block_sum2(s, unused);
    if (threadIdx.x == 0)
        loss[0] = (A)(mean ? s / (double)n : s);
}

template <class A> filo_status launch(const filo_losses_desc *d, cudaStream_t s)
{
    const char *where = "filo_cuda_losses";
    int64_t blocks = (d->n + threads - 1) / threads;
    if (d->grad || d->reduction == FILO_LOSS_NONE) {
        if (d->n == 0)
            return FILO_OK;
        unsigned grid = (unsigned)(blocks < max_grid ? blocks : max_grid);
        if (d->grad)
            FILO_LAUNCH((losses_elem_kernel<A, true>), grid, threads, 0, s)(*d);
        else
            FILO_LAUNCH((losses_elem_kernel<A, false>), grid, threads, 0, s)(*d);
        return filo_cuda_check_launch(where);
    }
    /* About four elements a thread before blocks are added; the count depends on n only. */
    int64_t nb = (blocks + 3) / 4;
    nb = nb < 1 ? 1 : (nb > FILO_LOSSES_MAX_BLOCKS ? FILO_LOSSES_MAX_BLOCKS : nb);
    A *partial = (A *)d->scratch;
    FILO_LAUNCH((losses_partial_kernel<A>), (unsigned)nb, threads, 0, s)(*d, partial);
    FILO_TRY(filo_cuda_check_launch(where));
    FILO_LAUNCH((losses_final_kernel<A>), 1, threads, 0, s)
    (partial, (int)nb, d->n, d->reduction == FILO_LOSS_MEAN, (A *)d->loss);
    return filo_cuda_check_launch(where);
}

} // namespace

extern "C" filo_status filo_cuda_losses(const filo_losses_desc *d, void *stream)
{
    cudaStream_t s = (cudaStream_t)stream;
    return d->dtype == FILO_F64 ? launch<double>(d, s) : launch<float>(d, s);
}
