/* CPU versions of the layout kernels (kernels/layout_backend.h): raw element moves. */
#include <string.h>

#include "layout_backend.h"

filo_status filo_cpu_copy2d(const filo_copy2d_desc *d)
{
    size_t row_bytes = (size_t)d->cols * d->elsize;
    for (int64_t r = 0; r < d->rows; r++)
        memcpy((char *)d->dst + (size_t)(r * d->dst_ld) * d->elsize,
               (const char *)d->src + (size_t)(r * d->src_ld) * d->elsize, row_bytes);
    return FILO_OK;
}

/* Row by row over the last dim: the inside part of each output row is one memcpy, the rest is
 * the fill value. */
filo_status filo_cpu_pad(const filo_pad_desc *d)
{
    int nd = d->ndim;
    size_t es = d->elsize;
    int64_t W = d->out_shape[nd - 1], inW = d->in_shape[nd - 1], left = d->left[nd - 1];
    if (d->numel == 0 || W == 0)
        return FILO_OK;
    int64_t rows = d->numel / W;
    int64_t lo = left < 0 ? 0 : left;                           /* first output col from x */
    int64_t hi = left + inW < W ? left + inW : W;               /* one past the last */
    if (hi < lo)
        hi = lo;
    int64_t idx[FILO_MAX_DIMS] = {0};
    for (int64_t r = 0; r < rows; r++) {
        /* idx holds the coordinates of row r over dims 0..nd-2. */
        int inside = 1;
        int64_t src_row = 0;
        for (int k = 0; k < nd - 1; k++) {
            int64_t c = idx[k] - d->left[k];
            if (c < 0 || c >= d->in_shape[k])
                inside = 0;
            src_row = src_row * d->in_shape[k] + c;
        }
        char *out = (char *)d->dst + (size_t)(r * W) * es;
        int64_t from = 0, to = 0;
        if (inside && hi > lo) {
            from = lo;
            to = hi;
            memcpy(out + (size_t)lo * es, (const char *)d->src + (size_t)(src_row * inW + lo - left) * es,
                   (size_t)(hi - lo) * es);
        }
        for (int64_t c = 0; c < W; c++) {
            if (c == from && to > from) {
                c = to - 1;
                continue;
            }
            memcpy(out + (size_t)c * es, &d->value, es);
        }
        for (int k = nd - 2; k >= 0; k--) {
            if (++idx[k] < d->out_shape[k])
                break;
            idx[k] = 0;
        }
    }
    return FILO_OK;
}
