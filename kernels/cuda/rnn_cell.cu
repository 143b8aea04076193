/* Fused LSTM / GRU cells, forward and backward, on CUDA. Reference: kernels/cpu/rnn_cell.c; the
 * element math (shared verbatim): kernels/rnn_cell_backend.h; the equations:
 * include/filo/rnn_cell.h.
 *
 * cell_kernel<T, GRU, BACKWARD>: 256 threads, a grid-stride loop over the B*H units; thread
 * (b, j) reads the G gate columns j, H + j, ... of its row (consecutive threads read consecutive
 * columns: coalesced), runs the element math in f32 (double for f64) and writes its state and
 * saved values. Bytes a unit, gates of s bytes and state of a bytes:
 *   LSTM forward  read 8 s (xg, hg) + 8 a (biases, cached) + a (c), write 2 a + 4 a (saved)
 *   LSTM backward read 4 a (saved) + 4 a (c, c', dh, dc), write 4 s + 2 a
 *   GRU forward   read 6 s + 6 a (biases) + a (h), write a + 4 a (saved)
 *   GRU backward  read 4 a + 2 a, write 6 s + a
 * All element-wise: one pass over memory, at copy speed for the batch sizes of a training step. */
#include "compat.cuh"
#include "typed_elements.cuh"

extern "C" {
#include "backend.h"
#include "element.h"
#include "error.h"
#include "rnn_cell_backend.h"
}

namespace {

const int threads = 256;

__device__ __forceinline__ void lstm_forward(const float *a, float cp, float *act, float *c, float *h)
{
    filo_lstm_forward_f(a, cp, act, c, h);
}
__device__ __forceinline__ void lstm_forward(const double *a, double cp, double *act, double *c, double *h)
{
    filo_lstm_forward_d(a, cp, act, c, h);
}
__device__ __forceinline__ void lstm_backward(const float *act, float cp, float c, float dh, float dc, float *da,
                                              float *dcp)
{
    filo_lstm_backward_f(act, cp, c, dh, dc, da, dcp);
}
__device__ __forceinline__ void lstm_backward(const double *act, double cp, double c, double dh, double dc,
                                              double *da, double *dcp)
{
    filo_lstm_backward_d(act, cp, c, dh, dc, da, dcp);
}
__device__ __forceinline__ void gru_forward(const float *ax, const float *ah, float hp, float *act, float *h)
{
    filo_gru_forward_f(ax, ah, hp, act, h);
}
__device__ __forceinline__ void gru_forward(const double *ax, const double *ah, double hp, double *act, double *h)
{
    filo_gru_forward_d(ax, ah, hp, act, h);
}
__device__ __forceinline__ void gru_backward(const float *act, float hp, float dh, float *dax, float *dah, float *dhp)
{
    filo_gru_backward_f(act, hp, dh, dax, dah, dhp);
}
__device__ __forceinline__ void gru_backward(const double *act, double hp, double dh, double *dax, double *dah,
                                             double *dhp)
{
    filo_gru_backward_d(act, hp, dh, dax, dah, dhp);
}

/* T: the gates' storage type; A: the state (and math) type. */
template <class T, bool GRU, bool BACKWARD> __global__ void __launch_bounds__(threads) cell_kernel(filo_rnn_cell_desc d)
{
    using A = typename acc_of<T>::type;
    const int G = GRU ? 3 : 4;
    const int64_t H = d.hidden, n = d.batch * H;
    const T *xg = (const T *)d.xg, *hg = (const T *)d.hg;
    const A *b_ih = (const A *)d.b_ih, *b_hh = (const A *)d.b_hh;
    const A *h_prev = (const A *)d.h_prev, *c_prev = (const A *)d.c_prev;
    A *saved = (A *)d.saved;
    const A *saved_in = (const A *)d.saved;
    for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < n; u += (int64_t)gridDim.x * blockDim.x) {
        int64_t b = u / H, j = u - b * H;
        int active = filo_rnn_cell_active(&d, b);
        int64_t srow = b * 4 * H + j;
        if (!BACKWARD) {
            if (!active) {
                ((A *)d.h)[u] = h_prev[u];
                if (!GRU)
                    ((A *)d.c)[u] = c_prev[u];
                for (int k = 0; k < 4; k++)
                    saved[srow + k * H] = A(0);
                continue;
            }
            A ax[4], ah[4], act[4], h;
            for (int k = 0; k < G; k++) {
                A x = ld(xg[b * d.xg_ld + k * H + j]), y = ld(hg[b * d.hg_ld + k * H + j]);
                if (b_ih)
                    x = x + b_ih[k * H + j];
                if (b_hh)
                    y = y + b_hh[k * H + j];
                ax[k] = x;
                ah[k] = y;
            }
            if (GRU) {
                gru_forward(ax, ah, h_prev[u], act, &h);
            } else {
                A a[4], c;
                for (int k = 0; k < 4; k++)
                    a[k] = ax[k] + ah[k];
                lstm_forward(a, c_prev[u], act, &c, &h);
                ((A *)d.c)[u] = c;
            }
            ((A *)d.h)[u] = h;
            for (int k = 0; k < 4; k++)
                saved[srow + k * H] = act[k];
        } else {
            const A dh = ((const A *)d.dh)[u];
            const int64_t grow = b * G * H + j;
            T *dxg = (T *)d.dxg, *dhg = (T *)d.dhg;
            A *dh_prev = (A *)d.dh_prev, *dc_prev = (A *)d.dc_prev;
            A dc = !GRU && d.dc ? ((const A *)d.dc)[u] : A(0);
            if (!active) {
                for (int k = 0; k < G; k++) {
                    st(&dxg[grow + k * H], A(0));
                    if (GRU)
                        st(&dhg[grow + k * H], A(0));
                }
                if (dh_prev)
                    dh_prev[u] = dh;
                if (!GRU && dc_prev)
                    dc_prev[u] = dc;
                continue;
            }
            A act[4];
            for (int k = 0; k < 4; k++)
                act[k] = saved_in[srow + k * H];
            if (GRU) {
                A dax[3], dah[3], dhp;
                gru_backward(act, h_prev[u], dh, dax, dah, &dhp);
                for (int k = 0; k < 3; k++) {
                    st(&dxg[grow + k * H], dax[k]);
                    st(&dhg[grow + k * H], dah[k]);
                }
                if (dh_prev)
                    dh_prev[u] = dhp;
            } else {
                A da[4], dcp;
                lstm_backward(act, c_prev[u], ((const A *)d.c)[u], dh, dc, da, &dcp);
                for (int k = 0; k < 4; k++)
                    st(&dxg[grow + k * H], da[k]);
                if (dh_prev)
                    dh_prev[u] = A(0);
                if (dc_prev)
                    dc_prev[u] = dcp;
            }
        }
    }
}

template <class T> filo_status launch(const filo_rnn_cell_desc *d, cudaStream_t s)
{
    int64_t n = d->batch * d->hidden, blocks = (n + threads - 1) / threads;
    int64_t cap = FILO_CUDA_EMULATED ? 64 : 65535; /* the emulator runs fewer, longer threads */
    unsigned grid = (unsigned)(blocks < cap ? blocks : cap);
    if (d->gru && d->backward)
        FILO_LAUNCH((cell_kernel<T, true, true>), grid, threads, 0, s)(*d);
    else if (d->gru)
        FILO_LAUNCH((cell_kernel<T, true, false>), grid, threads, 0, s)(*d);
    else if (d->backward)
        FILO_LAUNCH((cell_kernel<T, false, true>), grid, threads, 0, s)(*d);
    else
        FILO_LAUNCH((cell_kernel<T, false, false>), grid, threads, 0, s)(*d);
    return filo_cuda_check_launch("filo_cuda_rnn_cell");
}

} // namespace

extern "C" filo_status filo_cuda_rnn_cell(const filo_rnn_cell_desc *d, void *stream)
{
    if (d->batch * d->hidden == 0)
        return FILO_OK;
    cudaStream_t s = (cudaStream_t)stream;
    switch (d->dtype) {
    case FILO_F32: return launch<float>(d, s);
    case FILO_F64: return launch<double>(d, s);
    case FILO_BF16: return launch<bf16_el>(d, s);
    case FILO_F16: return launch<f16_el>(d, s);
    default: return filo_error_set(FILO_ERR_DTYPE, "filo_cuda_rnn_cell", "unsupported gate dtype %s", filo_dtype_name(d->dtype));
    }
}
