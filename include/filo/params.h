/* Named parameters: the store every module registers its weights in, their initialization,
 * traversal, counting and freezing.
 *
 * A filo_params store owns its parameters: leaves (filo_var, requires_grad 1) with f32 values
 * on the store's device, each under a unique dotted name ("encoder.layer.0.attention.self.query.
 * weight", Hugging Face's names where a model has them). Modules hold borrowed pointers to the
 * parameters they created; freeing the store frees them all, so a model is freed in one call.
 * Parameters keep their registration order: traversal, optimizers and checkpoints see them in
 * that order.
 *
 * Each parameter has a role (weight, bias, norm, embedding). Optimizers use it to leave biases and
 * normalization weights out of weight decay, as BERT's recipe does. */
#ifndef FILO_PARAMS_H
#define FILO_PARAMS_H

#include <stdint.h>

#include "filo/autograd.h"
#include "filo/rng.h"
#include "filo/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_param_role {
    FILO_PARAM_WEIGHT = 0, /* matmul and conv weights: weight decay applies */
    FILO_PARAM_BIAS,       /* no weight decay */
    FILO_PARAM_NORM,       /* LayerNorm/RMSNorm gain and shift: no weight decay */
    FILO_PARAM_EMBEDDING,  /* embedding tables: weight decay applies (as Hugging Face's recipe) */
} filo_param_role;

/* Initializers, with PyTorch's torch.nn.init definitions. fan_in and fan_out come from the
 * shape as PyTorch computes them: [out, in, k...] gives fan_in = in * prod(k), fan_out =
 * out * prod(k); a 1-D tensor has fan_in = fan_out = its size.
 *   ZEROS, ONES, CONSTANT(a)
 *   NORMAL(a = mean, b = std), UNIFORM(a = low, b = high), TRUNC_NORMAL(mean a, std b, cut at +-2 std)
 *   XAVIER_UNIFORM / XAVIER_NORMAL (a = gain, 0 means 1)
 *   KAIMING_UNIFORM / KAIMING_NORMAL (a = negative slope of leaky_relu, fan_in mode, gain
 *     sqrt(2 / (1 + a^2))); nn.Linear's default is KAIMING_UNIFORM with a = sqrt(5). */
typedef enum filo_init_kind {
    FILO_INIT_ZEROS = 0,
    FILO_INIT_ONES,
    FILO_INIT_CONSTANT,
    FILO_INIT_NORMAL,
    FILO_INIT_UNIFORM,
    FILO_INIT_TRUNC_NORMAL,
    FILO_INIT_XAVIER_UNIFORM,
    FILO_INIT_XAVIER_NORMAL,
    FILO_INIT_KAIMING_UNIFORM,
    FILO_INIT_KAIMING_NORMAL,
} filo_init_kind;

typedef struct filo_init {
    filo_init_kind kind;
    double a, b;
} filo_init;

/* Fills t (float dtype, any device) from gen as the initializer says. */
filo_status filo_init_tensor(filo_tensor *t, filo_init init, filo_generator *gen);

typedef struct filo_params filo_params;

/* A store on `device` whose initializers draw from a generator seeded with `seed`. */
filo_status filo_params_new(filo_device device, uint64_t seed, filo_params **out);
/* Frees every parameter of the store (NULL is a no-op). */
void filo_params_free(filo_params *ps);

filo_device filo_params_device(const filo_params *ps);
/* The initialization generator (modules draw from it when created). */
filo_generator *filo_params_generator(filo_params *ps);

/* Creates an f32 parameter `name` (unique in the store, else FILO_ERR_INVALID_ARG) of the given
 * shape, initialized by `init`, and returns it (borrowed: the store owns it). */
filo_status filo_params_create(filo_params *ps, const char *name, int ndim, const int64_t *shape,
                               filo_init init, filo_param_role role, filo_var **out);
/* Joins prefix and name with a dot into buf ("" or NULL prefix: just name); for module code. */
const char *filo_param_name_join(char *buf, size_t size, const char *prefix, const char *name);

/* Traversal in registration order; i in [0, count). */
int filo_params_count(const filo_params *ps);
filo_var *filo_params_at(const filo_params *ps, int i);
const char *filo_params_name_at(const filo_params *ps, int i);
filo_param_role filo_params_role_at(const filo_params *ps, int i);
/* The parameter named `name`, or NULL. */
filo_var *filo_params_find(const filo_params *ps, const char *name);
/* Elements in all parameters (trainable_only: only those with requires_grad). */
int64_t filo_params_numel(const filo_params *ps, int trainable_only);

/* Freezes (requires_grad 0) or unfreezes every parameter whose name equals `prefix` or starts
 * with `prefix` followed by a dot ("" matches all). Returns the number changed in *count (may
 * be NULL). */
filo_status filo_params_freeze(filo_params *ps, const char *prefix, int frozen, int *count);
/* Re-initializes every parameter matching prefix (as freeze matches) with init. */
filo_status filo_params_init(filo_params *ps, const char *prefix, filo_init init);
/* Drops every parameter's gradient (zero_grad(set_to_none=True)). */
void filo_params_zero_grad(filo_params *ps);
/* The trainable parameters into vars[0..*n) (capacity max): for optimizers. */
filo_status filo_params_trainable(const filo_params *ps, int max, filo_var **vars, int *n);

#ifdef __cplusplus
}
#endif
#endif
