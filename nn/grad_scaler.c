/* Dynamic loss scaling (torch.amp.GradScaler's rule) with the scale, the growth tracker and the
 * last step's found-inf flag in 0-dim f32 device tensors: filo_optimizer_step writes the flag and
 * calls filo_grad_scaler_update, whose one-thread kernel (kernels/optim_rules_backend.h) backs off
 * or grows the scale without the host seeing any of it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "filo/ag.h"
#include "filo/optimizer.h"
#include "optim_rules_backend.h"

struct filo_grad_scaler {
    filo_device dev;
    filo_grad_scaler_config cfg;
    filo_tensor *scale, *growth_tracker, *found_inf;
};

filo_grad_scaler_config filo_grad_scaler_defaults(void)
{
    filo_grad_scaler_config c = {65536.0, 2.0, 0.5, 2000};
    return c;
}

filo_status filo_grad_scaler_new(filo_device device, const filo_grad_scaler_config *cfg, filo_grad_scaler **out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "the output pointer out is NULL");
    *out = NULL;
    filo_grad_scaler_config c = cfg ? *cfg : filo_grad_scaler_defaults();
    if (!(c.init_scale > 0.0) || !(c.init_scale <= 3.4e38))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "init_scale must be > 0 and finite in f32, got %g", c.init_scale);
    if (!(c.growth_factor > 1.0) || !isfinite(c.growth_factor))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "growth_factor must be finite and > 1, got %g", c.growth_factor);
    if (!(c.backoff_factor > 0.0 && c.backoff_factor < 1.0))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "backoff_factor must be in (0, 1), got %g", c.backoff_factor);
    if (c.growth_interval < 1 || c.growth_interval > (1 << 24))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "growth_interval must be in [1, 2^24], got %lld",
                         (long long)c.growth_interval);
    filo_grad_scaler *s = calloc(1, sizeof *s);
    if (!s)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    s->dev = device;
    s->cfg = c;
    filo_status st = filo_tensor_full(device, FILO_F32, 0, NULL, c.init_scale, &s->scale);
    if (st == FILO_OK)
        st = filo_tensor_zeros(device, FILO_F32, 0, NULL, &s->growth_tracker);
    if (st == FILO_OK)
        st = filo_tensor_zeros(device, FILO_F32, 0, NULL, &s->found_inf);
    if (st != FILO_OK) {
        filo_grad_scaler_free(s);
        return filo_error_wrap(st, __func__);
    }
    *out = s;
    return FILO_OK;
}

void filo_grad_scaler_free(filo_grad_scaler *s)
{
    if (!s)
        return;
    filo_tensor_free(s->scale);
    filo_tensor_free(s->growth_tracker);
    filo_tensor_free(s->found_inf);
    free(s);
}

filo_status filo_grad_scaler_scale(filo_grad_scaler *s, filo_var *loss, filo_var **scaled)
{
    char a[160], d[32];
    if (!s || !loss || !scaled)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "scaler, loss and scaled must not be NULL");
    const filo_tensor *v = filo_var_value(loss);
    if (v->ndim != 0 || v->dtype != FILO_F32)
        return FILO_FAIL(FILO_ERR_SHAPE, "loss %s must be a 0-dim f32 tensor", filo_tensor_describe(v, a, sizeof a));
    if (!filo_device_equal(v->device, s->dev))
        return FILO_FAIL(FILO_ERR_DEVICE, "loss %s is not on the scaler's device %s",
                         filo_tensor_describe(v, a, sizeof a), filo_device_format(s->dev, d, sizeof d));
    filo_var *sv = NULL;
    FILO_TRY(filo_var_new(s->scale, 0, &sv));
    filo_status st = filo_ag_mul(loss, sv, scaled);
    filo_var_free(sv);
    return st == FILO_OK ? FILO_OK : filo_error_wrap(st, __func__);
}

filo_status filo_grad_scaler_update(filo_grad_scaler *s)
{
    if (!s)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "scaler is NULL");
    filo_scaler_desc d = {
        .scale = filo_tensor_data(s->scale),
        .growth_tracker = filo_tensor_data(s->growth_tracker),
        .found_inf = filo_tensor_data(s->found_inf),
        .growth_factor = (float)s->cfg.growth_factor,
        .backoff_factor = (float)s->cfg.backoff_factor,
        .growth_interval = (float)s->cfg.growth_interval,
    };
    filo_status st = filo_scaler_update(s->dev, &d);
    return st == FILO_OK ? FILO_OK : filo_error_wrap(st, __func__);
}

static double read_scalar(const filo_tensor *t)
{
    float v = NAN;
    if (filo_tensor_to_host(t, &v, sizeof v) != FILO_OK)
        return NAN;
    return v;
}

double filo_grad_scaler_get_scale(const filo_grad_scaler *s) { return s ? read_scalar(s->scale) : NAN; }

int filo_grad_scaler_last_skipped(const filo_grad_scaler *s) { return s && read_scalar(s->found_inf) != 0.0; }

filo_tensor *filo_grad_scaler_tensor(const filo_grad_scaler *s, const char *name)
{
    if (!s || !name)
        return NULL;
    if (!strcmp(name, "scale"))
        return s->scale;
    if (!strcmp(name, "growth_tracker"))
        return s->growth_tracker;
    if (!strcmp(name, "found_inf"))
        return s->found_inf;
    return NULL;
}
