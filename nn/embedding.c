/* Embedding (nn.Embedding): rows of a table by id, with N(0, 1) init and a padding row that
 * starts at zero and gets no gradient. Lookups stay f32 under autocast, as in torch. */
#include "error.h"
#include "nn_internal.h"

filo_status filo_nn_embedding_init(filo_nn_embedding *m, filo_params *ps, const char *prefix, int64_t num, int64_t dim,
                                   int64_t padding_idx)
{
    if (!m || !ps)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m and ps must not be NULL");
    if (num <= 0 || dim <= 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "num = %lld and dim = %lld must be positive", (long long)num,
                         (long long)dim);
    /* PyTorch accepts a negative padding_idx counting from the end; -1 means none here. */
    if (padding_idx < -1 || padding_idx >= num)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "padding_idx = %lld must be -1 (none) or in [0, %lld)",
                         (long long)padding_idx, (long long)num);
    *m = (filo_nn_embedding){NULL, num, dim, padding_idx};
    char name[FILO_NN_NAME_MAX];
    FILO_TRY(filo_params_create(ps, filo_param_name_join(name, sizeof name, prefix, "weight"), 2,
                                (int64_t[]){num, dim}, (filo_init){FILO_INIT_NORMAL, 0.0, 1.0}, FILO_PARAM_EMBEDDING,
                                &m->weight));
    if (padding_idx >= 0) {
        filo_tensor *row;
        FILO_TRY(filo_tensor_slice(filo_var_value(m->weight), 0, padding_idx, padding_idx + 1, 1, &row));
        filo_status s = filo_tensor_fill(row, 0.0);
        filo_tensor_free(row);
        FILO_TRY(s);
    }
    return FILO_OK;
}

filo_status filo_nn_embedding_forward(const filo_nn_embedding *m, const filo_nn_ctx *ctx, const filo_tensor *ids,
                                      filo_var **y)
{
    if (!m || !ids || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, ids and y must not be NULL");
    FILO_TRY(filo_nn_ctx_check(ctx));
    if (!m->weight)
        return FILO_FAIL(FILO_ERR_STATE, "the Embedding has no weight (not initialized)");
    if (ids->dtype != FILO_I32 && ids->dtype != FILO_I64)
        return FILO_FAIL(FILO_ERR_DTYPE, "ids are %s; they must be i32 or i64", filo_dtype_name(ids->dtype));
    return filo_ag_embedding(m->weight, ids, m->padding_idx, y);
}
