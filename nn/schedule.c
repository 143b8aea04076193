/* Learning-rate schedules: Hugging Face's get_{constant,linear,cosine}_schedule_with_warmup.
 * The factor is one FILO_HD function (kernels/optim_rules_backend.h), so the host value of
 * filo_schedule_factor and the one the optimizer's kernels compute from the device step count
 * come from the same code. */
#include <math.h>

#include "error.h"
#include "optim_internal.h"

filo_sched_desc filo_schedule_desc(const filo_schedule *s)
{
    filo_sched_desc d = {0, 0.0, 0.0, 0.0};
    if (s) {
        d.kind = (int)s->kind;
        d.warmup = (double)s->warmup_steps;
        d.total = (double)s->total_steps;
        d.min_factor = s->kind == FILO_SCHEDULE_COSINE ? s->min_factor : 0.0;
    }
    return d;
}

filo_status filo_schedule_check(const filo_schedule *s, const char *op)
{
    if (!s)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "schedule is NULL");
    if (s->kind != FILO_SCHEDULE_CONSTANT && s->kind != FILO_SCHEDULE_LINEAR && s->kind != FILO_SCHEDULE_COSINE)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "unknown schedule kind %d", (int)s->kind);
    if (s->warmup_steps < 0)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "warmup_steps must be >= 0, got %lld",
                              (long long)s->warmup_steps);
    if (s->kind != FILO_SCHEDULE_CONSTANT && s->total_steps <= s->warmup_steps)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "total_steps (%lld) must be > warmup_steps (%lld)",
                              (long long)s->total_steps, (long long)s->warmup_steps);
    if (s->kind == FILO_SCHEDULE_COSINE && !(s->min_factor >= 0.0 && s->min_factor <= 1.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "min_factor must be in [0, 1], got %g", s->min_factor);
    /* The device counts steps in f32: exact up to 2^24. */
    if (s->total_steps > (1 << 24) || s->warmup_steps > (1 << 24))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "steps above 2^24 are not exact in the f32 step counter "
                              "(warmup %lld, total %lld)", (long long)s->warmup_steps, (long long)s->total_steps);
    return FILO_OK;
}

double filo_schedule_factor(const filo_schedule *s, int64_t step)
{
    if (!s)
        return 1.0;
    filo_sched_desc d = filo_schedule_desc(s);
    return filo_sched_factor_at(&d, (double)step);
}
