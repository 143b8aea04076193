#define _POSIX_C_SOURCE 200809L
/* Training checkpoints (filo/train_checkpoint.h) on every backend: save + load into a freshly
 * built model (and optimizer and loss scaler) gives bitwise-equal values; a training run killed
 * with SIGKILL after a save and resumed from the checkpoint ends bitwise equal to the
 * uninterrupted run; a crash mid-save (temporary and stale files) still loads the previous
 * checkpoint, and the next save removes the debris; corrupted or mismatched checkpoints fail
 * with a message naming the problem and leave every object unchanged. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "filo_test.h"
#include "filo/losses.h"
#include "filo/safetensors.h"
#include "filo/train_checkpoint.h"

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        filo_status try_s_ = (expr);                                                               \
        if (try_s_ != FILO_OK)                                                                     \
            return try_s_;                                                                         \
    } while (0)

static char tmpdir[64];

static void make_tmpdir(void) { filo_test_make_tmpdir(tmpdir, sizeof tmpdir, "ckpt"); }

static void cleanup(void) { filo_test_remove_dir(tmpdir); }

TestSuite(train_checkpoint, .init = make_tmpdir, .fini = cleanup);

/* A path in the test's directory; the last 16 results stay valid. */
static const char *sub(const char *name)
{
    static char p[16][256];
    static int k;
    k = (k + 1) % 16;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

/* ---- a small model ---- */

typedef struct model {
    filo_params *ps;
    filo_var *w1, *b1, *w2, *b2;
} model;

/* in -> hidden (tanh, dropout) -> out. variant 1 adds a parameter, 2 leaves l2.bias out, 3 widens
 * the hidden layer: the mismatched models of the error tests. */
static filo_status model_build(filo_device dev, uint64_t seed, int variant, model *m)
{
    memset(m, 0, sizeof *m);
    int64_t hidden = variant == 3 ? 17 : 16;
    const int64_t s1[2] = {8, hidden}, s2[2] = {hidden, 3};
    filo_init ku = {FILO_INIT_KAIMING_UNIFORM, 2.23606797749979, 0}, un = {FILO_INIT_UNIFORM, -0.1, 0.1};
    TRY(filo_params_new(dev, seed, &m->ps));
    TRY(filo_params_create(m->ps, "l1.weight", 2, s1, ku, FILO_PARAM_WEIGHT, &m->w1));
    TRY(filo_params_create(m->ps, "l1.bias", 1, &s1[1], un, FILO_PARAM_BIAS, &m->b1));
    TRY(filo_params_create(m->ps, "l2.weight", 2, s2, ku, FILO_PARAM_WEIGHT, &m->w2));
    if (variant != 2)
        TRY(filo_params_create(m->ps, "l2.bias", 1, &s2[1], un, FILO_PARAM_BIAS, &m->b2));
    if (variant == 1) {
        filo_var *extra;
        TRY(filo_params_create(m->ps, "l3.weight", 2, s2, ku, FILO_PARAM_WEIGHT, &extra));
    }
    return FILO_OK;
}

static void model_free(model *m) { filo_params_free(m->ps); }

/* Every parameter's bytes, concatenated (the caller frees). */
static unsigned char *param_bytes(const filo_params *ps, size_t *n)
{
    size_t total = 0;
    for (int i = 0; i < filo_params_count(ps); i++)
        total += filo_tensor_nbytes(filo_var_value(filo_params_at(ps, i)));
    unsigned char *b = malloc(total + 1);
    size_t at = 0;
    for (int i = 0; i < filo_params_count(ps); i++) {
        const filo_tensor *t = filo_var_value(filo_params_at(ps, i));
        FILO_CHECK(filo_tensor_to_host(t, b + at, filo_tensor_nbytes(t)));
        at += filo_tensor_nbytes(t);
    }
    *n = total;
    return b;
}

static void assert_params_equal(const filo_params *a, const filo_params *b, const char *what)
{
    size_t na, nb;
    unsigned char *x = param_bytes(a, &na), *y = param_bytes(b, &nb);
    cr_assert_eq(na, nb, "%s: sizes differ", what);
    cr_assert(memcmp(x, y, na) == 0, "%s: parameters differ", what);
    free(x);
    free(y);
}

/* Moves every parameter away from its initial values (a stand-in for training). */
static void perturb(model *m, double by)
{
    for (int i = 0; i < filo_params_count(m->ps); i++) {
        filo_tensor *t = filo_var_value(filo_params_at(m->ps, i));
        double *v = filo_test_download(t);
        for (int64_t k = 0; k < filo_tensor_numel(t); k++)
            v[k] += by * (double)(k + 1);
        filo_tensor *u = filo_test_upload(t->device, FILO_F32, t->ndim, t->shape, v);
        FILO_CHECK(filo_tensor_copy(t, u));
        filo_tensor_free(u);
        free(v);
    }
}

/* ---- parameters only ---- */

Test(train_checkpoint, params_only_round_trip)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        const char *dir = sub(d ? "p1" : "p0");
        model a, b;
        FILO_CHECK(model_build(devs[d], 1, 0, &a));
        FILO_CHECK(model_build(devs[d], 1, 0, &b));
        perturb(&a, 0.01);
        filo_generator g1, g2;
        filo_generator_init(&g1, 0xfedcba9876543210ull);
        filo_generator_advance(&g1, 1000);
        filo_generator_init(&g2, 5);
        filo_train_state st = {.params = a.ps, .n_generators = 2, .generators = {&g1, &g2}, .step = 42, .epoch = 3,
                               .extra_json = "{\"best\": 0.5, \"note\": \"x\"}"};
        cr_assert(!filo_train_checkpoint_exists(dir));
        FILO_CHECK(filo_train_checkpoint_save(dir, &st));
        cr_assert(filo_train_checkpoint_exists(dir));
        cr_assert(access(sub(d ? "p1/model-42.safetensors" : "p0/model-42.safetensors"), F_OK) == 0);

        filo_generator h1, h2;
        filo_generator_init(&h1, 1);
        filo_generator_init(&h2, 1);
        filo_train_state in = {.params = b.ps, .n_generators = 2, .generators = {&h1, &h2}};
        FILO_CHECK(filo_train_checkpoint_load(dir, &in));
        assert_params_equal(a.ps, b.ps, filo_test_backend_name(devs[d]));
        cr_assert(h1.seed == g1.seed && h1.offset == g1.offset && h2.seed == 5 && h2.offset == g2.offset);
        cr_assert_eq(in.step, 42);
        cr_assert_eq(in.epoch, 3);
        cr_assert_not_null(in.extra_json);
        cJSON *extra = cJSON_Parse(in.extra_json);
        cr_assert(cJSON_IsObject(extra));
        cr_assert_eq(cJSON_GetObjectItem(extra, "best")->valuedouble, 0.5);
        cJSON_Delete(extra);
        free(in.extra_json);
        model_free(&a);
        model_free(&b);
    }
}

/* ---- crash mid-save ---- */

static void write_junk(const char *path, size_t n)
{
    FILE *fp = fopen(path, "wb");
    cr_assert(fp);
    for (size_t i = 0; i < n; i++)
        fputc((int)(i * 7 & 0xff), fp);
    fclose(fp);
}

static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

Test(train_checkpoint, crash_mid_save_keeps_the_previous_checkpoint)
{
    const char *dir = sub("c");
    model a, b;
    FILO_CHECK(model_build(filo_cpu(), 1, 0, &a));
    FILO_CHECK(model_build(filo_cpu(), 2, 0, &b));
    filo_train_state st = {.params = a.ps, .step = 3};
    FILO_CHECK(filo_train_checkpoint_save(dir, &st));
    /* A save of step 6 that died: its model file complete, its optimizer file half-written
     * under the temporary name, trainer.json's temporary file partial. */
    write_junk(sub("c/model-6.safetensors"), 300);
    write_junk(sub("c/optimizer-6.safetensors.tmp.Ab12Cd"), 100);
    write_junk(sub("c/trainer.json.tmp.Zz9Yy8"), 10);
    filo_train_state in = {.params = b.ps};
    FILO_CHECK(filo_train_checkpoint_load(dir, &in));
    cr_assert_eq(in.step, 3);
    cr_assert_null(in.extra_json);
    /* b now holds a's step-3 values, which model_build with seed 1 reproduces. */
    model ref;
    FILO_CHECK(model_build(filo_cpu(), 1, 0, &ref));
    assert_params_equal(ref.ps, b.ps, "after a crashed save");
    /* The next committed save removes the debris and the old step. */
    st.step = 4;
    FILO_CHECK(filo_train_checkpoint_save(dir, &st));
    cr_assert_eq(dir_entries(dir), 2, "left: %d entries", dir_entries(dir));
    cr_assert(access(sub("c/model-4.safetensors"), F_OK) == 0);
    cr_assert(access(sub("c/trainer.json"), F_OK) == 0);
    model_free(&a);
    model_free(&b);
    model_free(&ref);
}

/* ---- corrupted and mismatched checkpoints ---- */

static void rewrite_json(const char *path, const char *key, double add)
{
    FILE *fp = fopen(path, "rb");
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    cJSON *v = cJSON_GetObjectItem(j, key);
    cJSON_SetNumberValue(v, v->valuedouble + add);
    char *text = cJSON_Print(j);
    fp = fopen(path, "wb");
    fputs(text, fp);
    fclose(fp);
    cJSON_free(text);
    cJSON_Delete(j);
}

static long file_len(const char *path)
{
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    return (long)sb.st_size;
}

/* Loads into a model of `variant` and expects the failure; the model and the generator must
 * keep their values. */
static void expect_load_fails(const char *dir, int variant, int n_gen, filo_status status, const char *needle)
{
    model m;
    FILO_CHECK(model_build(filo_cpu(), 9, variant, &m));
    size_t n0, n1;
    unsigned char *before = param_bytes(m.ps, &n0);
    filo_generator g;
    filo_generator_init(&g, 77);
    filo_train_state in = {.params = m.ps, .n_generators = n_gen, .generators = {&g}, .step = -5};
    FILO_CHECK_FAILS(filo_train_checkpoint_load(dir, &in), status, needle);
    unsigned char *after = param_bytes(m.ps, &n1);
    cr_assert(n0 == n1 && memcmp(before, after, n0) == 0, "the failed load (%s) changed the parameters", needle);
    cr_assert(g.seed == 77 && g.offset == 0 && in.step == -5 && !in.extra_json);
    free(before);
    free(after);
    model_free(&m);
}

/* Saves a checkpoint of step 10 in `name`; *dir receives its path. */
static void fresh_checkpoint(const char *name, char dir[256])
{
    snprintf(dir, 256, "%s", sub(name));
    model a;
    FILO_CHECK(model_build(filo_cpu(), 1, 0, &a));
    filo_generator g;
    filo_generator_init(&g, 3);
    filo_train_state st = {.params = a.ps, .n_generators = 1, .generators = {&g}, .step = 10};
    FILO_CHECK(filo_train_checkpoint_save(dir, &st));
    model_free(&a);
}

Test(train_checkpoint, corrupted_or_mismatched_params)
{
    char dir[256];
    fresh_checkpoint("m", dir);
    expect_load_fails(dir, 1, 1, FILO_ERR_FORMAT, "model-10.safetensors has no tensor 'l3.weight'");
    expect_load_fails(dir, 3, 1, FILO_ERR_SHAPE, "but is [8, 17] here");
    expect_load_fails(dir, 2, 1, FILO_ERR_FORMAT, "has a tensor 'l2.bias' that this model lacks");
    expect_load_fails(dir, 3, 1, FILO_ERR_SHAPE, "'l1.weight' is saved with shape [8, 16] in");
    expect_load_fails(dir, 0, 0, FILO_ERR_FORMAT, "has 1 generators, 0 were given");

    /* trainer.json records another size than the file has. */
    rewrite_json(sub("m/trainer.json"), "model_bytes", 1);
    expect_load_fails(dir, 0, 1, FILO_ERR_FORMAT, "but");
    expect_load_fails(dir, 0, 1, FILO_ERR_FORMAT, "model-10.safetensors has");
    rewrite_json(sub("m/trainer.json"), "model_bytes", -1);

    /* The model file cut short: first the size check, then (with a matching record) the header's. */
    long len = file_len(sub("m/model-10.safetensors"));
    cr_assert_eq(truncate(sub("m/model-10.safetensors"), len - 16), 0);
    expect_load_fails(dir, 0, 1, FILO_ERR_FORMAT, "(truncated or replaced file)");
    rewrite_json(sub("m/trainer.json"), "model_bytes", -16);
    expect_load_fails(dir, 0, 1, FILO_ERR_FORMAT, "run past the data region");

    /* A missing model file, a broken trainer.json, no checkpoint at all. */
    fresh_checkpoint("m2", dir);
    unlink(sub("m2/model-10.safetensors"));
    expect_load_fails(dir, 0, 1, FILO_ERR_IO, "cannot stat");
    write_junk(sub("m2/trainer.json"), 40);
    expect_load_fails(dir, 0, 1, FILO_ERR_FORMAT, "not a filo-train-checkpoint record");
    expect_load_fails(sub("none"), 0, 1, FILO_ERR_IO, "cannot open");
}

Test(train_checkpoint, bad_arguments)
{
    model a;
    FILO_CHECK(model_build(filo_cpu(), 1, 0, &a));
    filo_train_state st = {.params = a.ps};
    FILO_CHECK_FAILS(filo_train_checkpoint_save(NULL, &st), FILO_ERR_INVALID_ARG, "must not be NULL");
    st.params = NULL;
    FILO_CHECK_FAILS(filo_train_checkpoint_save(sub("x"), &st), FILO_ERR_INVALID_ARG, "params is NULL");
    st.params = a.ps;
    st.n_generators = 1;
    FILO_CHECK_FAILS(filo_train_checkpoint_save(sub("x"), &st), FILO_ERR_INVALID_ARG, "generators[0] is NULL");
    st.n_generators = 0;
    st.extra_json = "[1]";
    FILO_CHECK_FAILS(filo_train_checkpoint_save(sub("x"), &st), FILO_ERR_INVALID_ARG, "not a JSON object");
    st.extra_json = NULL;
    FILO_CHECK_FAILS(filo_train_checkpoint_save("/nonexistent-dir/sub", &st), FILO_ERR_IO, "cannot create");
    cr_assert(!filo_train_checkpoint_exists(sub("x")));
    model_free(&a);
}

/* ---- with an optimizer, a loss scaler and dropout: the training loop ---- */

typedef struct trainer {
    model m;
    filo_optimizer *opt;
    filo_grad_scaler *scaler;
    filo_generator drop, data;
    int64_t step;
} trainer;

static filo_status trainer_build(filo_device dev, filo_optimizer_kind kind, int groups, trainer *t)
{
    memset(t, 0, sizeof *t);
    TRY(model_build(dev, 1, 0, &t->m));
    filo_optimizer_config c = filo_optimizer_defaults(kind);
    c.lr = 0.05;
    TRY(filo_optimizer_new(dev, &c, &t->opt));
    if (groups == 2) {
        TRY(filo_optimizer_add_params(t->opt, t->m.ps));
    } else {
        filo_var *all[4] = {t->m.w1, t->m.b1, t->m.w2, t->m.b2};
        const char *names[4] = {"l1.weight", "l1.bias", "l2.weight", "l2.bias"};
        TRY(filo_optimizer_add_group(t->opt, 4, all, names, c.lr, c.weight_decay, NULL));
    }
    filo_schedule s = {.kind = FILO_SCHEDULE_LINEAR, .warmup_steps = 2, .total_steps = 20};
    TRY(filo_optimizer_set_schedule(t->opt, &s));
    /* A scale that grows every 3 steps: the resumed run must restore its counter. */
    filo_grad_scaler_config sc = filo_grad_scaler_defaults();
    sc.init_scale = 1024;
    sc.growth_interval = 3;
    TRY(filo_grad_scaler_new(dev, &sc, &t->scaler));
    filo_generator_init(&t->drop, 7);
    filo_generator_init(&t->data, 11);
    return FILO_OK;
}

static void trainer_free(trainer *t)
{
    filo_optimizer_free(t->opt);
    filo_grad_scaler_free(t->scaler);
    model_free(&t->m);
}

static filo_train_state trainer_state(trainer *t)
{
    filo_train_state st = {.params = t->m.ps, .opt = t->opt, .scaler = t->scaler, .n_generators = 2,
                           .generators = {&t->drop, &t->data}, .step = t->step};
    return st;
}

/* One step: a batch drawn from the data generator, linear-tanh-dropout-linear, BCE with soft
 * targets, the loss scaled, AdamW with the LINEAR schedule and clipping. */
static filo_status train_step(trainer *t)
{
    filo_device dev = filo_params_device(t->m.ps);
    const int64_t xs[2] = {12, 8}, ys[2] = {12, 3};
    filo_tensor *x = NULL, *y = NULL;
    filo_var *xv = NULL, *h = NULL, *a = NULL, *dr = NULL, *o = NULL, *loss = NULL, *scaled = NULL;
    filo_status s = filo_tensor_empty(dev, FILO_F32, 2, xs, &x);
    if (s == FILO_OK)
        s = filo_tensor_normal(x, &t->data, 0.0, 1.0);
    if (s == FILO_OK)
        s = filo_tensor_empty(dev, FILO_F32, 2, ys, &y);
    if (s == FILO_OK)
        s = filo_tensor_uniform(y, &t->data, 0.0, 1.0);
    if (s == FILO_OK)
        s = filo_var_new(x, 0, &xv);
    if (s == FILO_OK)
        s = filo_ag_matmul(xv, t->m.w1, 0, 0, t->m.b1, FILO_MATMUL_EPILOGUE_BIAS, &h);
    if (s == FILO_OK)
        s = filo_ag_unary(FILO_UNARY_TANH, h, &a);
    if (s == FILO_OK)
        s = filo_ag_dropout(a, 0.25, &t->drop, &dr);
    if (s == FILO_OK)
        s = filo_ag_matmul(dr, t->m.w2, 0, 0, t->m.b2, FILO_MATMUL_EPILOGUE_BIAS, &o);
    if (s == FILO_OK)
        s = filo_loss_bce_with_logits(o, y, NULL, &loss);
    if (s == FILO_OK)
        s = filo_grad_scaler_scale(t->scaler, loss, &scaled);
    if (s == FILO_OK)
        s = filo_backward(scaled, NULL, 0);
    filo_step_options so = filo_step_defaults();
    so.scaler = t->scaler;
    so.max_grad_norm = 1.0;
    if (s == FILO_OK)
        s = filo_optimizer_step(t->opt, &so);
    filo_optimizer_zero_grad(t->opt);
    filo_var *vars[7] = {xv, h, a, dr, o, loss, scaled};
    for (int i = 0; i < 7; i++)
        filo_var_free(vars[i]);
    filo_tensor_free(x);
    filo_tensor_free(y);
    t->step++;
    return s;
}

/* Every optimizer and scaler state tensor's bytes, concatenated. */
static unsigned char *state_bytes(const trainer *t, size_t *n)
{
    int count = filo_optimizer_state_count(t->opt);
    filo_tensor *ts[64];
    cr_assert(count + 3 <= 64);
    for (int i = 0; i < count; i++) {
        const char *name;
        FILO_CHECK(filo_optimizer_state_at(t->opt, i, &name, &ts[i]));
    }
    ts[count] = filo_grad_scaler_tensor(t->scaler, "scale");
    ts[count + 1] = filo_grad_scaler_tensor(t->scaler, "growth_tracker");
    ts[count + 2] = filo_grad_scaler_tensor(t->scaler, "found_inf");
    size_t total = 0;
    for (int i = 0; i < count + 3; i++)
        total += filo_tensor_nbytes(ts[i]);
    unsigned char *b = malloc(total + 1);
    size_t at = 0;
    for (int i = 0; i < count + 3; i++) {
        FILO_CHECK(filo_tensor_to_host(ts[i], b + at, filo_tensor_nbytes(ts[i])));
        at += filo_tensor_nbytes(ts[i]);
    }
    *n = total;
    return b;
}

static void assert_trainers_equal(const trainer *a, const trainer *b, const char *what)
{
    assert_params_equal(a->m.ps, b->m.ps, what);
    size_t na, nb;
    unsigned char *x = state_bytes(a, &na), *y = state_bytes(b, &nb);
    cr_assert(na == nb && memcmp(x, y, na) == 0, "%s: optimizer or scaler state differs", what);
    free(x);
    free(y);
    cr_assert(a->drop.seed == b->drop.seed && a->drop.offset == b->drop.offset, "%s: dropout generator", what);
    cr_assert(a->data.seed == b->data.seed && a->data.offset == b->data.offset, "%s: data generator", what);
    cr_assert_eq(filo_optimizer_step_count(a->opt), filo_optimizer_step_count(b->opt), "%s: step count", what);
}

Test(train_checkpoint, full_state_round_trip)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        const char *dir = sub(d ? "f1" : "f0");
        trainer a, b;
        FILO_CHECK(trainer_build(devs[d], FILO_OPT_ADAMW, 2, &a));
        FILO_CHECK(trainer_build(devs[d], FILO_OPT_ADAMW, 2, &b));
        for (int i = 0; i < 4; i++)
            FILO_CHECK(train_step(&a));
        filo_train_state st = trainer_state(&a);
        st.epoch = 1;
        FILO_CHECK(filo_train_checkpoint_save(dir, &st));
        /* trainer.json records the optimizer's kind, groups and schedule. */
        char jp[300], buf[8192];
        snprintf(jp, sizeof jp, "%s/trainer.json", dir);
        FILE *fp = fopen(jp, "rb");
        buf[fread(buf, 1, sizeof buf - 1, fp)] = 0;
        fclose(fp);
        cJSON *j = cJSON_Parse(buf), *o = cJSON_GetObjectItem(j, "optimizer");
        cr_assert_str_eq(cJSON_GetObjectItem(o, "kind")->valuestring, "adamw");
        cr_assert_eq(cJSON_GetObjectItem(o, "groups")->valuedouble, 2);
        cJSON *sch = cJSON_GetObjectItem(o, "schedule");
        cr_assert_str_eq(cJSON_GetObjectItem(sch, "kind")->valuestring, "linear");
        cr_assert_eq(cJSON_GetObjectItem(sch, "total_steps")->valuedouble, 20);
        cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "config"), "lr")->valuedouble, 0.05);
        cJSON_Delete(j);
        filo_train_state in = trainer_state(&b);
        FILO_CHECK(filo_train_checkpoint_load(dir, &in));
        cr_assert_eq(in.step, 4);
        cr_assert_eq(in.epoch, 1);
        assert_trainers_equal(&a, &b, filo_test_backend_name(devs[d]));
        cr_assert_eq(filo_optimizer_group_lr(a.opt, 0), filo_optimizer_group_lr(b.opt, 0));
        trainer_free(&a);
        trainer_free(&b);
    }
}

/* Loading `dir` into a trainer of the given kind and groups fails; nothing changes. */
static void expect_trainer_load_fails(const char *dir, filo_optimizer_kind kind, int groups, int with_scaler,
                                      filo_status status, const char *needle)
{
    trainer t;
    FILO_CHECK(trainer_build(filo_cpu(), kind, groups, &t));
    FILO_CHECK(train_step(&t));
    size_t n0, n1, s0, s1;
    unsigned char *p0 = param_bytes(t.m.ps, &n0), *st0 = state_bytes(&t, &s0);
    filo_generator drop = t.drop;
    filo_train_state in = trainer_state(&t);
    if (!with_scaler)
        in.scaler = NULL;
    FILO_CHECK_FAILS(filo_train_checkpoint_load(dir, &in), status, needle);
    unsigned char *p1 = param_bytes(t.m.ps, &n1), *st1 = state_bytes(&t, &s1);
    cr_assert(n0 == n1 && memcmp(p0, p1, n0) == 0, "'%s': the parameters changed", needle);
    cr_assert(s0 == s1 && memcmp(st0, st1, s0) == 0, "'%s': the optimizer state changed", needle);
    cr_assert(drop.offset == t.drop.offset && in.step == 1);
    free(p0);
    free(p1);
    free(st0);
    free(st1);
    trainer_free(&t);
}

Test(train_checkpoint, corrupted_or_mismatched_optimizer)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s", sub("o"));
    trainer a;
    FILO_CHECK(trainer_build(filo_cpu(), FILO_OPT_ADAMW, 2, &a));
    for (int i = 0; i < 2; i++)
        FILO_CHECK(train_step(&a));
    filo_train_state st = trainer_state(&a);
    FILO_CHECK(filo_train_checkpoint_save(dir, &st));
    expect_trainer_load_fails(dir, FILO_OPT_ADAM, 2, 1, FILO_ERR_FORMAT, "optimizer is 'adamw', the one given is 'adam'");
    expect_trainer_load_fails(dir, FILO_OPT_ADAMW, 1, 1, FILO_ERR_FORMAT, "has 2 parameter groups, the one given has 1");
    /* trainer.json disagrees with the optimizer file's size; then the file is cut short. */
    rewrite_json(sub("o/trainer.json"), "optimizer_bytes", 8);
    expect_trainer_load_fails(dir, FILO_OPT_ADAMW, 2, 1, FILO_ERR_FORMAT, "optimizer-2.safetensors has");
    rewrite_json(sub("o/trainer.json"), "optimizer_bytes", -8);
    long len = file_len(sub("o/optimizer-2.safetensors"));
    cr_assert_eq(truncate(sub("o/optimizer-2.safetensors"), len - 4), 0);
    expect_trainer_load_fails(dir, FILO_OPT_ADAMW, 2, 1, FILO_ERR_FORMAT, "(truncated or replaced file)");

    /* Saved without optimizer and scaler; loaded with them. */
    filo_train_state params_only = {.params = a.m.ps, .n_generators = 2, .generators = {&a.drop, &a.data}, .step = 2};
    FILO_CHECK(filo_train_checkpoint_save(sub("o2"), &params_only));
    expect_trainer_load_fails(sub("o2"), FILO_OPT_ADAMW, 2, 1, FILO_ERR_FORMAT, "has no optimizer state");

    /* Saved with an SGD (momentum buffers, no Adam moments) and a scaler. */
    trainer s;
    FILO_CHECK(trainer_build(filo_cpu(), FILO_OPT_SGD, 2, &s));
    filo_train_state sst = trainer_state(&s);
    FILO_CHECK(filo_train_checkpoint_save(sub("o3"), &sst));
    expect_trainer_load_fails(sub("o3"), FILO_OPT_ADAMW, 2, 1, FILO_ERR_FORMAT, "optimizer is 'sgd'");
    trainer_free(&s);

    /* Saved without the scaler, loaded with one. */
    filo_train_state no_scaler = trainer_state(&a);
    no_scaler.scaler = NULL;
    FILO_CHECK(filo_train_checkpoint_save(sub("o4"), &no_scaler));
    expect_trainer_load_fails(sub("o4"), FILO_OPT_ADAMW, 2, 1, FILO_ERR_FORMAT, "has no grad scaler state");
    /* ... and the other way round: a checkpoint with a scaler loads into a trainer without one. */
    FILO_CHECK(filo_train_checkpoint_save(sub("o5"), &st));
    trainer b;
    FILO_CHECK(trainer_build(filo_cpu(), FILO_OPT_ADAMW, 2, &b));
    filo_train_state in = trainer_state(&b);
    in.scaler = NULL;
    FILO_CHECK(filo_train_checkpoint_load(sub("o5"), &in));
    assert_params_equal(a.m.ps, b.m.ps, "without the scaler");
    trainer_free(&b);

    /* The optimizer file rewritten without one state tensor (trainer.json's size updated). */
    const char *opt_path = sub("o5/optimizer-2.safetensors");
    long before = file_len(opt_path);
    filo_safetensors *f;
    FILO_CHECK(filo_safetensors_open(opt_path, &f));
    int n = filo_safetensors_count(f), k = 0;
    const char *names[64];
    filo_tensor *ts[64];
    for (int i = 0; i < n; i++) {
        const char *name = filo_safetensors_name_at(f, i);
        if (strcmp(name, "l2.weight.exp_avg_sq") == 0)
            continue;
        names[k] = name;
        FILO_CHECK(filo_safetensors_load(f, name, filo_cpu(), FILO_DTYPE_COUNT, &ts[k++]));
    }
    cr_assert_eq(k, n - 1);
    FILO_CHECK(filo_safetensors_write(opt_path, k, names, (const filo_tensor *const *)ts, 0, NULL, NULL));
    for (int i = 0; i < k; i++)
        filo_tensor_free(ts[i]);
    filo_safetensors_close(f);
    rewrite_json(sub("o5/trainer.json"), "optimizer_bytes", (double)(file_len(opt_path) - before));
    expect_trainer_load_fails(sub("o5"), FILO_OPT_ADAMW, 2, 1, FILO_ERR_FORMAT, "has no tensor 'l2.weight.exp_avg_sq'");
    trainer_free(&a);
}

/* ---- save, kill, resume ---- */

enum { SAVE_EVERY = 3, KILL_AFTER = 6, TOTAL_STEPS = 10, CHILD_NO_BACKEND = 3 };

/* The child: trains from scratch, saving every SAVE_EVERY steps, and SIGKILLs itself right after
 * the save of step KILL_AFTER. It never returns; any failure exits with a code. */
static void child_train(int backend, const char *dir)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    if (backend >= filo_test_backends(devs))
        _exit(CHILD_NO_BACKEND);
    trainer t;
    if (trainer_build(devs[backend], FILO_OPT_ADAMW, 2, &t) != FILO_OK)
        _exit(1);
    for (;;) {
        if (train_step(&t) != FILO_OK)
            _exit(1);
        if (t.step % SAVE_EVERY == 0) {
            filo_train_state st = trainer_state(&t);
            if (filo_train_checkpoint_save(dir, &st) != FILO_OK)
                _exit(2);
            if (t.step == KILL_AFTER)
                raise(SIGKILL);
        }
        if (t.step > KILL_AFTER)
            _exit(4);
    }
}

/* Must run before this process makes any filo call: the child of fork() has only the calling
 * thread, so no worker pool may exist yet. */
static void save_kill_resume(int backend)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s", sub("run"));
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0)
        child_train(backend, dir);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_NO_BACKEND) {
        cleanup(); /* a skipped test does not reach the suite's fini */
        cr_skip_test("no backend %d in this build", backend);
    }
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the child ended with status 0x%x", status);

    filo_device devs[FILO_TEST_MAX_BACKENDS];
    filo_test_backends(devs);
    trainer resumed, straight;
    FILO_CHECK(trainer_build(devs[backend], FILO_OPT_ADAMW, 2, &resumed));
    filo_train_state in = trainer_state(&resumed);
    FILO_CHECK(filo_train_checkpoint_load(dir, &in));
    cr_assert_eq(in.step, KILL_AFTER);
    resumed.step = in.step;
    while (resumed.step < TOTAL_STEPS)
        FILO_CHECK(train_step(&resumed));
    FILO_CHECK(trainer_build(devs[backend], FILO_OPT_ADAMW, 2, &straight));
    while (straight.step < TOTAL_STEPS)
        FILO_CHECK(train_step(&straight));
    cr_assert_eq(filo_optimizer_step_count(straight.opt), TOTAL_STEPS);
    assert_trainers_equal(&straight, &resumed, filo_test_backend_name(devs[backend]));
    cr_assert_eq(filo_grad_scaler_get_scale(straight.scaler), filo_grad_scaler_get_scale(resumed.scaler));
    trainer_free(&resumed);
    trainer_free(&straight);
}

Test(train_checkpoint, save_kill_resume_cpu) { save_kill_resume(0); }

/* The emulated CUDA device in the emu/ build (a real GPU where one is present). */
Test(train_checkpoint, save_kill_resume_device) { save_kill_resume(1); }
