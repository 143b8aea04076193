/* Optimizers over parameter groups (filo/optimizer.h).
 *
 * A step is a fixed sequence of device work with no host read in it:
 *   1. the raw global gradient norm and non-finite flag (filo_grad_norm / filo_found_inf), only
 *      when clipping, a scaler or a norm output asks for them;
 *   2. the prologue kernel (one thread): found_inf, the gradient multiplier
 *      1 / (loss scale * k) * clip coefficient, the norm output, and the step count + 1 unless
 *      found_inf;
 *   3. the rule's multi-tensor kernels over every parameter with a gradient (all groups in one
 *      table: each tensor carries its group's device lr pointer and weight decay); every block
 *      computes the schedule factor at (step count - 1), the scheduled lr and the bias
 *      corrections itself, and returns at once when found_inf is set;
 *   4. the loss scaler's update kernel.
 * So the schedule advances with the device step count, which a skipped step does not advance, and
 * a captured step follows both on every replay.
 *
 * One step counter serves all parameters (the checkpoint's "step"): bias corrections, AdaGrad's
 * lr decay and SGD's first momentum step use it. A parameter that first gets a gradient after
 * other parameters have stepped therefore uses the optimizer's count where PyTorch would keep a
 * count per parameter. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "filo/optim.h"
#include "optim_internal.h"

typedef struct opt_param {
    filo_var *var;
    int group;
    filo_tensor *state[FILO_RULE_SLOTS];
    char *state_name[FILO_RULE_SLOTS];
} opt_param;

typedef struct opt_group {
    filo_tensor *lr; /* 0-dim f32: the base lr */
    char *lr_name;
    double wd;
} opt_group;

struct filo_optimizer {
    filo_device dev;
    filo_optimizer_config cfg;
    filo_rule_consts consts;
    opt_param *params;
    int n, cap;
    opt_group *groups;
    int ng, gcap;
    filo_tensor *step_count; /* 0-dim f32 */
    filo_tensor *grad_scale; /* 0-dim f32, the last step's gradient multiplier */
    filo_schedule schedule;  /* as set, for checkpoints (zeros: CONSTANT without warmup) */
};

static const char *const kind_names[] = {"sgd", "adam", "adamw", "radam", "rmsprop", "adagrad", "lamb"};
#define KIND_COUNT ((int)(sizeof kind_names / sizeof kind_names[0]))

const char *filo_optimizer_kind_name(filo_optimizer_kind kind)
{
    return (int)kind >= 0 && (int)kind < KIND_COUNT ? kind_names[kind] : "unknown";
}

filo_status filo_optimizer_kind_parse(const char *name, filo_optimizer_kind *out)
{
    if (!name || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "name and out must not be NULL");
    for (int k = 0; k < KIND_COUNT; k++)
        if (!strcmp(name, kind_names[k])) {
            *out = (filo_optimizer_kind)k;
            return FILO_OK;
        }
    return FILO_FAIL(FILO_ERR_INVALID_ARG, "unknown optimizer '%s' (sgd, adam, adamw, radam, rmsprop, adagrad, lamb)",
                     name);
}

filo_optimizer_config filo_optimizer_defaults(filo_optimizer_kind kind)
{
    filo_optimizer_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lr = (kind == FILO_OPT_RMSPROP || kind == FILO_OPT_ADAGRAD) ? 1e-2 : 1e-3;
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    c.eps = kind == FILO_OPT_ADAGRAD ? 1e-10 : kind == FILO_OPT_LAMB ? 1e-6 : 1e-8;
    c.weight_decay = (kind == FILO_OPT_ADAMW || kind == FILO_OPT_LAMB) ? 1e-2 : 0.0;
    c.alpha = 0.99;
    return c;
}

filo_step_options filo_step_defaults(void)
{
    filo_step_options o;
    memset(&o, 0, sizeof o);
    o.accumulated = 1;
    return o;
}

static int finite_nonneg(double x) { return x >= 0.0 && isfinite(x); }

static filo_status check_config(const filo_optimizer_config *c, const char *op)
{
    if ((int)c->kind < 0 || (int)c->kind >= KIND_COUNT)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "unknown optimizer kind %d", (int)c->kind);
    if (!finite_nonneg(c->lr))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "lr must be finite and >= 0, got %g", c->lr);
    if (!finite_nonneg(c->weight_decay))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "weight_decay must be finite and >= 0, got %g",
                              c->weight_decay);
    if (!finite_nonneg(c->momentum))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "momentum must be finite and >= 0, got %g", c->momentum);
    if (!(c->dampening >= 0.0 && c->dampening <= 1.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dampening must be in [0, 1], got %g", c->dampening);
    if (c->nesterov != 0 && c->nesterov != 1)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "nesterov must be 0 or 1, got %d", c->nesterov);
    if (c->kind == FILO_OPT_SGD && c->nesterov && (c->momentum <= 0.0 || c->dampening != 0.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op,
                              "nesterov momentum requires a momentum > 0 and zero dampening (momentum %g, dampening %g)",
                              c->momentum, c->dampening);
    if (!(c->beta1 >= 0.0 && c->beta1 < 1.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "beta1 must be in [0, 1), got %g", c->beta1);
    if (!(c->beta2 >= 0.0 && c->beta2 < 1.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "beta2 must be in [0, 1), got %g", c->beta2);
    if (!finite_nonneg(c->eps))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "eps must be finite and >= 0, got %g", c->eps);
    if (!(c->alpha >= 0.0 && c->alpha <= 1.0))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "alpha must be in [0, 1], got %g", c->alpha);
    if (c->centered != 0 && c->centered != 1)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "centered must be 0 or 1, got %d", c->centered);
    if (!finite_nonneg(c->lr_decay))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "lr_decay must be finite and >= 0, got %g", c->lr_decay);
    if (!finite_nonneg(c->initial_accumulator_value))
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "initial_accumulator_value must be finite and >= 0, got %g",
                              c->initial_accumulator_value);
    if (c->decoupled_weight_decay != 0 && c->decoupled_weight_decay != 1)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "decoupled_weight_decay must be 0 or 1, got %d",
                              c->decoupled_weight_decay);
    return FILO_OK;
}

/* The state slot names of the rule (NULL: slot unused), in the order of optim_rules_backend.h. */
static void slot_names(const filo_optimizer_config *c, const char *names[FILO_RULE_SLOTS])
{
    for (int k = 0; k < FILO_RULE_SLOTS; k++)
        names[k] = NULL;
    switch (c->kind) {
    case FILO_OPT_SGD:
        if (c->momentum != 0.0)
            names[0] = "momentum_buffer";
        break;
    case FILO_OPT_RMSPROP:
        names[0] = "square_avg";
        if (c->momentum > 0.0)
            names[1] = "momentum_buffer";
        if (c->centered)
            names[2] = "grad_avg";
        break;
    case FILO_OPT_ADAGRAD:
        names[0] = "sum";
        break;
    default:
        names[0] = "exp_avg";
        names[1] = "exp_avg_sq";
        break;
    }
}

filo_status filo_optimizer_new(filo_device device, const filo_optimizer_config *cfg, filo_optimizer **out)
{
    if (!cfg || !out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "cfg and out must not be NULL");
    *out = NULL;
    FILO_TRY(check_config(cfg, __func__));
    filo_optimizer *o = calloc(1, sizeof *o);
    if (!o)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    o->dev = device;
    o->cfg = *cfg;
    filo_rule_consts *k = &o->consts;
    k->kind = (int)cfg->kind;
    k->nesterov = cfg->nesterov;
    k->centered = cfg->centered;
    k->decoupled = cfg->decoupled_weight_decay;
    k->has_momentum = cfg->momentum > 0.0;
    k->momentum = (float)cfg->momentum;
    k->one_minus_dampening = (float)(1.0 - cfg->dampening);
    k->beta1 = (float)cfg->beta1;
    k->beta2 = (float)cfg->beta2;
    k->one_minus_beta1 = (float)(1.0 - cfg->beta1);
    k->one_minus_beta2 = (float)(1.0 - cfg->beta2);
    k->eps = (float)cfg->eps;
    k->alpha = (float)cfg->alpha;
    k->one_minus_alpha = (float)(1.0 - cfg->alpha);
    k->beta1_d = cfg->beta1;
    k->beta2_d = cfg->beta2;
    k->lr_decay = cfg->lr_decay;
    k->sched = filo_schedule_desc(NULL);
    filo_status st = filo_tensor_zeros(device, FILO_F32, 0, NULL, &o->step_count);
    if (st == FILO_OK)
        st = filo_tensor_full(device, FILO_F32, 0, NULL, 1.0, &o->grad_scale);
    if (st != FILO_OK) {
        filo_optimizer_free(o);
        return filo_error_wrap(st, __func__);
    }
    *out = o;
    return FILO_OK;
}

void filo_optimizer_free(filo_optimizer *opt)
{
    if (!opt)
        return;
    for (int i = 0; i < opt->n; i++) {
        filo_var_free(opt->params[i].var);
        for (int k = 0; k < FILO_RULE_SLOTS; k++) {
            filo_tensor_free(opt->params[i].state[k]);
            free(opt->params[i].state_name[k]);
        }
    }
    for (int g = 0; g < opt->ng; g++) {
        filo_tensor_free(opt->groups[g].lr);
        free(opt->groups[g].lr_name);
    }
    free(opt->params);
    free(opt->groups);
    filo_tensor_free(opt->step_count);
    filo_tensor_free(opt->grad_scale);
    free(opt);
}

static char *format_name(const char *a, const char *b)
{
    size_t len = strlen(a) + strlen(b) + 2;
    char *s = malloc(len);
    if (s)
        snprintf(s, len, "%s.%s", a, b);
    return s;
}

/* Two parameters over the same memory would be updated twice. */
static int same_data(const filo_tensor *a, const filo_tensor *b)
{
    return filo_tensor_numel(a) > 0 && filo_tensor_data(a) == filo_tensor_data(b);
}

static filo_status check_group_params(filo_optimizer *opt, int n, filo_var *const *params, const char *op)
{
    char a[160], d[32];
    for (int i = 0; i < n; i++) {
        filo_var *v = params[i];
        if (!v)
            return filo_error_set(FILO_ERR_INVALID_ARG, op, "params[%d] is NULL", i);
        const filo_tensor *t = filo_var_value(v);
        if (!filo_var_is_leaf(v))
            return filo_error_set(FILO_ERR_INVALID_ARG, op, "params[%d] (op %s) is not a leaf", i,
                                  filo_var_op_name(v));
        if (t->dtype != FILO_F32)
            return filo_error_set(FILO_ERR_DTYPE, op, "params[%d] %s must be f32 (the optimizer's master weights)",
                                  i, filo_tensor_describe(t, a, sizeof a));
        if (!filo_device_equal(t->device, opt->dev))
            return filo_error_set(FILO_ERR_DEVICE, op, "params[%d] %s is not on the optimizer's device %s", i,
                                  filo_tensor_describe(t, a, sizeof a), filo_device_format(opt->dev, d, sizeof d));
        if (!filo_tensor_is_contiguous(t))
            return filo_error_set(FILO_ERR_SHAPE, op, "params[%d] %s is updated in place and must be contiguous", i,
                                  filo_tensor_describe(t, a, sizeof a));
        for (int j = 0; j < opt->n; j++)
            if (opt->params[j].var == v || same_data(filo_var_value(opt->params[j].var), t))
                return filo_error_set(FILO_ERR_INVALID_ARG, op, "params[%d] %s is already in group %d", i,
                                      filo_tensor_describe(t, a, sizeof a), opt->params[j].group);
        for (int j = 0; j < i; j++)
            if (params[j] == v || same_data(filo_var_value(params[j]), t))
                return filo_error_set(FILO_ERR_INVALID_ARG, op, "params[%d] and params[%d] are the same parameter", j,
                                      i);
    }
    return FILO_OK;
}

/* Creates parameter i's state tensors and names (zeros; AdaGrad's sum starts at the initial
 * accumulator). */
static filo_status init_param(filo_optimizer *opt, opt_param *p, const char *name)
{
    const char *slots[FILO_RULE_SLOTS];
    slot_names(&opt->cfg, slots);
    const filo_tensor *v = filo_var_value(p->var);
    for (int k = 0; k < FILO_RULE_SLOTS; k++) {
        if (!slots[k])
            continue;
        double init = opt->cfg.kind == FILO_OPT_ADAGRAD ? opt->cfg.initial_accumulator_value : 0.0;
        FILO_TRY(filo_tensor_full(opt->dev, FILO_F32, v->ndim, v->shape, init, &p->state[k]));
        p->state_name[k] = format_name(name, slots[k]);
        if (!p->state_name[k])
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    }
    return FILO_OK;
}

filo_status filo_optimizer_add_group(filo_optimizer *opt, int n, filo_var *const *params, const char *const *names,
                                     double lr, double weight_decay, int *group)
{
    const char *op = __func__;
    if (!opt)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "opt is NULL");
    if (n < 0 || (n > 0 && !params))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "n must be >= 0 with a params array, got n %d, params %p", n,
                         (const void *)params);
    if (!finite_nonneg(lr))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "lr must be finite and >= 0, got %g", lr);
    if (!finite_nonneg(weight_decay))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "weight_decay must be finite and >= 0, got %g", weight_decay);
    if (names)
        for (int i = 0; i < n; i++)
            if (!names[i])
                return FILO_FAIL(FILO_ERR_INVALID_ARG, "names[%d] is NULL", i);
    FILO_TRY(check_group_params(opt, n, params, op));
    if (opt->ng == opt->gcap) {
        int cap = opt->gcap ? 2 * opt->gcap : 4;
        opt_group *g = realloc(opt->groups, sizeof *g * (size_t)cap);
        if (!g)
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
        opt->groups = g;
        opt->gcap = cap;
    }
    if (opt->n + n > opt->cap) {
        int cap = opt->cap ? opt->cap : 8;
        while (cap < opt->n + n)
            cap *= 2;
        opt_param *p = realloc(opt->params, sizeof *p * (size_t)cap);
        if (!p)
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
        opt->params = p;
        opt->cap = cap;
    }
    int g = opt->ng;
    opt_group *gr = &opt->groups[g];
    memset(gr, 0, sizeof *gr);
    gr->wd = weight_decay;
    char buf[64];
    snprintf(buf, sizeof buf, "group%d.lr", g);
    gr->lr_name = strdup(buf);
    filo_status st = gr->lr_name ? filo_tensor_full(opt->dev, FILO_F32, 0, NULL, lr, &gr->lr)
                                 : FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    int added = 0;
    for (int i = 0; i < n && st == FILO_OK; i++) {
        opt_param *p = &opt->params[opt->n + i];
        memset(p, 0, sizeof *p);
        p->var = filo_var_retain(params[i]);
        p->group = g;
        added++;
        char fallback[48];
        snprintf(fallback, sizeof fallback, "group%d.%d", g, i);
        st = init_param(opt, p, names ? names[i] : fallback);
    }
    if (st != FILO_OK) {
        for (int i = 0; i < added; i++) {
            opt_param *p = &opt->params[opt->n + i];
            filo_var_free(p->var);
            for (int k = 0; k < FILO_RULE_SLOTS; k++) {
                filo_tensor_free(p->state[k]);
                free(p->state_name[k]);
            }
        }
        filo_tensor_free(gr->lr);
        free(gr->lr_name);
        return filo_error_wrap(st, op);
    }
    opt->n += n;
    opt->ng++;
    if (group)
        *group = g;
    return FILO_OK;
}

filo_status filo_optimizer_add_params(filo_optimizer *opt, const filo_params *ps)
{
    if (!opt || !ps)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "opt and ps must not be NULL");
    int count = filo_params_count(ps);
    filo_var **vars[2];
    const char **names[2];
    int n[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        vars[k] = malloc(sizeof(filo_var *) * (size_t)(count > 0 ? count : 1));
        names[k] = malloc(sizeof(char *) * (size_t)(count > 0 ? count : 1));
    }
    filo_status st = FILO_OK;
    if (!vars[0] || !vars[1] || !names[0] || !names[1])
        st = FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    for (int i = 0; i < count && st == FILO_OK; i++) {
        filo_var *v = filo_params_at(ps, i);
        if (!filo_var_requires_grad(v))
            continue;
        filo_param_role r = filo_params_role_at(ps, i);
        int k = (r == FILO_PARAM_BIAS || r == FILO_PARAM_NORM) ? 1 : 0;
        vars[k][n[k]] = v;
        names[k][n[k]++] = filo_params_name_at(ps, i);
    }
    if (st == FILO_OK)
        st = filo_optimizer_add_group(opt, n[0], vars[0], names[0], opt->cfg.lr, opt->cfg.weight_decay, NULL);
    if (st == FILO_OK)
        st = filo_optimizer_add_group(opt, n[1], vars[1], names[1], opt->cfg.lr, 0.0, NULL);
    for (int k = 0; k < 2; k++) {
        free(vars[k]);
        free(names[k]);
    }
    return st == FILO_OK ? FILO_OK : filo_error_wrap(st, __func__);
}

filo_status filo_optimizer_set_schedule(filo_optimizer *opt, const filo_schedule *s)
{
    if (!opt)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "opt is NULL");
    if (s)
        FILO_TRY(filo_schedule_check(s, __func__));
    opt->consts.sched = filo_schedule_desc(s);
    opt->schedule = s ? *s : (filo_schedule){.kind = FILO_SCHEDULE_CONSTANT};
    return FILO_OK;
}

filo_status filo_optimizer_get_config(const filo_optimizer *opt, filo_optimizer_config *cfg, filo_schedule *schedule)
{
    if (!opt)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "opt is NULL");
    if (cfg)
        *cfg = opt->cfg;
    if (schedule)
        *schedule = opt->schedule;
    return FILO_OK;
}

filo_status filo_optimizer_set_group_lr(filo_optimizer *opt, int group, double lr)
{
    if (!opt)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "opt is NULL");
    if (group < 0 || group >= opt->ng)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "group %d out of range [0, %d)", group, opt->ng);
    if (!finite_nonneg(lr))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "lr must be finite and >= 0, got %g", lr);
    return filo_tensor_fill(opt->groups[group].lr, lr);
}

static int grad_bucket(filo_dtype t) { return t == FILO_F32 ? 0 : t == FILO_BF16 ? 1 : t == FILO_F16 ? 2 : -1; }
static const filo_dtype bucket_dtype[3] = {FILO_F32, FILO_BF16, FILO_F16};

/* The step's host-side work list: per grad dtype, the rule tensors and their contiguous grads. */
typedef struct step_work {
    filo_rule_tensor *tab[3];
    const filo_tensor **grads[3];
    int count[3];
    filo_tensor **owned; /* contiguous grads, one per parameter with a gradient */
    int nowned;
    filo_tensor *norm[3], *flag[3], *partial;
} step_work;

static void work_free(step_work *w)
{
    for (int b = 0; b < 3; b++) {
        free(w->tab[b]);
        free((void *)w->grads[b]);
        filo_tensor_free(w->norm[b]);
        filo_tensor_free(w->flag[b]);
    }
    for (int i = 0; i < w->nowned; i++)
        filo_tensor_free(w->owned[i]);
    free(w->owned);
    filo_tensor_free(w->partial);
}

static filo_status collect(filo_optimizer *opt, step_work *w)
{
    char a[160];
    size_t n = (size_t)(opt->n > 0 ? opt->n : 1);
    for (int b = 0; b < 3; b++) {
        w->tab[b] = calloc(n, sizeof *w->tab[b]);
        w->grads[b] = calloc(n, sizeof *w->grads[b]);
        if (!w->tab[b] || !w->grads[b])
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    }
    w->owned = calloc(n, sizeof *w->owned);
    if (!w->owned)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    for (int i = 0; i < opt->n; i++) {
        opt_param *p = &opt->params[i];
        const filo_tensor *g = filo_var_grad(p->var);
        if (!g)
            continue;
        int b = grad_bucket(g->dtype);
        if (b < 0)
            return FILO_FAIL(FILO_ERR_DTYPE, "the gradient %s of parameter %d must be f32, bf16 or f16",
                             filo_tensor_describe(g, a, sizeof a), i);
        if (!filo_device_equal(g->device, opt->dev))
            return FILO_FAIL(FILO_ERR_DEVICE, "the gradient %s of parameter %d is not on the optimizer's device",
                             filo_tensor_describe(g, a, sizeof a), i);
        FILO_TRY(filo_tensor_contiguous(g, &w->owned[w->nowned]));
        const filo_tensor *gc = w->owned[w->nowned++];
        filo_rule_tensor *t = &w->tab[b][w->count[b]];
        t->param = filo_tensor_data(filo_var_value(p->var));
        t->grad = filo_tensor_data(gc);
        for (int k = 0; k < FILO_RULE_SLOTS; k++)
            t->state[k] = p->state[k] ? filo_tensor_data(p->state[k]) : NULL;
        t->lr = filo_tensor_data(opt->groups[p->group].lr);
        t->wd = opt->groups[p->group].wd;
        t->numel = filo_tensor_numel(gc);
        w->grads[b][w->count[b]++] = gc;
    }
    return FILO_OK;
}

static filo_status run_step(filo_optimizer *opt, const filo_step_options *o, step_work *w, filo_tensor **norm_out)
{
    int total = w->count[0] + w->count[1] + w->count[2];
    int need_norm = o->max_grad_norm > 0.0 || o->grad_norm != NULL;
    int need_flag = o->scaler != NULL;
    for (int b = 0; b < 3; b++) {
        if (!w->count[b])
            continue;
        if (need_norm)
            FILO_TRY(filo_grad_norm(w->grads[b], w->count[b], 2.0, &w->norm[b], need_flag ? &w->flag[b] : NULL));
        else if (need_flag)
            FILO_TRY(filo_found_inf(w->grads[b], w->count[b], &w->flag[b]));
    }
    if (o->grad_norm)
        FILO_TRY(filo_tensor_zeros(opt->dev, FILO_F32, 0, NULL, norm_out));
    if (total == 0)
        return FILO_OK; /* nothing to update: no parameter has a gradient */
    filo_tensor *found = o->scaler ? filo_grad_scaler_tensor(o->scaler, "found_inf") : NULL;
    filo_prepare_desc pd;
    memset(&pd, 0, sizeof pd);
    pd.nnorm = 3;
    for (int b = 0; b < 3; b++) {
        pd.norm[b] = w->norm[b] ? filo_tensor_data(w->norm[b]) : NULL;
        pd.nonfinite[b] = w->flag[b] ? filo_tensor_data(w->flag[b]) : NULL;
    }
    pd.scale = o->scaler ? filo_tensor_data(filo_grad_scaler_tensor(o->scaler, "scale")) : NULL;
    pd.k = (double)o->accumulated;
    pd.max_norm = (float)o->max_grad_norm;
    pd.found_inf = found ? filo_tensor_data(found) : NULL;
    pd.grad_scale = filo_tensor_data(opt->grad_scale);
    pd.norm_out = *norm_out ? filo_tensor_data(*norm_out) : NULL;
    pd.step_count = filo_tensor_data(opt->step_count);
    FILO_TRY(filo_step_prepare(opt->dev, &pd));
    for (int b = 0; b < 3; b++) {
        if (!w->count[b])
            continue;
        filo_rule_desc d;
        memset(&d, 0, sizeof d);
        d.n = w->count[b];
        d.tensors = w->tab[b];
        d.grad_dtype = bucket_dtype[b];
        d.c = opt->consts;
        d.grad_scale = pd.grad_scale;
        d.found_inf = pd.found_inf;
        d.step_count = pd.step_count;
        if (opt->cfg.kind == FILO_OPT_LAMB && opt->dev.type != FILO_DEVICE_CPU) {
            int64_t chunks = 0;
            for (int i = 0; i < d.n; i++)
                chunks += (d.tensors[i].numel + FILO_OPTIM_CHUNK - 1) / FILO_OPTIM_CHUNK;
            if (chunks > 0) {
                int64_t shape = 2 * chunks;
                filo_tensor_free(w->partial);
                w->partial = NULL;
                FILO_TRY(filo_tensor_empty(opt->dev, FILO_F32, 1, &shape, &w->partial));
                d.partial = filo_tensor_data(w->partial);
                d.partial_count = chunks;
            }
        }
        FILO_TRY(filo_rule_step_run(opt->dev, &d));
    }
    if (o->scaler)
        FILO_TRY(filo_grad_scaler_update(o->scaler));
    return FILO_OK;
}

filo_status filo_optimizer_step(filo_optimizer *opt, const filo_step_options *opts)
{
    char d[32];
    if (!opt)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "opt is NULL");
    filo_step_options o = opts ? *opts : filo_step_defaults();
    if (!finite_nonneg(o.max_grad_norm))
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "max_grad_norm must be finite and >= 0, got %g", o.max_grad_norm);
    if (o.accumulated < 1)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "accumulated must be >= 1 (backward passes summed), got %d",
                         o.accumulated);
    if (o.scaler) {
        filo_tensor *sc = filo_grad_scaler_tensor(o.scaler, "scale");
        if (!filo_device_equal(sc->device, opt->dev))
            return FILO_FAIL(FILO_ERR_DEVICE, "the scaler is on %s, not on the optimizer's device",
                             filo_device_format(sc->device, d, sizeof d));
    }
    step_work w;
    memset(&w, 0, sizeof w);
    filo_tensor *norm = NULL;
    filo_status st = collect(opt, &w);
    if (st == FILO_OK)
        st = run_step(opt, &o, &w, &norm);
    /* Temporaries go back to the caching allocator: only later work on this stream reuses them. */
    work_free(&w);
    if (st != FILO_OK) {
        filo_tensor_free(norm);
        return filo_error_wrap(st, __func__);
    }
    if (o.grad_norm)
        *o.grad_norm = norm;
    return FILO_OK;
}

void filo_optimizer_zero_grad(filo_optimizer *opt)
{
    if (!opt)
        return;
    for (int i = 0; i < opt->n; i++)
        filo_var_zero_grad(opt->params[i].var);
}

static double read_f32(const filo_tensor *t)
{
    float v = NAN;
    if (filo_tensor_to_host(t, &v, sizeof v) != FILO_OK)
        return NAN;
    return v;
}

int64_t filo_optimizer_step_count(const filo_optimizer *opt)
{
    if (!opt)
        return -1;
    double v = read_f32(opt->step_count);
    return isnan(v) ? -1 : (int64_t)v;
}

double filo_optimizer_group_lr(const filo_optimizer *opt, int group)
{
    if (!opt || group < 0 || group >= opt->ng)
        return NAN;
    double base = read_f32(opt->groups[group].lr);
    return base * filo_sched_factor_at(&opt->consts.sched, read_f32(opt->step_count));
}

int filo_optimizer_group_count(const filo_optimizer *opt) { return opt ? opt->ng : 0; }

int filo_optimizer_state_count(const filo_optimizer *opt)
{
    if (!opt)
        return 0;
    int c = 1 + opt->ng;
    for (int i = 0; i < opt->n; i++)
        for (int k = 0; k < FILO_RULE_SLOTS; k++)
            c += opt->params[i].state[k] != NULL;
    return c;
}

filo_status filo_optimizer_state_at(const filo_optimizer *opt, int i, const char **name, filo_tensor **t)
{
    if (!opt || !name || !t)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "opt, name and t must not be NULL");
    int count = filo_optimizer_state_count(opt);
    if (i < 0 || i >= count)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "state index %d out of range [0, %d)", i, count);
    int j = i;
    for (int p = 0; p < opt->n; p++)
        for (int k = 0; k < FILO_RULE_SLOTS; k++) {
            if (!opt->params[p].state[k])
                continue;
            if (j-- == 0) {
                *name = opt->params[p].state_name[k];
                *t = opt->params[p].state[k];
                return FILO_OK;
            }
        }
    if (j == 0) {
        *name = "step";
        *t = opt->step_count;
        return FILO_OK;
    }
    *name = opt->groups[j - 1].lr_name;
    *t = opt->groups[j - 1].lr;
    return FILO_OK;
}
