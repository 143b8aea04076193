/* BERT (filo/bert.h) against the torch re-implementation of transformers' BERT in
 * tests/fixtures/bert/make-fixture.py, on every backend: each head's f32 logits (1e-4 relative
 * norm), bf16 autocast logits (2e-2), every loss and problem type, the gradient of every
 * parameter (1e-3) and ten AdamW steps (1e-4); then the loader's name rules (with or without
 * "bert.", gamma/beta, position_ids, f16/bf16 files, fresh heads) and its errors, save -> load
 * round trips and config.json's keys, config.json errors, presets' parameter counts. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filo/bert.h"
#include "filo/optimizer.h"
#include "filo/safetensors.h"
#include "filo_test.h"
#include "../models/bert_internal.h"

/* ---- fixture access ---- */

/* tests/fixtures/bert/<file>, found from this source file's path. */
static const char *fixture(const char *file)
{
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ % 4];
    const char *slash = strrchr(__FILE__, '/');
    int dirlen = slash ? (int)(slash - __FILE__) : 1;
    snprintf(b, sizeof buf[0], "%.*s/fixtures/bert%s%s", dirlen, slash ? __FILE__ : ".", *file ? "/" : "", file);
    return b;
}

static filo_safetensors *expected_file(void)
{
    filo_safetensors *f;
    FILO_CHECK(filo_safetensors_open(fixture("expected.safetensors"), &f));
    return f;
}

/* A tensor of expected.safetensors as doubles (*n: its element count). */
static double *expected(const filo_safetensors *f, const char *name, int64_t *n)
{
    filo_tensor *t;
    FILO_CHECK(filo_safetensors_load(f, name, filo_cpu(), FILO_F64, &t));
    if (n)
        *n = filo_tensor_numel(t);
    double *v = filo_test_download(t);
    filo_tensor_free(t);
    return v;
}

static filo_tensor *expected_tensor(const filo_safetensors *f, const char *name, filo_device dev)
{
    filo_tensor *t;
    FILO_CHECK(filo_safetensors_load(f, name, dev, FILO_DTYPE_COUNT, &t));
    return t;
}

/* ||got - want|| / ||want||. */
static double rel_err(const double *got, const double *want, int64_t n)
{
    double d = 0.0, w = 0.0;
    for (int64_t i = 0; i < n; i++) {
        d += (got[i] - want[i]) * (got[i] - want[i]);
        w += want[i] * want[i];
    }
    return sqrt(d) / (w > 0.0 ? sqrt(w) : 1.0);
}

/* Compares v with the expected tensor `name` (relative norm within tol); returns the error. */
static double check_var(const filo_safetensors *f, const char *name, const filo_tensor *v, double tol, const char *what,
                        filo_device dev)
{
    int64_t n;
    double *want = expected(f, name, &n);
    cr_assert_eq(filo_tensor_numel(v), n, "%s: %lld values, %s has %lld", what, (long long)filo_tensor_numel(v), name,
                 (long long)n);
    double *got = filo_test_download(v);
    double e = rel_err(got, want, n);
    cr_assert(e <= tol, "%s on %s: relative error %.3g > %.1g against %s", what, filo_test_backend_name(dev), e, tol,
              name);
    free(got);
    free(want);
    return e;
}

static double check_loss(const filo_safetensors *f, const char *name, filo_var *loss, double tol, filo_device dev)
{
    double got, *want = expected(f, name, NULL);
    FILO_CHECK(filo_tensor_to_host_as(filo_var_value(loss), FILO_F64, &got, sizeof got));
    double e = fabs(got - want[0]) / fmax(fabs(want[0]), 1e-30);
    cr_assert(e <= tol, "%s on %s: %.9g, torch %.9g (relative error %.3g)", name, filo_test_backend_name(dev), got,
              want[0], e);
    free(want);
    return e;
}

typedef struct batch {
    filo_tensor *ids, *tt, *lengths;
    filo_bert_inputs in;
} batch;

/* Batch A and B are padded with token types; C has neither (NULL inputs). */
static void batch_load(batch *b, const filo_safetensors *f, const char *key, filo_device dev)
{
    char name[64];
    memset(b, 0, sizeof *b);
    snprintf(name, sizeof name, "%s.input_ids", key);
    b->ids = expected_tensor(f, name, dev);
    snprintf(name, sizeof name, "%s.token_type_ids", key);
    if (filo_safetensors_has(f, name)) {
        b->tt = expected_tensor(f, name, dev);
        snprintf(name, sizeof name, "%s.lengths", key);
        b->lengths = expected_tensor(f, name, dev);
    }
    b->in = (filo_bert_inputs){b->ids, b->tt, b->lengths};
}

static void batch_free(batch *b)
{
    filo_tensor_free(b->ids);
    filo_tensor_free(b->tt);
    filo_tensor_free(b->lengths);
}

static filo_bert *load_fixture(filo_bert_task task, filo_device dev)
{
    filo_bert *m;
    FILO_CHECK(filo_bert_load(fixture(""), task, dev, 7, &m));
    return m;
}

static const char *const batch_keys[3] = {"A", "B", "C"};

/* ---- parity with torch ---- */

static const struct {
    filo_bert_task task;
    const char *suffix;
} heads[4] = {{FILO_BERT_SEQUENCE_CLASSIFY, "seq_logits"},
              {FILO_BERT_TOKEN_CLASSIFY, "token_logits"},
              {FILO_BERT_QUESTION_ANSWER, "qa_logits"},
              {FILO_BERT_MASKED_LM, "mlm_logits"}};

/* Every head's logits on every batch under `autocast`; returns the largest relative error. */
static double logits_parity(filo_device dev, filo_dtype autocast, double tol)
{
    filo_safetensors *f = expected_file();
    filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
    ctx.autocast = autocast;
    double worst = 0.0;
    for (int h = 0; h < 4; h++) {
        filo_bert *m = load_fixture(heads[h].task, dev);
        for (int k = 0; k < 3; k++) {
            batch b;
            batch_load(&b, f, batch_keys[k], dev);
            filo_var *logits;
            FILO_CHECK(filo_bert_forward(m, &ctx, &b.in, &logits));
            cr_assert_eq(filo_var_value(logits)->dtype, FILO_F32, "logits must be f32");
            char name[64];
            snprintf(name, sizeof name, "%s.%s", batch_keys[k], heads[h].suffix);
            worst = fmax(worst, check_var(f, name, filo_var_value(logits), tol, name, dev));
            filo_var_free(logits);
            batch_free(&b);
        }
        filo_bert_free(m);
    }
    filo_safetensors_close(f);
    return worst;
}

Test(bert_parity, logits_f32)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        double e = logits_parity(devs[d], FILO_F32, 1e-4);
        fprintf(stderr, "bert parity %s: f32 logits of 4 heads x 3 batches, max relative error %.2e\n",
                filo_test_backend_name(devs[d]), e);
    }
}

Test(bert_parity, logits_bf16_autocast)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    for (int d = 0; d < nd; d++) {
        double e = logits_parity(devs[d], FILO_BF16, 2e-2);
        fprintf(stderr, "bert parity %s: bf16 autocast logits, max relative error %.2e\n",
                filo_test_backend_name(devs[d]), e);
    }
}

Test(bert_parity, encoder_outputs)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    filo_safetensors *f = expected_file();
    filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
    for (int d = 0; d < nd; d++) {
        /* A bare BertModel from a sequence classifier's file: "bert." dropped, the head skipped. */
        filo_bert *m = load_fixture(FILO_BERT_ENCODER, devs[d]);
        cr_assert_not_null(filo_params_find(m->params, "embeddings.word_embeddings.weight"));
        cr_assert_not_null(filo_params_find(m->params, "pooler.dense.weight"));
        double worst = 0.0;
        for (int k = 0; k < 3; k++) {
            batch b;
            batch_load(&b, f, batch_keys[k], devs[d]);
            filo_var *seq, *pooled;
            FILO_CHECK(filo_bert_encode(m, &ctx, &b.in, &seq, &pooled));
            char name[64];
            snprintf(name, sizeof name, "%s.sequence", batch_keys[k]);
            worst = fmax(worst, check_var(f, name, filo_var_value(seq), 1e-4, name, devs[d]));
            snprintf(name, sizeof name, "%s.pooled", batch_keys[k]);
            worst = fmax(worst, check_var(f, name, filo_var_value(pooled), 1e-4, name, devs[d]));
            filo_var_free(seq);
            filo_var_free(pooled);
            batch_free(&b);
        }
        fprintf(stderr, "bert parity %s: encoder sequence and pooled outputs, max relative error %.2e\n",
                filo_test_backend_name(devs[d]), worst);
        filo_bert_free(m);
    }
    filo_safetensors_close(f);
}

/* The loss of logits for the labels key.label_suffix (cast to label_dtype), checked against
 * key.loss_suffix. */
static double loss_case(const filo_bert *m, filo_var *logits, const filo_safetensors *f, const char *key,
                        const char *label_suffix, const char *loss_suffix, filo_dtype label_dtype, filo_device dev)
{
    char name[64];
    snprintf(name, sizeof name, "%s.%s", key, label_suffix);
    filo_tensor *raw = expected_tensor(f, name, dev), *labels;
    if (label_dtype == raw->dtype)
        labels = raw;
    else {
        FILO_CHECK(filo_cast(raw, label_dtype, &labels));
        filo_tensor_free(raw);
    }
    filo_var *loss;
    FILO_CHECK(filo_bert_loss(m, logits, labels, &loss));
    snprintf(name, sizeof name, "%s.%s", key, loss_suffix);
    double e = check_loss(f, name, loss, 1e-4, dev);
    filo_var_free(loss);
    filo_tensor_free(labels);
    return e;
}

static filo_var *forward(const filo_bert *m, const batch *b)
{
    filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
    filo_var *logits;
    FILO_CHECK(filo_bert_forward(m, &ctx, &b->in, &logits));
    return logits;
}

/* A copy of src's parameters into dst where names match; a smaller dst tensor takes src's first rows. */
static void copy_params(filo_bert *dst, const filo_bert *src)
{
    for (int i = 0; i < filo_params_count(dst->params); i++) {
        filo_tensor *to = filo_var_value(filo_params_at(dst->params, i));
        filo_var *from = filo_params_find(src->params, filo_params_name_at(dst->params, i));
        cr_assert_not_null(from, "%s", filo_params_name_at(dst->params, i));
        filo_tensor *rows;
        FILO_CHECK(filo_tensor_slice(filo_var_value(from), 0, 0, to->shape[0], 1, &rows));
        FILO_CHECK(filo_tensor_copy(to, rows));
        filo_tensor_free(rows);
    }
}

Test(bert_parity, losses)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    filo_safetensors *f = expected_file();
    for (int d = 0; d < nd; d++) {
        filo_device dev = devs[d];
        double worst = 0.0;
        filo_bert *seq = load_fixture(FILO_BERT_SEQUENCE_CLASSIFY, dev);
        filo_bert *tok = load_fixture(FILO_BERT_TOKEN_CLASSIFY, dev);
        filo_bert *qa = load_fixture(FILO_BERT_QUESTION_ANSWER, dev);
        filo_bert *mlm = load_fixture(FILO_BERT_MASKED_LM, dev);
        /* num_labels 1 infers regression: the 3-label classifier's first row. */
        filo_bert_config one;
        FILO_CHECK(filo_bert_config_copy(&seq->config, &one));
        FILO_CHECK(filo_bert_config_set_labels(&one, 1, NULL));
        filo_bert *reg1;
        FILO_CHECK(filo_bert_new(&one, FILO_BERT_SEQUENCE_CLASSIFY, dev, 1, &reg1));
        filo_bert_config_free(&one);
        copy_params(reg1, seq);
        for (int k = 0; k < 3; k++) {
            const char *key = batch_keys[k];
            batch b;
            batch_load(&b, f, key, dev);
            /* problem_type unset: integer labels are single-label, float labels multi-label. */
            filo_var *x = forward(seq, &b);
            worst = fmax(worst, loss_case(seq, x, f, key, "seq_labels", "seq_loss", FILO_I64, dev));
            worst = fmax(worst, loss_case(seq, x, f, key, "seq_labels", "seq_loss", FILO_I32, dev));
            if (k < 2) {
                worst = fmax(worst, loss_case(seq, x, f, key, "multi_labels", "multi_loss", FILO_F32, dev));
                seq->config.problem_type = FILO_PROBLEM_REGRESSION;
                worst = fmax(worst, loss_case(seq, x, f, key, "regression_labels", "regression_loss", FILO_F32, dev));
                seq->config.problem_type = FILO_PROBLEM_UNSET;
            }
            filo_var_free(x);
            if (k == 2) {
                batch_free(&b);
                continue;
            }
            x = forward(reg1, &b);
            worst = fmax(worst, loss_case(reg1, x, f, key, "regression1_labels", "regression1_loss", FILO_F32, dev));
            filo_var_free(x);
            x = forward(tok, &b);
            worst = fmax(worst, loss_case(tok, x, f, key, "token_labels", "token_loss", FILO_I64, dev));
            filo_var_free(x);
            x = forward(qa, &b);
            worst = fmax(worst, loss_case(qa, x, f, key, "qa_labels", "qa_loss", FILO_I64, dev));
            worst = fmax(worst, loss_case(qa, x, f, key, "qa_labels", "qa_loss", FILO_I32, dev));
            filo_var_free(x);
            x = forward(mlm, &b);
            worst = fmax(worst, loss_case(mlm, x, f, key, "mlm_labels", "mlm_loss", FILO_I64, dev));
            filo_var_free(x);
            batch_free(&b);
        }
        fprintf(stderr, "bert parity %s: losses (CE, BCE, MSE x2, token, QA, MLM), max relative error %.2e\n",
                filo_test_backend_name(dev), worst);
        filo_bert *all[] = {seq, tok, qa, mlm, reg1};
        for (int i = 0; i < 5; i++)
            filo_bert_free(all[i]);
    }
    filo_safetensors_close(f);
}

Test(bert_parity, gradients)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    filo_safetensors *f = expected_file();
    for (int d = 0; d < nd; d++) {
        filo_bert *m = load_fixture(FILO_BERT_SEQUENCE_CLASSIFY, devs[d]);
        batch b;
        batch_load(&b, f, "A", devs[d]);
        filo_tensor *labels = expected_tensor(f, "A.seq_labels", devs[d]);
        filo_nn_ctx ctx = filo_nn_ctx_make(1, NULL);
        filo_var *logits, *loss;
        FILO_CHECK(filo_bert_forward(m, &ctx, &b.in, &logits));
        FILO_CHECK(filo_bert_loss(m, logits, labels, &loss));
        FILO_CHECK(filo_backward(loss, NULL, 0));
        double worst = 0.0;
        const char *worst_name = "";
        for (int i = 0; i < filo_params_count(m->params); i++) {
            char name[256];
            snprintf(name, sizeof name, "grad.%s", filo_params_name_at(m->params, i));
            const filo_tensor *g = filo_var_grad(filo_params_at(m->params, i));
            cr_assert_not_null(g, "%s has no gradient", name);
            if (strstr(name, "attention.self.key.bias")) {
                /* The key bias shifts every score of a query alike, which softmax ignores: its
                 * gradient is exactly 0, and both sides hold rounding noise (torch: ~1e-8). */
                int64_t n = filo_tensor_numel(g);
                double *got = filo_test_download(g), zero = 0.0;
                for (int64_t j = 0; j < n; j++)
                    zero += got[j] * got[j];
                cr_assert(sqrt(zero) < 1e-6, "%s: norm %g, want ~0", name, sqrt(zero));
                free(got);
                continue;
            }
            double e = check_var(f, name, g, 1e-3, name, devs[d]);
            if (e > worst) {
                worst = e;
                worst_name = filo_params_name_at(m->params, i);
            }
        }
        cr_assert_eq(filo_params_count(m->params), 41);
        fprintf(stderr, "bert parity %s: gradients of 39 parameters (+ 2 key biases ~0), max relative error %.2e (%s)\n",
                filo_test_backend_name(devs[d]), worst, worst_name);
        filo_var_free(loss);
        filo_var_free(logits);
        filo_tensor_free(labels);
        batch_free(&b);
        filo_bert_free(m);
    }
    filo_safetensors_close(f);
}

Test(bert_parity, adamw_ten_steps)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    filo_safetensors *f = expected_file();
    double *want = expected(f, "adamw_losses", NULL);
    for (int d = 0; d < nd; d++) {
        filo_bert *m = load_fixture(FILO_BERT_SEQUENCE_CLASSIFY, devs[d]);
        filo_optimizer_config oc = filo_optimizer_defaults(FILO_OPT_ADAMW);
        oc.lr = 1e-3;
        oc.weight_decay = 0.01;
        filo_optimizer *opt;
        FILO_CHECK(filo_optimizer_new(devs[d], &oc, &opt));
        FILO_CHECK(filo_optimizer_add_params(opt, m->params));
        batch bs[3];
        filo_tensor *labels[3];
        for (int k = 0; k < 3; k++) {
            char name[32];
            batch_load(&bs[k], f, batch_keys[k], devs[d]);
            snprintf(name, sizeof name, "%s.seq_labels", batch_keys[k]);
            labels[k] = expected_tensor(f, name, devs[d]);
        }
        filo_nn_ctx ctx = filo_nn_ctx_make(1, NULL);
        double worst = 0.0;
        for (int step = 0; step < 10; step++) {
            filo_var *logits, *loss;
            filo_optimizer_zero_grad(opt);
            FILO_CHECK(filo_bert_forward(m, &ctx, &bs[step % 3].in, &logits));
            FILO_CHECK(filo_bert_loss(m, logits, labels[step % 3], &loss));
            FILO_CHECK(filo_backward(loss, NULL, 0));
            FILO_CHECK(filo_optimizer_step(opt, NULL));
            double got;
            FILO_CHECK(filo_tensor_to_host_as(filo_var_value(loss), FILO_F64, &got, sizeof got));
            double e = fabs(got - want[step]) / fabs(want[step]);
            cr_assert(e <= 1e-4, "AdamW step %d on %s: loss %.9g, torch %.9g", step, filo_test_backend_name(devs[d]),
                      got, want[step]);
            worst = fmax(worst, e);
            filo_var_free(loss);
            filo_var_free(logits);
        }
        fprintf(stderr, "bert parity %s: ten AdamW steps' losses (%.4f -> %.4f), max relative error %.2e\n",
                filo_test_backend_name(devs[d]), want[0], want[9], worst);
        for (int k = 0; k < 3; k++) {
            batch_free(&bs[k]);
            filo_tensor_free(labels[k]);
        }
        filo_optimizer_free(opt);
        filo_bert_free(m);
    }
    free(want);
    filo_safetensors_close(f);
}

/* ---- a scratch directory for written checkpoints ---- */

static char tmpdir[64];

static void remove_tmpdir(void) { filo_test_remove_dir(tmpdir); }

static void make_tmpdir(void) { filo_test_make_tmpdir(tmpdir, sizeof tmpdir, "bert"); }


static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", tmpdir, name);
    return b;
}

/* Writes model.safetensors' tensors to path with names rewritten by `rename` (NULL drops the
 * tensor), values cast to dtype, and `extra` appended. */
typedef const char *(*rename_fn)(const char *name, char *buf, size_t size);

static void rewrite_model(const char *path, rename_fn rename, filo_dtype dtype, int n_extra, const char *const *extra_names,
                          const filo_tensor *const *extra)
{
    filo_safetensors *src;
    FILO_CHECK(filo_safetensors_open(fixture("model.safetensors"), &src));
    int n = filo_safetensors_count(src);
    const char **names = calloc((size_t)(n + n_extra), sizeof *names);
    char(*bufs)[256] = calloc((size_t)n, sizeof *bufs);
    filo_tensor **ts = calloc((size_t)(n + n_extra), sizeof *ts);
    int k = 0;
    for (int i = 0; i < n; i++) {
        const char *name = filo_safetensors_name_at(src, i);
        const char *to = rename ? rename(name, bufs[i], sizeof bufs[i]) : name;
        if (!to)
            continue;
        names[k] = to;
        FILO_CHECK(filo_safetensors_load(src, name, filo_cpu(), dtype, &ts[k]));
        k++;
    }
    for (int i = 0; i < n_extra; i++) {
        names[k] = extra_names[i];
        FILO_CHECK(filo_tensor_alias(extra[i], &ts[k]));
        k++;
    }
    const char *key = "format", *value = "pt";
    FILO_CHECK(filo_safetensors_write(path, k, names, (const filo_tensor *const *)ts, 1, &key, &value));
    for (int i = 0; i < k; i++)
        filo_tensor_free(ts[i]);
    free(ts);
    free(bufs);
    free(names);
    filo_safetensors_close(src);
}

/* 1 when every parameter of a equals b's of the same name exactly (b may have more). */
static void expect_same_params(const filo_bert *a, const filo_bert *b, const char *what)
{
    for (int i = 0; i < filo_params_count(a->params); i++) {
        const char *name = filo_params_name_at(a->params, i);
        filo_var *vb = filo_params_find(b->params, name);
        cr_assert_not_null(vb, "%s: %s missing", what, name);
        double *x = filo_test_download(filo_var_value(filo_params_at(a->params, i)));
        double *y = filo_test_download(filo_var_value(vb));
        int64_t n = filo_tensor_numel(filo_var_value(vb));
        cr_assert_eq(filo_tensor_numel(filo_var_value(filo_params_at(a->params, i))), n, "%s: %s", what, name);
        for (int64_t j = 0; j < n; j++)
            cr_assert_eq(x[j], y[j], "%s: %s[%lld] %.9g != %.9g", what, name, (long long)j, x[j], y[j]);
        free(x);
        free(y);
    }
}

static const char *drop_mlm_bias(const char *name, char *buf, size_t size)
{
    if (strcmp(name, "cls.predictions.bias") == 0)
        return NULL;
    snprintf(buf, size, "%s", name);
    return buf;
}

static const char *strip_bert(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s", strncmp(name, "bert.", 5) == 0 ? name + 5 : name);
    return buf;
}

/* TF-era names: no "bert." on the embeddings, LayerNorm gamma/beta. */
static const char *legacy_names(const char *name, char *buf, size_t size)
{
    const char *base = strncmp(name, "bert.embeddings.", 16) == 0 ? name + 5 : name;
    size_t n = strlen(base);
    if (strstr(base, "LayerNorm.weight") && n > 6)
        snprintf(buf, size, "%.*s.gamma", (int)(n - 7), base);
    else if (strstr(base, "LayerNorm.bias") && n > 4)
        snprintf(buf, size, "%.*s.beta", (int)(n - 5), base);
    else
        snprintf(buf, size, "%s", base);
    return buf;
}

static void copy_config(void)
{
    FILE *in = fopen(fixture("config.json"), "rb");
    FILE *out = fopen(tmp_path("config.json"), "wb");
    cr_assert(in && out);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        cr_assert_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

TestSuite(bert_io, .init = make_tmpdir, .fini = remove_tmpdir);

Test(bert_io, names_without_prefix_gamma_beta_and_position_ids)
{
    filo_bert *ref = load_fixture(FILO_BERT_SEQUENCE_CLASSIFY, filo_cpu());
    filo_tensor *pos_ids;
    FILO_CHECK(filo_arange(filo_cpu(), FILO_I64, 0, 40, 1, &pos_ids));
    const char *extra_names[1] = {"bert.embeddings.position_ids"};
    const filo_tensor *extra[1] = {pos_ids};
    rename_fn renames[2] = {strip_bert, legacy_names};
    for (int r = 0; r < 2; r++) {
        rewrite_model(tmp_path("renamed.safetensors"), renames[r], FILO_F32, 1, extra_names, extra);
        for (int t = 0; t < 2; t++) {
            filo_bert_task task = t ? FILO_BERT_ENCODER : FILO_BERT_SEQUENCE_CLASSIFY;
            filo_bert *m;
            FILO_CHECK(filo_bert_new(&ref->config, task, filo_cpu(), 99, &m));
            FILO_CHECK(filo_bert_load_weights(m, tmp_path("renamed.safetensors")));
            if (task == FILO_BERT_SEQUENCE_CLASSIFY)
                expect_same_params(m, ref, r ? "gamma/beta names" : "names without bert.");
            else
                for (int i = 0; i < filo_params_count(m->params); i++) {
                    char full[256];
                    snprintf(full, sizeof full, "bert.%s", filo_params_name_at(m->params, i));
                    const filo_tensor *v = filo_var_value(filo_params_at(m->params, i));
                    double *x = filo_test_download(v);
                    double *y = filo_test_download(filo_var_value(filo_params_find(ref->params, full)));
                    cr_assert(memcmp(x, y, sizeof(double) * (size_t)filo_tensor_numel(v)) == 0, "encoder %s", full);
                    free(x);
                    free(y);
                }
            filo_bert_free(m);
        }
    }
    filo_tensor_free(pos_ids);
    filo_bert_free(ref);
}

/* A BertForPreTraining checkpoint (as bert-base-uncased ships): the tied decoder written out,
 * next sentence prediction, the old decoder bias. Each head takes what it has. */
Test(bert_io, pretraining_checkpoint_for_every_head)
{
    filo_bert *ref = load_fixture(FILO_BERT_MASKED_LM, filo_cpu());
    filo_tensor *decoder = filo_var_value(ref->word_embeddings.weight), *nsp_w, *nsp_b;
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_F32, 2, (int64_t[]){2, 64}, 0.25, &nsp_w));
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_F32, 1, (int64_t[]){2}, 0.5, &nsp_b));
    const char *names[4] = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                            "cls.seq_relationship.weight", "cls.seq_relationship.bias"};
    const filo_tensor *extra[4] = {decoder, filo_var_value(ref->mlm_bias), nsp_w, nsp_b};
    rewrite_model(tmp_path("pretraining.safetensors"), NULL, FILO_F32, 4, names, extra);
    for (int h = 0; h < 4; h++) {
        filo_bert *m;
        FILO_CHECK(filo_bert_new(&ref->config, heads[h].task, filo_cpu(), 2, &m));
        FILO_CHECK(filo_bert_load_weights(m, tmp_path("pretraining.safetensors")));
        if (heads[h].task == FILO_BERT_MASKED_LM)
            expect_same_params(m, ref, "masked LM from a pretraining checkpoint");
        filo_bert_free(m);
    }
    /* Only the decoder's bias (checkpoints from before cls.predictions.bias was saved). */
    rewrite_model(tmp_path("old.safetensors"), drop_mlm_bias, FILO_F32, 1, names + 1, extra + 1);
    filo_bert *m;
    FILO_CHECK(filo_bert_new(&ref->config, FILO_BERT_MASKED_LM, filo_cpu(), 2, &m));
    FILO_CHECK(filo_bert_load_weights(m, tmp_path("old.safetensors")));
    expect_same_params(m, ref, "masked LM with the decoder bias only");
    filo_bert_free(m);
    filo_tensor_free(nsp_w);
    filo_tensor_free(nsp_b);
    filo_bert_free(ref);
}

Test(bert_io, f16_and_bf16_files)
{
    filo_bert *ref = load_fixture(FILO_BERT_SEQUENCE_CLASSIFY, filo_cpu());
    const filo_dtype dts[2] = {FILO_F16, FILO_BF16};
    for (int k = 0; k < 2; k++) {
        rewrite_model(tmp_path("half.safetensors"), NULL, dts[k], 0, NULL, NULL);
        filo_bert *m;
        FILO_CHECK(filo_bert_new(&ref->config, FILO_BERT_SEQUENCE_CLASSIFY, filo_cpu(), 3, &m));
        FILO_CHECK(filo_bert_load_weights(m, tmp_path("half.safetensors")));
        for (int i = 0; i < filo_params_count(m->params); i++) {
            filo_tensor *want = filo_var_value(filo_params_at(ref->params, i)), *half, *back;
            FILO_CHECK(filo_cast(want, dts[k], &half));
            FILO_CHECK(filo_cast(half, FILO_F32, &back));
            double *x = filo_test_download(filo_var_value(filo_params_at(m->params, i)));
            double *y = filo_test_download(back);
            for (int64_t j = 0; j < filo_tensor_numel(back); j++)
                cr_assert_eq(x[j], y[j], "%s %s[%lld]", filo_dtype_name(dts[k]), filo_params_name_at(m->params, i),
                             (long long)j);
            free(x);
            free(y);
            filo_tensor_free(half);
            filo_tensor_free(back);
        }
        filo_bert_free(m);
    }
    filo_bert_free(ref);
}

static const char *drop_layer1_output(const char *name, char *buf, size_t size)
{
    if (strstr(name, "layer.1.output.dense.") || strstr(name, "layer.0.attention.self.key.bias"))
        return NULL;
    if (strcmp(name, "bert.embeddings.word_embeddings.weight") == 0)
        return NULL;
    snprintf(buf, size, "%s", name);
    return buf;
}

Test(bert_io, errors_list_missing_misshaped_and_unknown_tensors)
{
    filo_bert *m = load_fixture(FILO_BERT_SEQUENCE_CLASSIFY, filo_cpu());
    filo_tensor *words, *extra_t;
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_F32, 2, (int64_t[]){100, 64}, 0.5, &words));
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_F32, 1, (int64_t[]){3}, 1.0, &extra_t));
    const char *names[3] = {"bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.extra.weight",
                            "lm_head.weight"};
    const filo_tensor *extra[3] = {words, extra_t, extra_t};
    rewrite_model(tmp_path("bad.safetensors"), drop_layer1_output, FILO_F32, 3, names, extra);
    double *before = filo_test_download(filo_var_value(m->word_embeddings.weight));
    filo_status s = filo_bert_load_weights(m, tmp_path("bad.safetensors"));
    cr_assert_eq(s, FILO_ERR_FORMAT, "%s", filo_last_error());
    const char *msg = filo_last_error();
    const char *needles[] = {
        "does not fit BertForSequenceClassification",
        "6 problems: 3 missing, 1 wrong shape or dtype, 2 unknown",
        "missing: bert.encoder.layer.0.attention.self.key.bias [64]",
        "missing: bert.encoder.layer.1.output.dense.weight [64, 96]",
        "missing: bert.encoder.layer.1.output.dense.bias [64]",
        "wrong shape: bert.embeddings.word_embeddings.weight is [100, 64] in the file, [101, 64] in the model",
        "unknown: bert.encoder.layer.0.extra.weight [3]",
        "unknown: lm_head.weight [3]",
    };
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        cr_assert(strstr(msg, needles[i]), "message lacks '%s':\n%s", needles[i], msg);
    /* Nothing was copied. */
    double *after = filo_test_download(filo_var_value(m->word_embeddings.weight));
    cr_assert(memcmp(before, after, sizeof(double) * 101 * 64) == 0);
    free(before);
    free(after);

    /* A wrong number of labels is a shape error of the head. */
    filo_bert_config cfg;
    FILO_CHECK(filo_bert_config_copy(&m->config, &cfg));
    FILO_CHECK(filo_bert_config_set_labels(&cfg, 5, NULL));
    filo_bert *m5;
    FILO_CHECK(filo_bert_new(&cfg, FILO_BERT_SEQUENCE_CLASSIFY, filo_cpu(), 1, &m5));
    FILO_CHECK_FAILS(filo_bert_load_weights(m5, fixture("model.safetensors")), FILO_ERR_FORMAT,
                     "wrong shape: classifier.weight is [3, 64] in the file, [5, 64] in the model");
    cr_assert(strstr(filo_last_error(), "wrong shape: classifier.bias is [3] in the file, [5] in the model"));
    filo_bert_free(m5);
    filo_bert_config_free(&cfg);

    FILO_CHECK_FAILS(filo_bert_load_weights(m, tmp_path("absent.safetensors")), FILO_ERR_IO, "absent.safetensors");
    filo_tensor_free(words);
    filo_tensor_free(extra_t);
    filo_bert_free(m);
}

static const char *encoder_only(const char *name, char *buf, size_t size)
{
    if (strncmp(name, "bert.", 5) != 0 || strstr(name, "pooler"))
        return NULL;
    snprintf(buf, size, "%s", name + 5);
    return buf;
}

Test(bert_io, missing_heads_are_fresh)
{
    /* A pretrained encoder (BertModel names, no pooler) for each head: the heads keep the
     * initialization filo_bert_new gives them for the seed. */
    rewrite_model(tmp_path("encoder.safetensors"), encoder_only, FILO_F32, 0, NULL, NULL);
    filo_bert *ref = load_fixture(FILO_BERT_SEQUENCE_CLASSIFY, filo_cpu());
    for (int h = 0; h < 4; h++) {
        filo_bert *m, *fresh;
        FILO_CHECK(filo_bert_new(&ref->config, heads[h].task, filo_cpu(), 5, &m));
        FILO_CHECK(filo_bert_new(&ref->config, heads[h].task, filo_cpu(), 5, &fresh));
        FILO_CHECK(filo_bert_load_weights(m, tmp_path("encoder.safetensors")));
        for (int i = 0; i < filo_params_count(m->params); i++) {
            const char *name = filo_params_name_at(m->params, i);
            int head = strncmp(name, "bert.", 5) != 0 || strstr(name, "pooler");
            const filo_bert *want = head ? fresh : ref;
            const filo_tensor *v = filo_var_value(filo_params_at(m->params, i));
            double *x = filo_test_download(v);
            double *y = filo_test_download(filo_var_value(filo_params_find(want->params, name)));
            cr_assert(memcmp(x, y, sizeof(double) * (size_t)filo_tensor_numel(v)) == 0, "%s: %s",
                      filo_bert_task_architecture(heads[h].task), name);
            free(x);
            free(y);
        }
        filo_bert_free(m);
        filo_bert_free(fresh);
    }
    filo_bert_free(ref);
}

/* The initialization is transformers': normal(0, 0.02) weights, zero biases, unit LayerNorms, a
 * zero padding row. */
Test(bert_io, fresh_weights_follow_init_weights)
{
    filo_bert_config cfg;
    FILO_CHECK(filo_bert_config_preset("tiny", 500, 2, &cfg));
    cfg.pad_token_id = 3;
    filo_bert *m;
    FILO_CHECK(filo_bert_new(&cfg, FILO_BERT_MASKED_LM, filo_cpu(), 11, &m));
    for (int i = 0; i < filo_params_count(m->params); i++) {
        const char *name = filo_params_name_at(m->params, i);
        const filo_tensor *v = filo_var_value(filo_params_at(m->params, i));
        double *x = filo_test_download(v);
        int64_t n = filo_tensor_numel(v);
        double sum = 0.0, sq = 0.0;
        for (int64_t j = 0; j < n; j++) {
            sum += x[j];
            sq += x[j] * x[j];
        }
        size_t len = strlen(name);
        int is_bias = len > 5 && strcmp(name + len - 5, ".bias") == 0;
        if (strstr(name, "LayerNorm"))
            cr_assert_eq(sum, is_bias ? 0.0 : (double)n, "%s", name);
        else if (is_bias)
            cr_assert_eq(sq, 0.0, "%s", name);
        else
            cr_assert(fabs(sqrt(sq / n) - 0.02) < 0.002 && fabs(sum / n) < 0.002, "%s: mean %g, rms %g", name, sum / n,
                      sqrt(sq / n));
        if (strstr(name, "word_embeddings"))
            for (int64_t j = 3 * 128; j < 4 * 128; j++)
                cr_assert_eq(x[j], 0.0, "padding row");
        free(x);
    }
    filo_bert_free(m);
    filo_bert_config_free(&cfg);
}

static cJSON *read_json(const char *path)
{
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp, "%s", path);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    cJSON *j = cJSON_Parse(text);
    cr_assert_not_null(j, "%s does not parse", path);
    return j;
}

Test(bert_io, save_load_round_trip_and_config_keys)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    filo_safetensors *f = expected_file();
    for (int h = 0; h < 4; h++) {
        filo_bert *m = load_fixture(heads[h].task, devs[nd - 1]);
        m->config.problem_type = h == 0 ? FILO_PROBLEM_MULTI_LABEL : FILO_PROBLEM_UNSET;
        const char *names[3] = {"neg", "neutral", "pos"};
        FILO_CHECK(filo_bert_config_set_labels(&m->config, 3, names));
        const char *dir = tmp_path("saved/nested");
        FILO_CHECK(filo_bert_save(m, dir));
        filo_bert *back;
        FILO_CHECK(filo_bert_load(dir, heads[h].task, filo_cpu(), 123, &back));
        expect_same_params(m, back, "save -> load");
        expect_same_params(back, m, "save -> load");
        cr_assert_eq(back->config.problem_type, m->config.problem_type);
        cr_assert_eq(filo_bert_config_label(&back->config, "pos"), 2);
        cr_assert_eq(filo_bert_config_label(&back->config, "LABEL_0"), -1);
        /* The reloaded model computes the fixture's logits. */
        batch b;
        batch_load(&b, f, "B", filo_cpu());
        filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
        filo_var *logits;
        FILO_CHECK(filo_bert_forward(back, &ctx, &b.in, &logits));
        char name[64];
        snprintf(name, sizeof name, "B.%s", heads[h].suffix);
        check_var(f, name, filo_var_value(logits), 1e-4, name, filo_cpu());
        filo_var_free(logits);
        batch_free(&b);

        char path[600];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        filo_safetensors *st;
        FILO_CHECK(filo_safetensors_open(path, &st));
        cr_assert_str_eq(filo_safetensors_metadata(st, "format"), "pt");
        cr_assert(filo_safetensors_has(st, "bert.embeddings.word_embeddings.weight"));
        cr_assert(filo_safetensors_has(st, "bert.encoder.layer.1.output.LayerNorm.bias"));
        cr_assert_eq(filo_safetensors_has(st, "bert.pooler.dense.weight"), h == 0);
        cr_assert_eq(filo_safetensors_has(st, "classifier.weight"), h <= 1);
        cr_assert_eq(filo_safetensors_has(st, "qa_outputs.bias"), h == 2);
        cr_assert_eq(filo_safetensors_has(st, "cls.predictions.bias"), h == 3);
        cr_assert_eq(filo_safetensors_has(st, "cls.predictions.transform.LayerNorm.weight"), h == 3);
        cr_assert(!filo_safetensors_has(st, "cls.predictions.decoder.weight"));
        cr_assert_eq(filo_safetensors_count(st), filo_params_count(m->params));
        filo_safetensors_close(st);

        snprintf(path, sizeof path, "%s/config.json", dir);
        cJSON *j = read_json(path);
        const char *keys[] = {"architectures", "model_type", "vocab_size", "hidden_size", "num_hidden_layers",
                              "num_attention_heads", "intermediate_size", "hidden_act", "hidden_dropout_prob",
                              "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
                              "initializer_range", "layer_norm_eps", "pad_token_id", "position_embedding_type",
                              "use_cache", "classifier_dropout", "id2label", "label2id", "problem_type"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
            cr_assert(cJSON_HasObjectItem(j, keys[k]), "config.json lacks %s", keys[k]);
        cr_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "architectures"), 0)->valuestring,
                         filo_bert_task_architecture(heads[h].task));
        cr_assert_str_eq(cJSON_GetObjectItem(j, "model_type")->valuestring, "bert");
        cr_assert_str_eq(cJSON_GetObjectItem(j, "hidden_act")->valuestring, "gelu");
        cr_assert_eq(cJSON_GetObjectItem(j, "vocab_size")->valuedouble, 101);
        cr_assert_eq(cJSON_GetObjectItem(j, "layer_norm_eps")->valuedouble, 1e-12);
        cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "classifier_dropout")));
        cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "id2label"), "1")->valuestring, "neutral");
        cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "label2id"), "pos")->valuedouble, 2);
        cJSON *pt = cJSON_GetObjectItem(j, "problem_type");
        if (h == 0)
            cr_assert_str_eq(pt->valuestring, "multi_label_classification");
        else
            cr_assert(cJSON_IsNull(pt));
        cJSON_Delete(j);
        filo_bert_free(back);
        filo_bert_free(m);
    }
    /* A bare BertModel is saved under BertModel's names: no "bert." prefix. */
    filo_bert *m = load_fixture(FILO_BERT_ENCODER, filo_cpu()), *back;
    FILO_CHECK(filo_bert_save(m, tmp_path("encoder")));
    FILO_CHECK(filo_bert_load(tmp_path("encoder"), FILO_BERT_ENCODER, filo_cpu(), 1, &back));
    expect_same_params(m, back, "BertModel save -> load");
    filo_safetensors *st;
    FILO_CHECK(filo_safetensors_open(tmp_path("encoder/model.safetensors"), &st));
    cr_assert(filo_safetensors_has(st, "embeddings.word_embeddings.weight"));
    cr_assert(filo_safetensors_has(st, "pooler.dense.bias"));
    cr_assert_eq(filo_safetensors_count(st), 39);
    filo_safetensors_close(st);
    cJSON *j = read_json(tmp_path("encoder/config.json"));
    cr_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "architectures"), 0)->valuestring, "BertModel");
    cJSON_Delete(j);
    filo_bert_free(back);
    filo_bert_free(m);
    filo_safetensors_close(f);
}

/* ---- config.json ---- */

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp);
    fputs(text, fp);
    fclose(fp);
}

Test(bert_io, config_defaults_and_labels)
{
    filo_bert_config c;
    write_file(tmp_path("config.json"), "{\"architectures\": [\"BertModel\"], \"transformers_version\": \"4.40.0\"}");
    FILO_CHECK(filo_bert_config_load(tmp_path("config.json"), &c));
    cr_assert_eq(c.vocab_size, 30522);
    cr_assert_eq(c.hidden_size, 768);
    cr_assert_eq(c.num_hidden_layers, 12);
    cr_assert_eq(c.intermediate_size, 3072);
    cr_assert_eq(c.hidden_act, FILO_ACT_GELU);
    cr_assert_eq(c.layer_norm_eps, 1e-12);
    cr_assert_eq(c.classifier_dropout, -1.0);
    cr_assert_eq(c.num_labels, 2);
    cr_assert_str_eq(c.id2label[1], "LABEL_1");
    cr_assert_eq(c.problem_type, FILO_PROBLEM_UNSET);
    filo_bert_config_free(&c);

    write_file(tmp_path("config.json"), "{\"num_labels\": 4, \"hidden_act\": \"gelu_pytorch_tanh\", \"pad_token_id\": "
                                        "null, \"classifier_dropout\": 0.3, \"problem_type\": \"regression\"}");
    FILO_CHECK(filo_bert_config_load(tmp_path("config.json"), &c));
    cr_assert_eq(c.num_labels, 4);
    cr_assert_str_eq(c.id2label[3], "LABEL_3");
    cr_assert_eq(c.hidden_act, FILO_ACT_GELU_TANH);
    cr_assert_eq(c.pad_token_id, -1);
    cr_assert_eq(c.classifier_dropout, 0.3);
    cr_assert_eq(c.problem_type, FILO_PROBLEM_REGRESSION);
    filo_bert_config_free(&c);

    write_file(tmp_path("config.json"), "{\"label2id\": {\"spam\": 1, \"ham\": 0}}");
    FILO_CHECK(filo_bert_config_load(tmp_path("config.json"), &c));
    cr_assert_eq(c.num_labels, 2);
    cr_assert_str_eq(c.id2label[0], "ham");
    cr_assert_eq(filo_bert_config_label(&c, "spam"), 1);
    filo_bert_config copy;
    FILO_CHECK(filo_bert_config_copy(&c, &copy));
    filo_bert_config_free(&c);
    cr_assert_str_eq(copy.id2label[1], "spam");
    FILO_CHECK_FAILS(filo_bert_config_set_labels(&copy, 2, (const char *const[]){"a", "a"}), FILO_ERR_INVALID_ARG,
                     "both named \"a\"");
    cr_assert_str_eq(copy.id2label[1], "spam");
    filo_bert_config_free(&copy);

    /* A label2id left at its LABEL_i defaults after id2label was renamed: id2label wins (with a
     * warning), as in transformers. */
    write_file(tmp_path("config.json"),
               "{\"id2label\": {\"0\": \"neg\", \"1\": \"pos\"}, \"label2id\": {\"LABEL_0\": 0, \"LABEL_1\": 1}}");
    FILO_CHECK(filo_bert_config_load(tmp_path("config.json"), &c));
    cr_assert_str_eq(c.id2label[1], "pos");
    filo_bert_config_free(&c);
}

Test(bert_io, config_errors_name_the_key)
{
    const struct {
        const char *json, *needle;
        filo_status status;
    } cases[] = {
        {"{\"hidden_size\": \"768\"}", "\"hidden_size\" must be an integer", FILO_ERR_FORMAT},
        {"{\"num_hidden_layers\": 2.5}", "\"num_hidden_layers\" must be an integer", FILO_ERR_FORMAT},
        {"{\"hidden_size\": 100, \"num_attention_heads\": 3}", "\"num_attention_heads\" must be a divisor of hidden_size = 100",
         FILO_ERR_FORMAT},
        {"{\"hidden_act\": \"swiglu\"}", "\"hidden_act\" must be one of", FILO_ERR_FORMAT},
        {"{\"layer_norm_eps\": 0}", "\"layer_norm_eps\" must be a number in (0", FILO_ERR_FORMAT},
        {"{\"hidden_dropout_prob\": 1.5}", "\"hidden_dropout_prob\" must be a number in [0, 1]", FILO_ERR_FORMAT},
        {"{\"pad_token_id\": 30522}", "\"pad_token_id\" must be an integer in [0, 30521] or null", FILO_ERR_FORMAT},
        {"{\"problem_type\": \"ranking\"}", "\"problem_type\" must be null, \"regression\"", FILO_ERR_FORMAT},
        {"{\"id2label\": {\"0\": \"a\", \"2\": \"b\"}}", "\"id2label\" must be a map of the 2 ids", FILO_ERR_FORMAT},
        {"{\"label2id\": {\"a\": 1, \"b\": 1}}", "\"label2id\" must be a map of 2 names to the ids 0..1", FILO_ERR_FORMAT},
        {"{\"id2label\": {\"0\": \"a\", \"1\": \"b\"}, \"num_labels\": 3}", "\"num_labels\" must be 2", FILO_ERR_FORMAT},
        {"{\"id2label\": {\"0\": \"a\", \"1\": \"a\"}}", "\"id2label\" must be a map to distinct names", FILO_ERR_FORMAT},
        {"{\"model_type\": \"roberta\"}", "\"model_type\" must be \"bert\", got \"roberta\"", FILO_ERR_FORMAT},
        {"{\"position_embedding_type\": \"relative_key\"}", "\"position_embedding_type\" must be \"absolute\"",
         FILO_ERR_FORMAT},
        {"{\"vocab_size\": 10,}", "is not a JSON object (a syntax error", FILO_ERR_FORMAT},
        {"[1, 2]", "is not a JSON object (another JSON value)", FILO_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(tmp_path("config.json"), cases[i].json);
        filo_bert_config c;
        FILO_CHECK_FAILS(filo_bert_config_load(tmp_path("config.json"), &c), cases[i].status, cases[i].needle);
        cr_assert(strstr(filo_last_error(), tmp_path("config.json")), "the message names the file: %s",
                  filo_last_error());
        cr_assert_null(c.id2label);
    }
    filo_bert_config c;
    FILO_CHECK_FAILS(filo_bert_config_load(tmp_path("none.json"), &c), FILO_ERR_IO, "none.json");
    filo_bert *m;
    FILO_CHECK_FAILS(filo_bert_load(tmpdir, FILO_BERT_SEQUENCE_CLASSIFY, filo_cpu(), 1, &m), FILO_ERR_FORMAT,
                     "is not a JSON object");
    cr_assert_null(m);
    copy_config();
    FILO_CHECK_FAILS(filo_bert_load(tmpdir, FILO_BERT_SEQUENCE_CLASSIFY, filo_cpu(), 1, &m), FILO_ERR_IO,
                     "model.safetensors");
    cr_assert_null(m);
}

/* ---- presets and model errors ---- */

/* Parameters of a preset's model. The count depends on the shapes alone, so without `full`
 * the model is made as the loader makes it (the encoder's _init_weights draws skipped): BERT-base's
 * 110 million normal draws would take most of this test's time in a Debug build. */
static int64_t count_params(const char *preset, int64_t vocab, filo_bert_task task, int full)
{
    filo_bert_config c;
    FILO_CHECK(filo_bert_config_preset(preset, vocab, 2, &c));
    cr_assert_eq(c.hidden_size / c.num_attention_heads, 64);
    cr_assert_eq(c.intermediate_size, 4 * c.hidden_size);
    cr_assert_eq(c.max_position_embeddings, 512);
    cr_assert_eq(c.type_vocab_size, 2);
    filo_bert *m;
    if (full)
        FILO_CHECK(filo_bert_new(&c, task, filo_cpu(), 1, &m));
    else
        FILO_CHECK(filo_bert_create(&c, task, filo_cpu(), 1, 0, &m));
    int64_t n = filo_params_numel(m->params, 0);
    filo_bert_free(m);
    filo_bert_config_free(&c);
    return n;
}

Test(bert_model, preset_parameter_counts)
{
    /* bert-base-uncased as BertForSequenceClassification with 2 labels (440 MB of f32). */
    cr_assert_eq(count_params("base", 30522, FILO_BERT_SEQUENCE_CLASSIFY, 0), 109483778);
    /* bert-tiny with the uncased vocabulary, and its heads over 1000 words (2 labels). */
    cr_assert_eq(count_params("tiny", 30522, FILO_BERT_SEQUENCE_CLASSIFY, 1), 4386178);
    const struct {
        filo_bert_task task;
        int64_t count;
    } tiny[] = {{FILO_BERT_ENCODER, 607104},
                {FILO_BERT_TOKEN_CLASSIFY, 590850},
                {FILO_BERT_QUESTION_ANSWER, 590850},
                {FILO_BERT_MASKED_LM, 608360}};
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++)
        cr_assert_eq(count_params("tiny", 1000, tiny[i].task, 1), tiny[i].count, "%s",
                     filo_bert_task_architecture(tiny[i].task));
    /* mini and small over 1000 words (with 30522: 11,171,074 and 28,764,674); medium is small's
     * layers twice over (41,374,210 with 30522 words). */
    cr_assert_eq(count_params("mini", 1000, FILO_BERT_SEQUENCE_CLASSIFY, 1), 3613442);
    cr_assert_eq(count_params("small", 1000, FILO_BERT_SEQUENCE_CLASSIFY, 0), 13649410);
    filo_bert_config c;
    FILO_CHECK(filo_bert_config_preset("medium", 30522, 2, &c));
    cr_assert(c.num_hidden_layers == 8 && c.hidden_size == 512 && c.num_attention_heads == 8 &&
              c.intermediate_size == 2048);
    filo_bert_config_free(&c);
    FILO_CHECK_FAILS(filo_bert_config_preset("large", 30522, 2, &c), FILO_ERR_INVALID_ARG, "unknown BERT preset 'large'");
}

Test(bert_model, argument_errors)
{
    filo_bert_config c;
    FILO_CHECK(filo_bert_config_preset("tiny", 50, 3, &c));
    c.hidden_size = 96;
    c.num_attention_heads = 2;
    filo_bert *m = NULL;
    FILO_CHECK_FAILS(filo_bert_new(&c, FILO_BERT_ENCODER, filo_cpu(), 1, &m), FILO_ERR_UNSUPPORTED, "head_dim");
    cr_assert_null(m);
    c.hidden_size = 128;
    c.max_position_embeddings = 8;
    FILO_CHECK(filo_bert_new(&c, FILO_BERT_SEQUENCE_CLASSIFY, filo_cpu(), 1, &m));
    filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
    filo_tensor *ids, *ids_short, *flabels, *ilabels;
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_I64, 2, (int64_t[]){2, 9}, 4, &ids));
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_I64, 2, (int64_t[]){2, 5}, 4, &ids_short));
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_F32, 1, (int64_t[]){2}, 1, &flabels));
    FILO_CHECK(filo_tensor_full(filo_cpu(), FILO_I64, 1, (int64_t[]){3}, 1, &ilabels));
    filo_var *logits = NULL, *loss = NULL;
    filo_bert_inputs in = {ids, NULL, NULL};
    FILO_CHECK_FAILS(filo_bert_forward(m, &ctx, &in, &logits), FILO_ERR_SHAPE, "over max_position_embeddings = 8");
    in.input_ids = ids_short;
    in.lengths = ids;
    FILO_CHECK_FAILS(filo_bert_forward(m, &ctx, &in, &logits), FILO_ERR_SHAPE, "lengths");
    in.lengths = NULL;
    FILO_CHECK(filo_bert_forward(m, &ctx, &in, &logits));
    FILO_CHECK_FAILS(filo_bert_loss(m, logits, ilabels, &loss), FILO_ERR_SHAPE, "[B] class indices");
    m->config.problem_type = FILO_PROBLEM_SINGLE_LABEL;
    FILO_CHECK_FAILS(filo_bert_loss(m, logits, flabels, &loss), FILO_ERR_DTYPE,
                     "single-label classification needs i32/i64 class labels");
    m->config.problem_type = FILO_PROBLEM_MULTI_LABEL;
    FILO_CHECK_FAILS(filo_bert_loss(m, logits, flabels, &loss), FILO_ERR_SHAPE, "labels");
    cr_assert_null(loss);
    filo_var_free(logits);
    filo_bert_free(m);
    FILO_CHECK(filo_bert_new(&c, FILO_BERT_ENCODER, filo_cpu(), 1, &m));
    FILO_CHECK_FAILS(filo_bert_forward(m, &ctx, &in, &logits), FILO_ERR_INVALID_ARG, "use filo_bert_encode");
    filo_bert_free(m);
    filo_tensor *all[] = {ids, ids_short, flabels, ilabels};
    for (int i = 0; i < 4; i++)
        filo_tensor_free(all[i]);
    filo_bert_config_free(&c);
}

/* Training mode with dropout: the same generator state gives the same logits, eval mode none. */
Test(bert_model, training_dropout_is_reproducible)
{
    filo_device devs[FILO_TEST_MAX_BACKENDS];
    int nd = filo_test_backends(devs);
    filo_safetensors *f = expected_file();
    for (int d = 0; d < nd; d++) {
        filo_bert *m = load_fixture(FILO_BERT_TOKEN_CLASSIFY, devs[d]);
        m->config.hidden_dropout_prob = 0.1;
        for (int64_t i = 0; i < m->config.num_hidden_layers; i++) {
            m->layers[i].dropout = 0.1;
            m->layers[i].attn.dropout = 0.1;
        }
        batch b;
        batch_load(&b, f, "A", devs[d]);
        double *out[3];
        for (int r = 0; r < 3; r++) {
            filo_generator gen;
            filo_generator_init(&gen, 42);
            filo_nn_ctx ctx = filo_nn_ctx_make(r < 2, &gen);
            filo_var *logits;
            FILO_CHECK(filo_bert_forward(m, &ctx, &b.in, &logits));
            out[r] = filo_test_download(filo_var_value(logits));
            filo_var_free(logits);
        }
        int64_t n = 3 * 12 * 3;
        cr_assert(memcmp(out[0], out[1], sizeof(double) * (size_t)n) == 0, "same seed, same dropout");
        double e = rel_err(out[0], out[2], n);
        cr_assert(e > 1e-3, "dropout changed nothing (%g)", e);
        int64_t nw;
        double *want = expected(f, "A.token_logits", &nw);
        cr_assert(nw == n && rel_err(out[2], want, n) <= 1e-4, "eval mode applies no dropout");
        free(want);
        for (int r = 0; r < 3; r++)
            free(out[r]);
        batch_free(&b);
        filo_bert_free(m);
    }
    filo_safetensors_close(f);
}
