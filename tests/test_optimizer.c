/* Optimizers (filo/optimizer.h) on every backend: each update rule against a float64 reference of
 * PyTorch's rule, parameter groups, the decay split of filo_optimizer_add_params, schedules and the
 * device lr they give, global-norm clipping, gradient accumulation, f16 dynamic loss scaling that
 * survives an overflow, no host synchronization inside a step, a captured step with a schedule,
 * and bad arguments. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filo_test.h"

/* Present only in the emu/ build (the emulator's counters). */
unsigned long long filo_emu_host_sync_count(void) __attribute__((weak));

#define TRY(expr)                          \
    do {                                   \
        filo_status try_s_ = (expr);       \
        if (try_s_ != FILO_OK)             \
            return try_s_;                 \
    } while (0)

#define PI_D 3.14159265358979323846
#define NT 4
static const int64_t sizes[NT] = {1, 7, 33, 129};
static const char *const names[NT] = {"a", "b", "c", "d"};

static filo_var *make_param(filo_device dev, int64_t n, uint64_t seed, double *host)
{
    filo_test_fill_random(host, n, seed, -1, 1);
    filo_tensor *t = filo_test_upload(dev, FILO_F32, 1, &n, host);
    /* The reference starts from the f32 values. */
    double *back = filo_test_download(t);
    memcpy(host, back, sizeof(double) * (size_t)n);
    free(back);
    filo_var *v;
    FILO_CHECK(filo_var_new(t, 1, &v));
    filo_tensor_free(t);
    return v;
}

/* Sets v's gradient to random values (f32-rounded into host). */
static void set_grad(filo_var *v, int64_t n, uint64_t seed, double *host)
{
    filo_test_fill_random(host, n, seed, -1, 1);
    for (int64_t i = 0; i < n; i++)
        host[i] = (float)host[i];
    filo_tensor *g = filo_test_upload(filo_var_value(v)->device, FILO_F32, 1, &n, host);
    FILO_CHECK(filo_var_set_grad(v, g));
    filo_tensor_free(g);
}

/* ---- float64 reference of PyTorch's rules (torch.optim, foreach=False) ---- */

typedef struct ref_tensor {
    int64_t n;
    double *p, *s[3];
} ref_tensor;

static void ref_alloc(ref_tensor *r, int64_t n, double init)
{
    r->n = n;
    r->p = calloc((size_t)n, sizeof(double));
    for (int k = 0; k < 3; k++) {
        r->s[k] = calloc((size_t)n, sizeof(double));
        for (int64_t i = 0; i < n; i++)
            r->s[k][i] = init;
    }
}

static void ref_free(ref_tensor *r)
{
    free(r->p);
    for (int k = 0; k < 3; k++)
        free(r->s[k]);
}

/* One step of tensor r with gradient gin at step t (from 1) with the scheduled lr. */
static void ref_step(const filo_optimizer_config *c, int t, double lr, double wd, ref_tensor *r, const double *gin)
{
    int64_t n = r->n;
    double *p = r->p, *m = r->s[0], *v = r->s[1], *x = r->s[2];
    double b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    double *rr = calloc((size_t)n, sizeof(double));
    double p_sq = 0, r_sq = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = gin[i];
        switch (c->kind) {
        case FILO_OPT_SGD:
            g += wd * p[i];
            if (c->momentum != 0) {
                m[i] = t == 1 ? g : c->momentum * m[i] + (1 - c->dampening) * g;
                g = c->nesterov ? g + c->momentum * m[i] : m[i];
            }
            p[i] -= lr * g;
            break;
        case FILO_OPT_ADAM:
        case FILO_OPT_ADAMW:
            if (c->kind == FILO_OPT_ADAMW)
                p[i] *= 1 - lr * wd;
            else
                g += wd * p[i];
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            p[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
            break;
        case FILO_OPT_RADAM: {
            if (c->decoupled_weight_decay)
                p[i] *= 1 - lr * wd;
            else
                g += wd * p[i];
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            double rho_inf = 2 / (1 - b2) - 1;
            double rho_t = rho_inf - 2 * t * pow(b2, t) / bc2;
            if (rho_t > 5) {
                double rect = sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));
                p[i] -= m[i] / bc1 * lr * (sqrt(bc2) / (sqrt(v[i]) + eps)) * rect;
            } else {
                p[i] -= m[i] / bc1 * lr;
            }
            break;
        }
        case FILO_OPT_RMSPROP: {
            g += wd * p[i];
            m[i] = c->alpha * m[i] + (1 - c->alpha) * g * g;
            double avg;
            if (c->centered) {
                x[i] = c->alpha * x[i] + (1 - c->alpha) * g;
                avg = sqrt(m[i] - x[i] * x[i]) + eps;
            } else {
                avg = sqrt(m[i]) + eps;
            }
            if (c->momentum > 0) {
                v[i] = c->momentum * v[i] + g / avg;
                p[i] -= lr * v[i];
            } else {
                p[i] -= lr * g / avg;
            }
            break;
        }
        case FILO_OPT_ADAGRAD: {
            g += wd * p[i];
            double clr = lr / (1 + (t - 1) * c->lr_decay);
            m[i] += g * g;
            p[i] -= clr * g / (sqrt(m[i]) + eps);
            break;
        }
        case FILO_OPT_LAMB:
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            rr[i] = (m[i] / bc1) / (sqrt(v[i] / bc2) + eps) + wd * p[i];
            p_sq += p[i] * p[i];
            r_sq += rr[i] * rr[i];
            break;
        }
    }
    if (c->kind == FILO_OPT_LAMB) {
        double trust = p_sq > 0 && r_sq > 0 ? sqrt(p_sq) / sqrt(r_sq) : 1.0;
        for (int64_t i = 0; i < n; i++)
            p[i] -= lr * trust * rr[i];
    }
    free(rr);
}

static void assert_close(const filo_tensor *t, const double *ref, int64_t n, double tol, const char *what)
{
    double *got = filo_test_download(t);
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - ref[i]) <= tol * (1 + fabs(ref[i])), "%s[%lld]: got %.9g, reference %.9g", what,
                  (long long)i, got[i], ref[i]);
    free(got);
}

static filo_optimizer_config cfg_of(filo_optimizer_kind kind, double lr, double wd)
{
    filo_optimizer_config c = filo_optimizer_defaults(kind);
    c.lr = lr;
    c.weight_decay = wd;
    return c;
}

/* Runs cfg for `steps` steps on every backend over NT tensors of odd sizes and compares the
 * parameters (and states) with the reference. */
static void check_rule(const filo_optimizer_config *cfg, int steps, const char *label)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_optimizer *opt;
        FILO_CHECK(filo_optimizer_new(devs[d], cfg, &opt));
        filo_var *ps[NT];
        ref_tensor ref[NT];
        double init = cfg->kind == FILO_OPT_ADAGRAD ? cfg->initial_accumulator_value : 0.0;
        for (int k = 0; k < NT; k++) {
            ref_alloc(&ref[k], sizes[k], init);
            ps[k] = make_param(devs[d], sizes[k], 100 + k, ref[k].p);
        }
        FILO_CHECK(filo_optimizer_add_group(opt, NT, ps, names, cfg->lr, cfg->weight_decay, NULL));
        double lr = (float)cfg->lr; /* the device keeps the base lr in f32 */
        double g[129];
        for (int t = 1; t <= steps; t++) {
            for (int k = 0; k < NT; k++) {
                set_grad(ps[k], sizes[k], 1000 * t + k, g);
                ref_step(cfg, t, lr, cfg->weight_decay, &ref[k], g);
            }
            FILO_CHECK(filo_optimizer_step(opt, NULL));
        }
        cr_assert_eq(filo_optimizer_step_count(opt), steps);
        char what[128];
        for (int k = 0; k < NT; k++) {
            snprintf(what, sizeof what, "%s %s param %s", filo_test_backend_name(devs[d]), label, names[k]);
            assert_close(filo_var_value(ps[k]), ref[k].p, sizes[k], 2e-5, what);
        }
        /* The states under their checkpoint names. */
        int ns = filo_optimizer_state_count(opt);
        int seen_step = 0, seen_lr = 0;
        for (int i = 0; i < ns; i++) {
            const char *nm;
            filo_tensor *st;
            FILO_CHECK(filo_optimizer_state_at(opt, i, &nm, &st));
            if (!strcmp(nm, "step")) {
                seen_step = 1;
                continue;
            }
            if (!strcmp(nm, "group0.lr")) {
                seen_lr = 1;
                continue;
            }
            cr_assert(nm[0] >= 'a' && nm[0] <= 'd' && nm[1] == '.', "unexpected state name %s", nm);
            int k = nm[0] - 'a';
            const char *slot = nm + 2;
            int s = -1;
            if (!strcmp(slot, "exp_avg") || !strcmp(slot, "square_avg") || !strcmp(slot, "sum"))
                s = 0;
            else if (!strcmp(slot, "exp_avg_sq"))
                s = 1;
            else if (!strcmp(slot, "momentum_buffer"))
                s = cfg->kind == FILO_OPT_SGD ? 0 : 1;
            else if (!strcmp(slot, "grad_avg"))
                s = 2;
            cr_assert_geq(s, 0, "unexpected state slot %s", nm);
            snprintf(what, sizeof what, "%s %s state %s", filo_test_backend_name(devs[d]), label, nm);
            assert_close(st, ref[k].s[s], sizes[k], 2e-5, what);
        }
        cr_assert(seen_step && seen_lr, "%s: the states 'step' and 'group0.lr' are missing", label);
        for (int k = 0; k < NT; k++) {
            filo_var_free(ps[k]);
            ref_free(&ref[k]);
        }
        filo_optimizer_free(opt);
    }
}

Test(optimizer, sgd_matches_reference)
{
    filo_optimizer_config c = cfg_of(FILO_OPT_SGD, 0.1, 0.0);
    check_rule(&c, 6, "sgd");
    c.weight_decay = 0.05;
    check_rule(&c, 6, "sgd wd");
    c.momentum = 0.9;
    check_rule(&c, 6, "sgd momentum wd");
    c.dampening = 0.3;
    check_rule(&c, 6, "sgd momentum dampening wd");
    c.dampening = 0.0;
    c.nesterov = 1;
    check_rule(&c, 6, "sgd nesterov wd");
}

Test(optimizer, adam_adamw_match_reference)
{
    filo_optimizer_config c = cfg_of(FILO_OPT_ADAM, 0.01, 0.0);
    check_rule(&c, 6, "adam");
    c.weight_decay = 0.1;
    check_rule(&c, 6, "adam l2");
    c = cfg_of(FILO_OPT_ADAMW, 0.01, 0.1);
    check_rule(&c, 6, "adamw");
}

Test(optimizer, radam_matches_reference)
{
    /* beta2 0.9: rho_t passes 5 at t = 6, so both branches run in 8 steps. */
    filo_optimizer_config c = cfg_of(FILO_OPT_RADAM, 0.01, 0.0);
    c.beta2 = 0.9;
    check_rule(&c, 8, "radam");
    c.weight_decay = 0.1;
    check_rule(&c, 8, "radam l2");
    c.decoupled_weight_decay = 1;
    check_rule(&c, 8, "radam decoupled");
    c = cfg_of(FILO_OPT_RADAM, 0.01, 0.0);
    check_rule(&c, 6, "radam default betas");
}

Test(optimizer, rmsprop_matches_reference)
{
    filo_optimizer_config c = cfg_of(FILO_OPT_RMSPROP, 0.01, 0.0);
    check_rule(&c, 6, "rmsprop");
    c.centered = 1;
    check_rule(&c, 6, "rmsprop centered");
    c.centered = 0;
    c.momentum = 0.8;
    check_rule(&c, 6, "rmsprop momentum");
    c.centered = 1;
    c.weight_decay = 0.05;
    check_rule(&c, 6, "rmsprop centered momentum wd");
}

Test(optimizer, adagrad_matches_reference)
{
    filo_optimizer_config c = cfg_of(FILO_OPT_ADAGRAD, 0.05, 0.0);
    check_rule(&c, 6, "adagrad");
    c.lr_decay = 0.1;
    check_rule(&c, 6, "adagrad lr_decay");
    c.initial_accumulator_value = 0.5;
    check_rule(&c, 6, "adagrad lr_decay initial");
    c.weight_decay = 0.05;
    check_rule(&c, 6, "adagrad lr_decay initial wd");
}

Test(optimizer, lamb_matches_reference)
{
    filo_optimizer_config c = cfg_of(FILO_OPT_LAMB, 0.01, 0.01);
    check_rule(&c, 6, "lamb");
    c.weight_decay = 0.0;
    check_rule(&c, 6, "lamb no wd");
}

/* Two groups with their own lr and weight decay, and a parameter without a gradient. */
Test(optimizer, groups_and_params_without_grad)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_optimizer_config c = cfg_of(FILO_OPT_SGD, 0.1, 0.0);
        c.momentum = 0.5;
        filo_optimizer *opt;
        FILO_CHECK(filo_optimizer_new(devs[d], &c, &opt));
        ref_tensor ref[3];
        filo_var *ps[3];
        int64_t n[3] = {7, 33, 5};
        for (int k = 0; k < 3; k++) {
            ref_alloc(&ref[k], n[k], 0);
            ps[k] = make_param(devs[d], n[k], 200 + k, ref[k].p);
        }
        int g0, g1;
        FILO_CHECK(filo_optimizer_add_group(opt, 1, &ps[0], NULL, 0.1, 0.0, &g0));
        FILO_CHECK(filo_optimizer_add_group(opt, 2, &ps[1], NULL, 0.02, 0.5, &g1));
        cr_assert_eq(g0, 0);
        cr_assert_eq(g1, 1);
        cr_assert_eq(filo_optimizer_group_count(opt), 2);
        double *before = filo_test_download(filo_var_value(ps[2]));
        double g[64];
        for (int t = 1; t <= 6; t++) {
            for (int k = 0; k < 2; k++) {
                set_grad(ps[k], n[k], 300 * t + k, g);
                ref_step(&c, t, k == 0 ? (float)0.1 : (float)0.02, k == 0 ? 0.0 : 0.5, &ref[k], g);
            }
            FILO_CHECK(filo_optimizer_step(opt, NULL));
        }
        assert_close(filo_var_value(ps[0]), ref[0].p, n[0], 2e-5, "group 0");
        assert_close(filo_var_value(ps[1]), ref[1].p, n[1], 2e-5, "group 1");
        double *after = filo_test_download(filo_var_value(ps[2]));
        cr_assert_eq(memcmp(before, after, sizeof(double) * 5), 0, "a parameter without a gradient changed");
        cr_assert_float_eq(filo_optimizer_group_lr(opt, 1), 0.02, 1e-8);
        /* The names without `names`: group<g>.<i>. */
        const char *nm;
        filo_tensor *st;
        FILO_CHECK(filo_optimizer_state_at(opt, 1, &nm, &st));
        cr_assert_str_eq(nm, "group1.0.momentum_buffer");
        FILO_CHECK(filo_optimizer_set_group_lr(opt, 1, 0.25));
        cr_assert_float_eq(filo_optimizer_group_lr(opt, 1), 0.25, 1e-8);
        free(before);
        free(after);
        for (int k = 0; k < 3; k++) {
            filo_var_free(ps[k]);
            ref_free(&ref[k]);
        }
        filo_optimizer_free(opt);
    }
}

/* add_params: weights and embeddings decay, biases and norms do not; state names are the store's. */
Test(optimizer, add_params_splits_decay_by_role)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_params *store;
        FILO_CHECK(filo_params_new(devs[d], 5, &store));
        filo_init ones = {FILO_INIT_ONES, 0, 0};
        filo_param_role roles[4] = {FILO_PARAM_WEIGHT, FILO_PARAM_BIAS, FILO_PARAM_NORM, FILO_PARAM_EMBEDDING};
        const char *pn[4] = {"lin.weight", "lin.bias", "ln.weight", "emb.weight"};
        filo_var *v[4];
        for (int k = 0; k < 4; k++)
            FILO_CHECK(filo_params_create(store, pn[k], 1, (int64_t[]){3 + k}, ones, roles[k], &v[k]));
        filo_optimizer_config c = cfg_of(FILO_OPT_SGD, 0.1, 0.5);
        c.momentum = 0.9;
        filo_optimizer *opt;
        FILO_CHECK(filo_optimizer_new(devs[d], &c, &opt));
        FILO_CHECK(filo_optimizer_add_params(opt, store));
        cr_assert_eq(filo_optimizer_group_count(opt), 2);
        for (int k = 0; k < 4; k++) {
            filo_tensor *z;
            FILO_CHECK(filo_tensor_zeros(devs[d], FILO_F32, 1, (int64_t[]){3 + k}, &z));
            FILO_CHECK(filo_var_set_grad(v[k], z));
            filo_tensor_free(z);
        }
        FILO_CHECK(filo_optimizer_step(opt, NULL));
        for (int k = 0; k < 4; k++) {
            double *p = filo_test_download(filo_var_value(v[k]));
            double want = (roles[k] == FILO_PARAM_BIAS || roles[k] == FILO_PARAM_NORM) ? 1.0 : 1.0 - 0.1 * 0.5;
            for (int i = 0; i < 3 + k; i++)
                cr_assert_float_eq(p[i], want, 1e-6, "%s[%d] = %g, want %g", pn[k], i, p[i], want);
            free(p);
        }
        int found = 0;
        for (int i = 0; i < filo_optimizer_state_count(opt); i++) {
            const char *nm;
            filo_tensor *st;
            FILO_CHECK(filo_optimizer_state_at(opt, i, &nm, &st));
            found += !strcmp(nm, "lin.bias.momentum_buffer") || !strcmp(nm, "emb.weight.momentum_buffer");
        }
        cr_assert_eq(found, 2);
        filo_optimizer_free(opt);
        filo_params_free(store);
    }
}

/* Hugging Face's lambdas, written out. */
static double hf_factor(filo_schedule_kind kind, double step, double warmup, double total, double min_factor)
{
    if (step < warmup)
        return step / fmax(1, warmup);
    if (kind == FILO_SCHEDULE_CONSTANT)
        return 1;
    if (kind == FILO_SCHEDULE_LINEAR)
        return fmax(0, (total - step) / fmax(1, total - warmup));
    double progress = (step - warmup) / fmax(1, total - warmup);
    return fmax(min_factor, 0.5 * (1 + cos(PI_D * 0.5 * 2 * progress)));
}

Test(optimizer, schedule_factor_and_device_lr)
{
    filo_schedule_kind kinds[3] = {FILO_SCHEDULE_CONSTANT, FILO_SCHEDULE_LINEAR, FILO_SCHEDULE_COSINE};
    for (int k = 0; k < 3; k++)
        for (int64_t step = 0; step < 14; step++) {
            filo_schedule s = {kinds[k], 3, 10, k == 2 ? 0.1 : 0.0};
            cr_assert_float_eq(filo_schedule_factor(&s, step), hf_factor(kinds[k], (double)step, 3, 10, s.min_factor),
                               1e-12, "kind %d step %lld", k, (long long)step);
            filo_schedule nw = {kinds[k], 0, 10, 0.0};
            cr_assert_float_eq(filo_schedule_factor(&nw, step), hf_factor(kinds[k], (double)step, 0, 10, 0.0), 1e-12);
        }
    cr_assert_float_eq(filo_schedule_factor(&(filo_schedule){FILO_SCHEDULE_LINEAR, 4, 12, 0}, 2), 0.5, 1e-15);
    cr_assert_float_eq(filo_schedule_factor(&(filo_schedule){FILO_SCHEDULE_LINEAR, 4, 12, 0}, 8), 0.5, 1e-15);
    cr_assert_float_eq(filo_schedule_factor(&(filo_schedule){FILO_SCHEDULE_COSINE, 0, 10, 0}, 5), 0.5, 1e-15);

    /* The lr a step uses: plain SGD on p = 0 with g = 1 moves p by exactly -lr. */
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++)
        for (int k = 1; k < 3; k++) {
            filo_schedule s = {kinds[k], 3, 10, k == 2 ? 0.1 : 0.0};
            filo_optimizer_config c = cfg_of(FILO_OPT_SGD, 0.5, 0.0);
            filo_optimizer *opt;
            FILO_CHECK(filo_optimizer_new(devs[d], &c, &opt));
            filo_tensor *z, *one;
            FILO_CHECK(filo_tensor_zeros(devs[d], FILO_F32, 1, (int64_t[]){3}, &z));
            FILO_CHECK(filo_tensor_full(devs[d], FILO_F32, 1, (int64_t[]){3}, 1.0, &one));
            filo_var *p;
            FILO_CHECK(filo_var_new(z, 1, &p));
            FILO_CHECK(filo_var_set_grad(p, one));
            FILO_CHECK(filo_optimizer_add_group(opt, 1, &p, NULL, 0.5, 0.0, NULL));
            FILO_CHECK(filo_optimizer_set_schedule(opt, &s));
            double prev = 0;
            for (int step = 0; step < 12; step++) {
                double want = 0.5 * filo_schedule_factor(&s, step);
                cr_assert_float_eq(filo_optimizer_group_lr(opt, 0), want, 1e-7);
                FILO_CHECK(filo_optimizer_step(opt, NULL));
                double *v = filo_test_download(filo_var_value(p));
                cr_assert_float_eq(prev - v[0], want, 2e-6, "%s kind %d step %d: lr %.9g, want %.9g",
                                   filo_test_backend_name(devs[d]), k, step, prev - v[0], want);
                prev = v[0];
                free(v);
            }
            filo_var_free(p);
            filo_tensor_free(z);
            filo_tensor_free(one);
            filo_optimizer_free(opt);
        }
}

/* clip_grad_norm_ then AdamW, against the reference; the reported norm is the one before clipping. */
Test(optimizer, clipping_matches_reference)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        filo_optimizer_config c = cfg_of(FILO_OPT_ADAMW, 0.01, 0.01);
        filo_optimizer *opt;
        FILO_CHECK(filo_optimizer_new(devs[d], &c, &opt));
        filo_var *ps[NT];
        ref_tensor ref[NT];
        for (int k = 0; k < NT; k++) {
            ref_alloc(&ref[k], sizes[k], 0);
            ps[k] = make_param(devs[d], sizes[k], 400 + k, ref[k].p);
        }
        FILO_CHECK(filo_optimizer_add_group(opt, NT, ps, NULL, c.lr, c.weight_decay, NULL));
        double g[NT][129];
        for (int t = 1; t <= 6; t++) {
            double sq = 0;
            for (int k = 0; k < NT; k++) {
                set_grad(ps[k], sizes[k], 500 * t + k, g[k]);
                for (int i = 0; i < sizes[k]; i++)
                    sq += g[k][i] * g[k][i];
            }
            double norm = sqrt(sq);
            double max_norm = t % 2 ? 1.5 : 100.0; /* clipped on odd steps only */
            double coef = fmin(1.0, max_norm / (norm + 1e-6));
            for (int k = 0; k < NT; k++) {
                for (int i = 0; i < sizes[k]; i++)
                    g[k][i] *= coef;
                ref_step(&c, t, (float)c.lr, c.weight_decay, &ref[k], g[k]);
            }
            filo_step_options o = filo_step_defaults();
            o.max_grad_norm = max_norm;
            filo_tensor *gn = NULL;
            o.grad_norm = &gn;
            FILO_CHECK(filo_optimizer_step(opt, &o));
            double *got = filo_test_download(gn);
            cr_assert_float_eq(got[0], norm, 1e-5 * norm, "step %d: grad norm %.9g, want %.9g", t, got[0], norm);
            free(got);
            filo_tensor_free(gn);
        }
        for (int k = 0; k < NT; k++) {
            assert_close(filo_var_value(ps[k]), ref[k].p, sizes[k], 2e-5, "clipped adamw");
            filo_var_free(ps[k]);
            ref_free(&ref[k]);
        }
        filo_optimizer_free(opt);
    }
}

/* loss_j = sum(w * x_j): k backward passes accumulate sum_j x_j into w.grad. */
static void accumulate(filo_var *w, filo_device dev, int k, int64_t n, double *sum)
{
    for (int j = 0; j < k; j++) {
        double x[33];
        filo_test_fill_random(x, n, 600 + j, -2, 2);
        for (int i = 0; i < n; i++) {
            x[i] = (float)x[i];
            sum[i] += x[i];
        }
        filo_tensor *xt = filo_test_upload(dev, FILO_F32, 1, &n, x);
        filo_var *xv, *prod, *loss;
        FILO_CHECK(filo_var_new(xt, 0, &xv));
        FILO_CHECK(filo_ag_mul(w, xv, &prod));
        FILO_CHECK(filo_ag_sum(prod, 0, 0, &loss));
        FILO_CHECK(filo_backward(loss, NULL, 0));
        filo_var_free(loss);
        filo_var_free(prod);
        filo_var_free(xv);
        filo_tensor_free(xt);
    }
}

Test(optimizer, accumulation_equals_averaged_step)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    const int64_t n = 33;
    for (int d = 0; d < nd; d++)
        for (int clip = 0; clip < 2; clip++) {
            filo_optimizer_config c = cfg_of(FILO_OPT_ADAM, 0.01, 0.0);
            filo_optimizer *oa, *ob;
            FILO_CHECK(filo_optimizer_new(devs[d], &c, &oa));
            FILO_CHECK(filo_optimizer_new(devs[d], &c, &ob));
            double init[33];
            filo_var *wa = make_param(devs[d], n, 700, init);
            filo_var *wb = make_param(devs[d], n, 700, init);
            FILO_CHECK(filo_optimizer_add_group(oa, 1, &wa, NULL, c.lr, 0, NULL));
            FILO_CHECK(filo_optimizer_add_group(ob, 1, &wb, NULL, c.lr, 0, NULL));
            double sum[33] = {0};
            accumulate(wa, devs[d], 3, n, sum);
            for (int i = 0; i < n; i++)
                sum[i] /= 3;
            filo_tensor *avg = filo_test_upload(devs[d], FILO_F32, 1, &n, sum);
            FILO_CHECK(filo_var_set_grad(wb, avg));
            filo_tensor_free(avg);
            filo_step_options o = filo_step_defaults();
            o.accumulated = 3;
            o.max_grad_norm = clip ? 1.0 : 0.0;
            filo_step_options ob_o = filo_step_defaults();
            ob_o.max_grad_norm = o.max_grad_norm;
            FILO_CHECK(filo_optimizer_step(oa, &o));
            FILO_CHECK(filo_optimizer_step(ob, &ob_o));
            double *pb = filo_test_download(filo_var_value(wb));
            assert_close(filo_var_value(wa), pb, n, 1e-6, "accumulated step");
            free(pb);
            filo_var_free(wa);
            filo_var_free(wb);
            filo_optimizer_free(oa);
            filo_optimizer_free(ob);
        }
}

/* ---- f16 dynamic loss scaling: y = x w + b computed in f16 from f32 master weights ---- */

enum { LR_N = 32, LR_IN = 4 };

typedef struct linreg {
    filo_device dev;
    filo_var *w, *b;
    filo_tensor *x, *y;
} linreg;

static void linreg_init(linreg *m, filo_device dev)
{
    m->dev = dev;
    double xv[LR_N * LR_IN], yv[LR_N], wv[LR_IN], bv = 0;
    filo_test_fill_random(xv, LR_N * LR_IN, 800, -1, 1);
    double wt[LR_IN] = {0.5, -1.0, 0.25, 0.75};
    for (int i = 0; i < LR_N; i++) {
        yv[i] = 0.3;
        for (int k = 0; k < LR_IN; k++)
            yv[i] += xv[i * LR_IN + k] * wt[k];
    }
    filo_test_fill_random(wv, LR_IN, 801, -0.1, 0.1);
    m->x = filo_test_upload(dev, FILO_F16, 2, (int64_t[]){LR_N, LR_IN}, xv);
    m->y = filo_test_upload(dev, FILO_F32, 2, (int64_t[]){LR_N, 1}, yv);
    filo_tensor *w = filo_test_upload(dev, FILO_F32, 2, (int64_t[]){LR_IN, 1}, wv);
    filo_tensor *b = filo_test_upload(dev, FILO_F32, 1, (int64_t[]){1}, &bv);
    FILO_CHECK(filo_var_new(w, 1, &m->w));
    FILO_CHECK(filo_var_new(b, 1, &m->b));
    filo_tensor_free(w);
    filo_tensor_free(b);
}

static void linreg_free(linreg *m)
{
    filo_var_free(m->w);
    filo_var_free(m->b);
    filo_tensor_free(m->x);
    filo_tensor_free(m->y);
}

/* Forward in f16, mean squared error in f32, backward of loss * scale. Returns the loss. */
static double linreg_backward(linreg *m, filo_grad_scaler *s)
{
    filo_var *x, *y, *w16, *b16, *pred16, *pred, *diff, *sq, *loss, *scaled;
    FILO_CHECK(filo_var_new(m->x, 0, &x));
    FILO_CHECK(filo_var_new(m->y, 0, &y));
    FILO_CHECK(filo_ag_cast(m->w, FILO_F16, &w16));
    FILO_CHECK(filo_ag_cast(m->b, FILO_F16, &b16));
    FILO_CHECK(filo_ag_matmul(x, w16, 0, 0, b16, FILO_MATMUL_EPILOGUE_BIAS, &pred16));
    FILO_CHECK(filo_ag_cast(pred16, FILO_F32, &pred));
    FILO_CHECK(filo_ag_sub(pred, y, &diff));
    FILO_CHECK(filo_ag_mul(diff, diff, &sq));
    filo_var *flat;
    FILO_CHECK(filo_ag_reshape(sq, 1, (int64_t[]){LR_N}, &flat));
    FILO_CHECK(filo_ag_mean(flat, 0, 0, &loss));
    FILO_CHECK(filo_grad_scaler_scale(s, loss, &scaled));
    FILO_CHECK(filo_backward(scaled, NULL, 0));
    double *l = filo_test_download(filo_var_value(loss));
    double out = l[0];
    free(l);
    filo_var *all[11] = {x, y, w16, b16, pred16, pred, diff, sq, flat, loss, scaled};
    for (int i = 0; i < 11; i++)
        filo_var_free(all[i]);
    return out;
}

Test(optimizer, f16_loss_scaling_recovers_from_overflow)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        linreg m;
        linreg_init(&m, devs[d]);
        filo_grad_scaler_config sc = filo_grad_scaler_defaults();
        sc.init_scale = 256;
        sc.growth_interval = 4;
        filo_grad_scaler *s;
        FILO_CHECK(filo_grad_scaler_new(devs[d], &sc, &s));
        filo_optimizer_config c = cfg_of(FILO_OPT_ADAM, 0.05, 0.0);
        filo_optimizer *opt;
        FILO_CHECK(filo_optimizer_new(devs[d], &c, &opt));
        filo_var *ps[2] = {m.w, m.b};
        FILO_CHECK(filo_optimizer_add_group(opt, 2, ps, NULL, c.lr, 0, NULL));
        filo_step_options o = filo_step_defaults();
        o.scaler = s;
        o.max_grad_norm = 10.0;
        double scale = 256, first = 0, last = 0;
        int tracker = 0, counted = 0;
        for (int step = 0; step < 40; step++) {
            filo_optimizer_zero_grad(opt);
            double loss = linreg_backward(&m, s);
            if (step == 0)
                first = loss;
            last = loss;
            int inject = step == 6 || step == 7;
            if (step == 6) {
                /* An overflow: one gradient element becomes inf. */
                filo_tensor *g = filo_var_grad(m.w), *el;
                FILO_CHECK(filo_tensor_slice(g, 0, 2, 3, 1, &el));
                FILO_CHECK(filo_tensor_fill(el, INFINITY));
                filo_tensor_free(el);
            }
            if (step == 7) /* a NaN counts as well */
                FILO_CHECK(filo_tensor_fill(filo_var_grad(m.b), NAN));
            double *w0 = filo_test_download(filo_var_value(m.w));
            double *b0 = filo_test_download(filo_var_value(m.b));
            FILO_CHECK(filo_optimizer_step(opt, &o));
            double *w1 = filo_test_download(filo_var_value(m.w));
            double *b1 = filo_test_download(filo_var_value(m.b));
            int same = !memcmp(w0, w1, sizeof(double) * LR_IN) && b0[0] == b1[0];
            cr_assert_eq(same, inject, "%s step %d: params %s", filo_test_backend_name(devs[d]), step,
                         same ? "unchanged on a clean step" : "changed on a skipped step");
            cr_assert_eq(filo_grad_scaler_last_skipped(s), inject);
            if (inject) {
                scale *= 0.5;
                tracker = 0;
            } else if (++tracker == 4) {
                scale *= 2;
                tracker = 0;
            }
            counted += !inject;
            cr_assert_eq(filo_grad_scaler_get_scale(s), scale, "step %d: scale %g, want %g", step,
                         filo_grad_scaler_get_scale(s), scale);
            cr_assert_eq(filo_optimizer_step_count(opt), counted);
            free(w0);
            free(b0);
            free(w1);
            free(b1);
        }
        cr_log_info("%s: f16 linear regression loss %.4f -> %.4f, scale %g", filo_test_backend_name(devs[d]), first,
                    last, scale);
        cr_assert_lt(last, 0.1 * first, "%s: loss %g -> %g", filo_test_backend_name(devs[d]), first, last);
        double *tr = filo_test_download(filo_grad_scaler_tensor(s, "growth_tracker"));
        cr_assert_eq(tr[0], tracker);
        free(tr);
        filo_optimizer_free(opt);
        filo_grad_scaler_free(s);
        linreg_free(&m);
    }
}

/* Every kind with every device-side feature at once: no host synchronization inside a step. */
Test(optimizer, step_never_synchronizes_the_host)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    int checked = 0;
    for (int d = 0; d < nd; d++) {
        if (devs[d].type != FILO_DEVICE_CUDA || !filo_emu_host_sync_count)
            continue;
        for (int kind = FILO_OPT_SGD; kind <= FILO_OPT_LAMB; kind++) {
            filo_optimizer_config c = filo_optimizer_defaults((filo_optimizer_kind)kind);
            c.momentum = kind == FILO_OPT_SGD || kind == FILO_OPT_RMSPROP ? 0.9 : 0.0;
            filo_optimizer *opt;
            FILO_CHECK(filo_optimizer_new(devs[d], &c, &opt));
            filo_grad_scaler *s;
            FILO_CHECK(filo_grad_scaler_new(devs[d], NULL, &s));
            filo_var *ps[NT];
            double host[129];
            for (int k = 0; k < NT; k++) {
                ps[k] = make_param(devs[d], sizes[k], 900 + k, host);
                set_grad(ps[k], sizes[k], 950 + k, host);
            }
            FILO_CHECK(filo_optimizer_add_group(opt, 2, ps, names, c.lr, c.weight_decay, NULL));
            FILO_CHECK(filo_optimizer_add_group(opt, 2, ps + 2, names + 2, c.lr, 0.0, NULL));
            FILO_CHECK(filo_optimizer_set_schedule(opt, &(filo_schedule){FILO_SCHEDULE_COSINE, 2, 10, 0.0}));
            FILO_CHECK(filo_device_synchronize(devs[d]));
            unsigned long long before = filo_emu_host_sync_count();
            filo_tensor *gn = NULL;
            filo_step_options o = filo_step_defaults();
            o.scaler = s;
            o.max_grad_norm = 1.0;
            o.accumulated = 2;
            o.grad_norm = &gn;
            for (int t = 0; t < 3; t++) {
                FILO_CHECK(filo_optimizer_step(opt, &o));
                filo_tensor_free(gn);
            }
            cr_assert_eq(filo_emu_host_sync_count(), before, "%s: a step synchronized the host %llu times",
                         filo_optimizer_kind_name((filo_optimizer_kind)kind), filo_emu_host_sync_count() - before);
            cr_assert_eq(filo_optimizer_step_count(opt), 3);
            checked++;
            for (int k = 0; k < NT; k++)
                filo_var_free(ps[k]);
            filo_grad_scaler_free(s);
            filo_optimizer_free(opt);
        }
    }
    if (filo_emu_host_sync_count)
        cr_assert_eq(checked, FILO_OPT_LAMB + 1);
}

typedef struct capture_ctx {
    filo_optimizer *opt;
    filo_step_options o;
} capture_ctx;

static filo_status optimizer_only_step(void *user)
{
    capture_ctx *c = user;
    return filo_optimizer_step(c->opt, &c->o);
}

/* A captured step with a LINEAR schedule replayed N times equals N eager steps. */
Test(optimizer, captured_step_follows_schedule)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++)
        for (int kind = FILO_OPT_SGD; kind <= FILO_OPT_LAMB; kind += 3) { /* SGD, RAdam, LAMB */
            double *params[2][NT];
            for (int captured = 0; captured < 2; captured++) {
                filo_optimizer_config c = filo_optimizer_defaults((filo_optimizer_kind)kind);
                c.lr = 0.05;
                c.momentum = kind == FILO_OPT_SGD ? 0.9 : 0.0;
                filo_optimizer *opt;
                FILO_CHECK(filo_optimizer_new(devs[d], &c, &opt));
                filo_var *ps[NT];
                double host[129];
                for (int k = 0; k < NT; k++) {
                    ps[k] = make_param(devs[d], sizes[k], 1100 + k, host);
                    set_grad(ps[k], sizes[k], 1150 + k, host);
                }
                FILO_CHECK(filo_optimizer_add_group(opt, NT, ps, NULL, c.lr, c.weight_decay, NULL));
                FILO_CHECK(filo_optimizer_set_schedule(opt, &(filo_schedule){FILO_SCHEDULE_LINEAR, 2, 8, 0.0}));
                capture_ctx ctx = {opt, filo_step_defaults()};
                ctx.o.max_grad_norm = 2.0;
                FILO_CHECK(optimizer_only_step(&ctx)); /* warm-up */
                if (captured) {
                    filo_captured_step *cs;
                    FILO_CHECK(filo_step_capture(devs[d], optimizer_only_step, &ctx, &cs));
                    for (int r = 0; r < 6; r++)
                        FILO_CHECK(filo_step_replay(cs));
                    FILO_CHECK(filo_device_synchronize(devs[d]));
                    filo_step_free(cs);
                } else {
                    for (int r = 0; r < 6; r++)
                        FILO_CHECK(optimizer_only_step(&ctx));
                }
                cr_assert_eq(filo_optimizer_step_count(opt), 7);
                for (int k = 0; k < NT; k++) {
                    params[captured][k] = filo_test_download(filo_var_value(ps[k]));
                    filo_var_free(ps[k]);
                }
                filo_optimizer_free(opt);
            }
            for (int k = 0; k < NT; k++) {
                for (int i = 0; i < sizes[k]; i++) {
                    if (devs[d].type == FILO_DEVICE_CPU)
                        cr_assert_eq(params[0][k][i], params[1][k][i], "%s kind %d: replayed %.9g, eager %.9g",
                                     filo_test_backend_name(devs[d]), kind, params[1][k][i], params[0][k][i]);
                    else
                        cr_assert_float_eq(params[0][k][i], params[1][k][i], 1e-6);
                }
                free(params[0][k]);
                free(params[1][k]);
            }
        }
}

Test(optimizer, bad_arguments)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    filo_device cpu = devs[0];
    filo_optimizer *opt = NULL;
    filo_optimizer_config c = filo_optimizer_defaults(FILO_OPT_SGD);
    c.lr = -1;
    FILO_CHECK_FAILS(filo_optimizer_new(cpu, &c, &opt), FILO_ERR_INVALID_ARG, "lr must be");
    c = filo_optimizer_defaults(FILO_OPT_ADAM);
    c.beta1 = 1.0;
    FILO_CHECK_FAILS(filo_optimizer_new(cpu, &c, &opt), FILO_ERR_INVALID_ARG, "beta1");
    c = filo_optimizer_defaults(FILO_OPT_SGD);
    c.nesterov = 1;
    FILO_CHECK_FAILS(filo_optimizer_new(cpu, &c, &opt), FILO_ERR_INVALID_ARG, "nesterov");
    c = filo_optimizer_defaults(FILO_OPT_RMSPROP);
    c.alpha = 1.5;
    FILO_CHECK_FAILS(filo_optimizer_new(cpu, &c, &opt), FILO_ERR_INVALID_ARG, "alpha");
    c = filo_optimizer_defaults(FILO_OPT_ADAGRAD);
    c.initial_accumulator_value = -1;
    FILO_CHECK_FAILS(filo_optimizer_new(cpu, &c, &opt), FILO_ERR_INVALID_ARG, "initial_accumulator_value");
    c = filo_optimizer_defaults(FILO_OPT_ADAM);
    c.eps = NAN;
    FILO_CHECK_FAILS(filo_optimizer_new(cpu, &c, &opt), FILO_ERR_INVALID_ARG, "eps");
    c.kind = (filo_optimizer_kind)42;
    FILO_CHECK_FAILS(filo_optimizer_new(cpu, &c, &opt), FILO_ERR_INVALID_ARG, "unknown optimizer kind");
    filo_optimizer_kind kk;
    FILO_CHECK_FAILS(filo_optimizer_kind_parse("adamx", &kk), FILO_ERR_INVALID_ARG, "unknown optimizer");
    FILO_CHECK(filo_optimizer_kind_parse("rmsprop", &kk));
    cr_assert_eq(kk, FILO_OPT_RMSPROP);
    cr_assert_str_eq(filo_optimizer_kind_name(FILO_OPT_LAMB), "lamb");

    c = filo_optimizer_defaults(FILO_OPT_ADAMW);
    FILO_CHECK(filo_optimizer_new(cpu, &c, &opt));
    double host[7];
    filo_var *p = make_param(cpu, 7, 1, host), *q = make_param(cpu, 7, 2, host);
    FILO_CHECK(filo_optimizer_add_group(opt, 1, &p, NULL, 1e-3, 0, NULL));
    FILO_CHECK_FAILS(filo_optimizer_add_group(opt, 1, &p, NULL, 1e-3, 0, NULL), FILO_ERR_INVALID_ARG,
                     "already in group 0");
    filo_var *twice[2] = {q, q};
    FILO_CHECK_FAILS(filo_optimizer_add_group(opt, 2, twice, NULL, 1e-3, 0, NULL), FILO_ERR_INVALID_ARG,
                     "the same parameter");
    FILO_CHECK_FAILS(filo_optimizer_add_group(opt, 1, &q, NULL, -1e-3, 0, NULL), FILO_ERR_INVALID_ARG, "lr");
    FILO_CHECK_FAILS(filo_optimizer_add_group(opt, 1, &q, NULL, 1e-3, -0.1, NULL), FILO_ERR_INVALID_ARG,
                     "weight_decay");
    filo_tensor *it;
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_I64, 1, (int64_t[]){3}, &it));
    filo_var *iv;
    FILO_CHECK(filo_var_new(it, 0, &iv));
    FILO_CHECK_FAILS(filo_optimizer_add_group(opt, 1, &iv, NULL, 1e-3, 0, NULL), FILO_ERR_DTYPE, "must be f32");
    filo_var_free(iv);
    filo_tensor_free(it);
    filo_tensor *h;
    FILO_CHECK(filo_tensor_zeros(cpu, FILO_F16, 1, (int64_t[]){3}, &h));
    filo_var *hv;
    FILO_CHECK(filo_var_new(h, 1, &hv));
    FILO_CHECK_FAILS(filo_optimizer_add_group(opt, 1, &hv, NULL, 1e-3, 0, NULL), FILO_ERR_DTYPE, "must be f32");
    filo_var_free(hv);
    filo_tensor_free(h);
    if (nd > 1) {
        double hv2[7];
        filo_var *r = make_param(devs[1], 7, 3, hv2);
        FILO_CHECK_FAILS(filo_optimizer_add_group(opt, 1, &r, NULL, 1e-3, 0, NULL), FILO_ERR_DEVICE,
                         "not on the optimizer's device");
        filo_grad_scaler *s;
        FILO_CHECK(filo_grad_scaler_new(devs[1], NULL, &s));
        filo_step_options o = filo_step_defaults();
        o.scaler = s;
        FILO_CHECK_FAILS(filo_optimizer_step(opt, &o), FILO_ERR_DEVICE, "scaler");
        filo_grad_scaler_free(s);
        filo_var_free(r);
    }
    FILO_CHECK_FAILS(filo_optimizer_set_schedule(opt, &(filo_schedule){FILO_SCHEDULE_LINEAR, 10, 10, 0}),
                     FILO_ERR_INVALID_ARG, "total_steps (10) must be > warmup_steps (10)");
    FILO_CHECK_FAILS(filo_optimizer_set_schedule(opt, &(filo_schedule){FILO_SCHEDULE_COSINE, 5, 3, 0}),
                     FILO_ERR_INVALID_ARG, "must be > warmup_steps");
    FILO_CHECK_FAILS(filo_optimizer_set_schedule(opt, &(filo_schedule){FILO_SCHEDULE_CONSTANT, -1, 0, 0}),
                     FILO_ERR_INVALID_ARG, "warmup_steps must be >= 0");
    FILO_CHECK_FAILS(filo_optimizer_set_schedule(opt, &(filo_schedule){FILO_SCHEDULE_COSINE, 0, 10, 2.0}),
                     FILO_ERR_INVALID_ARG, "min_factor");
    FILO_CHECK_FAILS(filo_optimizer_set_group_lr(opt, 3, 0.1), FILO_ERR_INVALID_ARG, "group 3 out of range");
    filo_step_options o = filo_step_defaults();
    o.accumulated = 0;
    FILO_CHECK_FAILS(filo_optimizer_step(opt, &o), FILO_ERR_INVALID_ARG, "accumulated");
    o = filo_step_defaults();
    o.max_grad_norm = -1;
    FILO_CHECK_FAILS(filo_optimizer_step(opt, &o), FILO_ERR_INVALID_ARG, "max_grad_norm");
    filo_grad_scaler *s = NULL;
    filo_grad_scaler_config sc = filo_grad_scaler_defaults();
    sc.backoff_factor = 1.5;
    FILO_CHECK_FAILS(filo_grad_scaler_new(cpu, &sc, &s), FILO_ERR_INVALID_ARG, "backoff_factor");
    sc = filo_grad_scaler_defaults();
    sc.growth_interval = 0;
    FILO_CHECK_FAILS(filo_grad_scaler_new(cpu, &sc, &s), FILO_ERR_INVALID_ARG, "growth_interval");
    /* A failed call changed nothing: the optimizer still steps. */
    filo_optimizer_zero_grad(opt);
    FILO_CHECK(filo_optimizer_step(opt, NULL));
    cr_assert_eq(filo_optimizer_state_count(opt), 2 + 1 + 1);
    filo_var_free(p);
    filo_var_free(q);
    filo_optimizer_free(opt);
}
