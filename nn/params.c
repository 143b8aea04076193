/* The parameter store: named f32 leaves in registration order, their initializers, freezing. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "filo/params.h"

#define FILO_PI 3.14159265358979323846

typedef struct param_entry {
    char *name;
    filo_var *var;
    filo_param_role role;
} param_entry;

struct filo_params {
    filo_device device;
    filo_generator gen;
    param_entry *items;
    int n, cap;
};

/* ---- initializers ---- */

static void fans(const filo_tensor *t, double *fan_in, double *fan_out)
{
    if (t->ndim <= 1) {
        *fan_in = *fan_out = t->ndim == 1 ? (double)t->shape[0] : 1.0;
        return;
    }
    double receptive = 1.0;
    for (int d = 2; d < t->ndim; d++)
        receptive *= (double)t->shape[d];
    *fan_in = (double)t->shape[1] * receptive;
    *fan_out = (double)t->shape[0] * receptive;
}

/* erf^-1 for |x| < 1: Winitzki's closed form (about 2e-3 relative) polished by Newton steps. */
static double erfinv(double x)
{
    const double a = 0.147;
    double ln = log((1.0 - x) * (1.0 + x));
    double t = 2.0 / (FILO_PI * a) + 0.5 * ln;
    double y = copysign(sqrt(sqrt(t * t - ln / a) - t), x);
    for (int it = 0; it < 4; it++)
        y -= (erf(y) - x) / (2.0 / sqrt(FILO_PI) * exp(-y * y));
    return y;
}

/* PyTorch's trunc_normal_: uniform in [2 cdf(a) - 1, 2 cdf(b) - 1], erfinv, scale, clamp to
 * [mean - 2 std, mean + 2 std]. Drawn on the host in double, then copied to t's device. */
static filo_status trunc_normal(filo_tensor *t, filo_generator *gen, double mean, double std)
{
    double lo = mean - 2.0 * std, hi = mean + 2.0 * std;
    double cl = 0.5 * (1.0 + erf((lo - mean) / std / sqrt(2.0)));
    double cu = 0.5 * (1.0 + erf((hi - mean) / std / sqrt(2.0)));
    filo_tensor *u;
    FILO_TRY(filo_tensor_empty(filo_cpu(), FILO_F64, t->ndim, t->shape, &u));
    filo_status s = filo_tensor_uniform(u, gen, 2.0 * cl - 1.0, 2.0 * cu - 1.0);
    if (s == FILO_OK) {
        double *v = filo_tensor_data(u);
        int64_t n = filo_tensor_numel(u);
        for (int64_t i = 0; i < n; i++) {
            double x = erfinv(v[i]) * std * sqrt(2.0) + mean;
            v[i] = x < lo ? lo : x > hi ? hi : x;
        }
        s = filo_tensor_copy(t, u);
    }
    filo_tensor_free(u);
    return s;
}

filo_status filo_init_tensor(filo_tensor *t, filo_init init, filo_generator *gen)
{
    if (!t)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "tensor is NULL");
    if (!filo_dtype_is_float(t->dtype))
        return FILO_FAIL(FILO_ERR_DTYPE, "initializers need a float tensor, got %s", filo_dtype_name(t->dtype));
    if (!gen && init.kind >= FILO_INIT_NORMAL)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "a random initializer needs a generator");
    double fan_in, fan_out;
    fans(t, &fan_in, &fan_out);
    switch (init.kind) {
    case FILO_INIT_ZEROS:
        return filo_tensor_fill(t, 0.0);
    case FILO_INIT_ONES:
        return filo_tensor_fill(t, 1.0);
    case FILO_INIT_CONSTANT:
        return filo_tensor_fill(t, init.a);
    case FILO_INIT_NORMAL:
        return filo_tensor_normal(t, gen, init.a, init.b);
    case FILO_INIT_UNIFORM:
        return filo_tensor_uniform(t, gen, init.a, init.b);
    case FILO_INIT_TRUNC_NORMAL:
        if (!(init.b > 0) || !isfinite(init.a) || !isfinite(init.b))
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "trunc_normal(mean %g, std %g) is invalid", init.a, init.b);
        return trunc_normal(t, gen, init.a, init.b);
    case FILO_INIT_XAVIER_UNIFORM:
    case FILO_INIT_XAVIER_NORMAL: {
        double gain = init.a == 0.0 ? 1.0 : init.a;
        double std = gain * sqrt(2.0 / (fan_in + fan_out));
        if (init.kind == FILO_INIT_XAVIER_NORMAL)
            return filo_tensor_normal(t, gen, 0.0, std);
        double bound = sqrt(3.0) * std;
        return filo_tensor_uniform(t, gen, -bound, bound);
    }
    case FILO_INIT_KAIMING_UNIFORM:
    case FILO_INIT_KAIMING_NORMAL: {
        double gain = sqrt(2.0 / (1.0 + init.a * init.a));
        double std = gain / sqrt(fan_in);
        if (init.kind == FILO_INIT_KAIMING_NORMAL)
            return filo_tensor_normal(t, gen, 0.0, std);
        double bound = sqrt(3.0) * std;
        return filo_tensor_uniform(t, gen, -bound, bound);
    }
    }
    return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown initializer %d", (int)init.kind);
}

/* ---- the store ---- */

filo_status filo_params_new(filo_device device, uint64_t seed, filo_params **out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    FILO_TRY(filo_device_check(device));
    filo_params *ps = calloc(1, sizeof *ps);
    if (!ps)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for a parameter store");
    ps->device = device;
    filo_generator_init(&ps->gen, seed);
    *out = ps;
    return FILO_OK;
}

void filo_params_free(filo_params *ps)
{
    if (!ps)
        return;
    for (int i = 0; i < ps->n; i++) {
        free(ps->items[i].name);
        filo_var_free(ps->items[i].var);
    }
    free(ps->items);
    free(ps);
}

filo_device filo_params_device(const filo_params *ps) { return ps->device; }
filo_generator *filo_params_generator(filo_params *ps) { return &ps->gen; }

const char *filo_param_name_join(char *buf, size_t size, const char *prefix, const char *name)
{
    if (prefix && prefix[0])
        snprintf(buf, size, "%s.%s", prefix, name);
    else
        snprintf(buf, size, "%s", name);
    return buf;
}

filo_var *filo_params_find(const filo_params *ps, const char *name)
{
    if (!ps || !name)
        return NULL;
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->items[i].name, name) == 0)
            return ps->items[i].var;
    return NULL;
}

filo_status filo_params_create(filo_params *ps, const char *name, int ndim, const int64_t *shape, filo_init init,
                               filo_param_role role, filo_var **out)
{
    if (!ps || !name || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "store, name and out are required");
    *out = NULL;
    if (!name[0])
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "a parameter needs a non-empty name");
    if (filo_params_find(ps, name))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "parameter '%s' already exists in the store", name);
    if (role < FILO_PARAM_WEIGHT || role > FILO_PARAM_EMBEDDING)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "parameter '%s': unknown role %d", name, (int)role);
    if (ps->n == ps->cap) {
        int cap = ps->cap ? ps->cap * 2 : 32;
        param_entry *items = realloc(ps->items, sizeof *items * (size_t)cap);
        if (!items)
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory for parameter '%s'", name);
        ps->items = items;
        ps->cap = cap;
    }
    filo_tensor *t;
    filo_status s = filo_tensor_empty(ps->device, FILO_F32, ndim, shape, &t);
    if (s != FILO_OK)
        return filo_error_wrap(s, name);
    s = filo_init_tensor(t, init, &ps->gen);
    filo_var *v = NULL;
    if (s == FILO_OK)
        s = filo_var_new(t, 1, &v);
    filo_tensor_free(t);
    char *copy = s == FILO_OK ? strdup(name) : NULL;
    if (s == FILO_OK && !copy)
        s = FILO_FAIL(FILO_ERR_OOM, "out of host memory for parameter '%s'", name);
    if (s == FILO_OK)
        s = filo_var_set_name(v, name);
    if (s != FILO_OK) {
        free(copy);
        filo_var_free(v);
        return filo_error_wrap(s, name);
    }
    ps->items[ps->n++] = (param_entry){copy, v, role};
    *out = v;
    return FILO_OK;
}

int filo_params_count(const filo_params *ps) { return ps ? ps->n : 0; }

filo_var *filo_params_at(const filo_params *ps, int i)
{
    return ps && i >= 0 && i < ps->n ? ps->items[i].var : NULL;
}

const char *filo_params_name_at(const filo_params *ps, int i)
{
    return ps && i >= 0 && i < ps->n ? ps->items[i].name : NULL;
}

filo_param_role filo_params_role_at(const filo_params *ps, int i)
{
    return ps && i >= 0 && i < ps->n ? ps->items[i].role : FILO_PARAM_WEIGHT;
}

int64_t filo_params_numel(const filo_params *ps, int trainable_only)
{
    int64_t total = 0;
    for (int i = 0; ps && i < ps->n; i++)
        if (!trainable_only || filo_var_requires_grad(ps->items[i].var))
            total += filo_tensor_numel(filo_var_value(ps->items[i].var));
    return total;
}

/* name == prefix, or name starts with prefix followed by '.'; "" matches everything. */
static int prefix_matches(const char *name, const char *prefix)
{
    size_t n = strlen(prefix);
    return n == 0 || (strncmp(name, prefix, n) == 0 && (name[n] == '\0' || name[n] == '.'));
}

filo_status filo_params_freeze(filo_params *ps, const char *prefix, int frozen, int *count)
{
    if (!ps || !prefix)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "store and prefix are required");
    int changed = 0;
    for (int i = 0; i < ps->n; i++) {
        if (!prefix_matches(ps->items[i].name, prefix))
            continue;
        filo_var *v = ps->items[i].var;
        if (filo_var_requires_grad(v) == !frozen)
            continue;
        FILO_TRY(filo_var_set_requires_grad(v, !frozen));
        if (frozen)
            filo_var_zero_grad(v);
        changed++;
    }
    if (count)
        *count = changed;
    return FILO_OK;
}

filo_status filo_params_init(filo_params *ps, const char *prefix, filo_init init)
{
    if (!ps || !prefix)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "store and prefix are required");
    for (int i = 0; i < ps->n; i++) {
        if (!prefix_matches(ps->items[i].name, prefix))
            continue;
        filo_status s = filo_init_tensor(filo_var_value(ps->items[i].var), init, &ps->gen);
        if (s != FILO_OK)
            return filo_error_wrap(s, ps->items[i].name);
    }
    return FILO_OK;
}

void filo_params_zero_grad(filo_params *ps)
{
    for (int i = 0; ps && i < ps->n; i++)
        filo_var_zero_grad(ps->items[i].var);
}

filo_status filo_params_trainable(const filo_params *ps, int max, filo_var **vars, int *n)
{
    if (!ps || !n || (max > 0 && !vars))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "store, vars and n are required");
    int k = 0;
    for (int i = 0; i < ps->n; i++) {
        if (!filo_var_requires_grad(ps->items[i].var))
            continue;
        if (k == max)
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "more than %d trainable parameters", max);
        vars[k++] = ps->items[i].var;
    }
    *n = k;
    return FILO_OK;
}
