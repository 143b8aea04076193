/* Activation functions by name (Hugging Face's hidden_act) and as a differentiable op. */
#include <string.h>

#include "error.h"
#include "filo/nn.h"

filo_status filo_activation_parse(const char *name, filo_activation *out)
{
    if (!name || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "name and out must not be NULL");
    static const struct {
        const char *name;
        filo_activation act;
    } table[] = {
        {"gelu", FILO_ACT_GELU},       {"gelu_new", FILO_ACT_GELU_TANH}, {"gelu_pytorch_tanh", FILO_ACT_GELU_TANH},
        {"relu", FILO_ACT_RELU},       {"tanh", FILO_ACT_TANH},          {"silu", FILO_ACT_SILU},
        {"swish", FILO_ACT_SILU},      {"sigmoid", FILO_ACT_SIGMOID},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(name, table[i].name) == 0) {
            *out = table[i].act;
            return FILO_OK;
        }
    return FILO_FAIL(FILO_ERR_INVALID_ARG,
                     "unknown activation '%s' (expected gelu, gelu_new, gelu_pytorch_tanh, relu, tanh, silu, swish "
                     "or sigmoid)",
                     name);
}

filo_status filo_nn_activate(filo_activation act, filo_var *x, filo_var **y)
{
    if (!x || !y)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "x and y must not be NULL");
    static const filo_unary_op ops[] = {
        [FILO_ACT_GELU] = FILO_UNARY_GELU, [FILO_ACT_GELU_TANH] = FILO_UNARY_GELU_TANH,
        [FILO_ACT_RELU] = FILO_UNARY_RELU, [FILO_ACT_TANH] = FILO_UNARY_TANH,
        [FILO_ACT_SILU] = FILO_UNARY_SILU, [FILO_ACT_SIGMOID] = FILO_UNARY_SIGMOID,
    };
    if (act == FILO_ACT_NONE) {
        *y = filo_var_retain(x);
        return FILO_OK;
    }
    if ((int)act < 0 || act >= FILO_ACT_NONE)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown activation %d", (int)act);
    return filo_ag_unary(ops[act], x, y);
}
