/* Highway layer (Srivastava et al. 2015): a learned gate t mixes a transform of x with x itself,
 * y = t * act(x Wt^T + bt) + (1 - t) * x, computed as x + t * (h - x). The gate bias starts at -1
 * so the layer begins close to carrying x through. */
#include "error.h"
#include "nn_internal.h"

filo_status filo_nn_highway_init(filo_nn_highway *m, filo_params *ps, const char *prefix, int64_t dim,
                                 filo_activation act)
{
    if (!m || !ps)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m and ps must not be NULL");
    if ((int)act < 0 || act > FILO_ACT_NONE)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown activation %d", (int)act);
    m->act = act;
    char name[FILO_NN_NAME_MAX];
    FILO_TRY(filo_nn_linear_init(&m->transform, ps, filo_param_name_join(name, sizeof name, prefix, "transform"), dim,
                                 dim, 1));
    FILO_TRY(filo_nn_linear_init(&m->gate, ps, filo_param_name_join(name, sizeof name, prefix, "gate"), dim, dim, 1));
    return filo_init_tensor(filo_var_value(m->gate.bias), (filo_init){FILO_INIT_CONSTANT, -1.0, 0}, NULL);
}

filo_status filo_nn_highway_forward(const filo_nn_highway *m, const filo_nn_ctx *ctx, filo_var *x, filo_var **y)
{
    if (!m || !x || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m, x and y must not be NULL");
    *y = NULL;
    /* The matmuls run in the autocast dtype; the gating arithmetic in x's. */
    filo_dtype dt = filo_var_value(x)->dtype;
    filo_var *h = NULL, *hx = NULL, *g = NULL, *gx = NULL, *t = NULL, *d = NULL, *td = NULL;
    filo_status s = filo_nn_linear_forward_act(&m->transform, ctx, x, m->act, &h);
    if (s == FILO_OK)
        s = filo_nn_cast_to(h, dt, &hx);
    if (s == FILO_OK)
        s = filo_nn_linear_forward(&m->gate, ctx, x, &g);
    if (s == FILO_OK)
        s = filo_nn_cast_to(g, dt, &gx);
    if (s == FILO_OK)
        s = filo_ag_unary(FILO_UNARY_SIGMOID, gx, &t);
    if (s == FILO_OK)
        s = filo_ag_sub(hx, x, &d);
    if (s == FILO_OK)
        s = filo_ag_mul(t, d, &td);
    if (s == FILO_OK)
        s = filo_ag_add(x, td, y);
    filo_var *all[] = {h, hx, g, gx, t, d, td};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        filo_var_free(all[i]);
    return s;
}
