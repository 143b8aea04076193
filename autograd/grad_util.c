/* Gradient helpers shared by the differentiable ops. */
#include <string.h>

#include "error.h"
#include "filo/reduce.h"
#include "node.h"

filo_status filo_grad_sum_to(const filo_tensor *g, int ndim, const int64_t *shape, filo_tensor **out)
{
    int lead = g->ndim - ndim;
    if (lead < 0)
        return FILO_FAIL(FILO_ERR_INTERNAL, "a gradient of %d dims cannot be summed to %d dims", g->ndim, ndim);
    filo_tensor *cur;
    FILO_TRY(filo_tensor_alias(g, &cur));
    /* Leading dims broadcasting added: summed away. */
    for (int i = 0; i < lead; i++) {
        filo_tensor *next;
        filo_status s = filo_reduce(FILO_REDUCE_SUM, cur, 0, 0, &next);
        filo_tensor_free(cur);
        FILO_TRY(s);
        cur = next;
    }
    /* Dims where the input had size 1: summed, kept. */
    for (int d = 0; d < ndim; d++) {
        if (shape[d] != 1 || cur->shape[d] == 1)
            continue;
        filo_tensor *next;
        filo_status s = filo_reduce(FILO_REDUCE_SUM, cur, d, 1, &next);
        filo_tensor_free(cur);
        FILO_TRY(s);
        cur = next;
    }
    if (memcmp(cur->shape, shape, sizeof(int64_t) * (size_t)ndim) != 0) {
        char a[96], b[96];
        filo_status s = FILO_FAIL(FILO_ERR_INTERNAL, "gradient %s does not reduce to %s",
                                  filo_dims_format(g->ndim, g->shape, a, sizeof a),
                                  filo_dims_format(ndim, shape, b, sizeof b));
        filo_tensor_free(cur);
        return s;
    }
    *out = cur;
    return FILO_OK;
}

filo_status filo_grad_zeros(const filo_output_meta *m, filo_tensor **out)
{
    return filo_tensor_zeros(m->device, m->dtype, m->ndim, m->shape, out);
}
