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
#include "filo/train_checkpoint.h"

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        filo_status try_s_ = (expr);                                                               \
        if (try_s_ != FILO_OK)                                                                     \
            return try_s_;                                                                         \
    } while (0)

static char tmpdir[64];

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            struct stat sb;
            if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                remove_dir(p);
            else
                unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/filo-ckpt-XXXXXX");
    cr_assert(mkdtemp(tmpdir) != NULL);
}

static void cleanup(void) { remove_dir(tmpdir); }

TestSuite(train_checkpoint, .init = make_tmpdir, .fini = cleanup);

static const char *sub(const char *name)
{
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
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
    expect_load_fails(dir, 1, 1, FILO_ERR_FORMAT, "has no tensor 'l3.weight'");
    expect_load_fails(dir, 2, 1, FILO_ERR_FORMAT, "has a tensor 'l2.bias' that this model lacks");
    expect_load_fails(dir, 3, 1, FILO_ERR_SHAPE, "'l1.weight' is saved with shape [8, 16] but is [8, 17] here");
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
