/* CUDA versions of the runtime's element loops (reference: runtime/tensor_cpu.c).
 *
 * strided_copy_kernel, fill_kernel and draw_kernel: a grid-stride loop, one element per thread
 * per step, 256 threads a block. Each element is read once and written once, so they are
 * bound by memory bandwidth; the index arithmetic is done on collapsed layouts (few dims).
 * Contiguous same-dtype copies never get here: they are cudaMemcpyAsync. */
#include "compat.cuh"

extern "C" {
#include "backend.h"
#include "element.h"
#include "error.h"
#include "tensor_kernels.h"
}

namespace {

struct layout {
    int ndim;
    int64_t shape[FILO_LAYOUT_MAX_DIMS];
    int64_t dst_strides[FILO_LAYOUT_MAX_DIMS];
    int64_t src_strides[FILO_LAYOUT_MAX_DIMS];
};

__device__ __forceinline__ void offsets(const layout &l, int64_t i, int64_t *doff, int64_t *soff)
{
    int64_t d = 0, s = 0;
    for (int k = l.ndim - 1; k >= 0; k--) {
        int64_t q = i / l.shape[k];
        int64_t r = i - q * l.shape[k];
        d += r * l.dst_strides[k];
        s += r * l.src_strides[k];
        i = q;
    }
    *doff = d;
    *soff = s;
}

__global__ void strided_copy_kernel(layout l, int64_t n, char *dst, filo_dtype dt, const char *src, filo_dtype st)
{
    int64_t ds = (int64_t)filo_el_size(dt), ss = (int64_t)filo_el_size(st);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t doff, soff;
        offsets(l, i, &doff, &soff);
        if (dt == st)
            memcpy(dst + doff * ds, src + soff * ss, (size_t)ds);
        else
            filo_el_convert(dst + doff * ds, dt, src + soff * ss, st);
    }
}

struct pattern_bytes {
    unsigned char b[8];
};

__global__ void fill_kernel(layout l, int64_t n, char *dst, int64_t ds, pattern_bytes p)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t doff, soff;
        offsets(l, i, &doff, &soff);
        memcpy(dst + doff * ds, p.b, (size_t)ds);
    }
}

__global__ void draw_kernel(layout l, int64_t n, char *dst, filo_dtype dt, filo_draw_desc draw)
{
    int64_t ds = (int64_t)filo_el_size(dt);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t doff, soff;
        offsets(l, i, &doff, &soff);
        filo_el_store_f(dst + doff * ds, dt, filo_draw_value((int)draw.kind, draw.a, draw.b, draw.seed, draw.offset, i));
    }
}

const int threads = 256;

/* Enough blocks to fill a large GPU several times over; the grid-stride loop covers the rest. */
unsigned grid_for(int64_t n)
{
    int64_t blocks = (n + threads - 1) / threads;
    return (unsigned)(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

layout layout_of(const filo_copy_desc *d)
{
    layout l;
    l.ndim = d->ndim;
    for (int k = 0; k < d->ndim; k++) {
        l.shape[k] = d->shape[k];
        l.dst_strides[k] = d->dst_strides[k];
        l.src_strides[k] = d->src_strides[k];
    }
    return l;
}

} // namespace

extern "C" filo_status filo_cuda_strided_copy(const filo_copy_desc *d, void *stream)
{
    if (d->numel == 0)
        return FILO_OK;
    FILO_LAUNCH(strided_copy_kernel, grid_for(d->numel), threads, 0, (cudaStream_t)stream)
    (layout_of(d), d->numel, (char *)d->dst, d->dst_dtype, (const char *)d->src, d->src_dtype);
    return filo_cuda_check_launch(__func__);
}

extern "C" filo_status filo_cuda_fill(const filo_copy_desc *d, const void *pattern, void *stream)
{
    if (d->numel == 0)
        return FILO_OK;
    pattern_bytes p;
    memset(p.b, 0, sizeof p.b);
    memcpy(p.b, pattern, filo_el_size(d->dst_dtype));
    FILO_LAUNCH(fill_kernel, grid_for(d->numel), threads, 0, (cudaStream_t)stream)
    (layout_of(d), d->numel, (char *)d->dst, (int64_t)filo_el_size(d->dst_dtype), p);
    return filo_cuda_check_launch(__func__);
}

extern "C" filo_status filo_cuda_draw(const filo_copy_desc *d, const filo_draw_desc *draw, void *stream)
{
    if (d->numel == 0)
        return FILO_OK;
    FILO_LAUNCH(draw_kernel, grid_for(d->numel), threads, 0, (cudaStream_t)stream)
    (layout_of(d), d->numel, (char *)d->dst, d->dst_dtype, *draw);
    return filo_cuda_check_launch(__func__);
}
