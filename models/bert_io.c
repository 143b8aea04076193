/* BERT checkpoints in transformers' layout: model directories (config.json + model.safetensors),
 * the name rules of from_pretrained when loading, and save_pretrained's names when saving.
 *
 * Loading checks the whole file before copying anything, so a file that does not fit leaves the
 * model as it was, and the one error lists every problem at once (a user fixing a checkpoint
 * sees them all, not one per attempt). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../nn/nn_internal.h"
#include "bert_internal.h"
#include "error.h"
#include "filo/safetensors.h"

#define PATH_LEN 4096

/* Names for a message, as many as fit, with a count of the rest. */
typedef struct name_list {
    char text[1600];
    size_t used;
    int count, dropped;
} name_list;

static void list_add(name_list *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void list_add(name_list *l, const char *fmt, ...)
{
    char item[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(item, sizeof item, fmt, ap);
    va_end(ap);
    l->count++;
    size_t n = strlen(item);
    if (l->used + n + 1 >= sizeof l->text) {
        l->dropped++;
        return;
    }
    memcpy(l->text + l->used, item, n + 1);
    l->used += n;
}

static const char *list_text(const name_list *l, char *buf, size_t size)
{
    if (l->dropped)
        snprintf(buf, size, "%s (and %d more)", l->text, l->dropped);
    else
        snprintf(buf, size, "%s", l->text);
    return buf;
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

typedef enum name_kind {
    NAME_PARAM,     /* *out names a tensor the model may have */
    NAME_IGNORED,   /* a legacy buffer or a tied copy: skipped silently */
} name_kind;

/* The model's name for a file tensor: "bert." added or dropped as the task needs, LayerNorm
 * gamma/beta as weight/bias, and the masked LM's tied decoder tensors resolved. */
static name_kind model_name(const filo_bert *m, const filo_safetensors *f, const char *name, char *out, size_t size)
{
    const char *base = starts_with(name, "bert.") ? name + 5 : name;
    if (starts_with(base, "embeddings.") || starts_with(base, "encoder.") || starts_with(base, "pooler.")) {
        if (strcmp(base, "embeddings.position_ids") == 0)
            return NAME_IGNORED;
        filo_param_name_join(out, size, m->task == FILO_BERT_ENCODER ? NULL : "bert", base);
    } else {
        snprintf(out, size, "%s", name);
        if (m->task == FILO_BERT_MASKED_LM) {
            /* save_pretrained usually omits these; from_pretrained ties them to the word
             * embeddings and to cls.predictions.bias. */
            if (strcmp(name, "cls.predictions.decoder.weight") == 0)
                return NAME_IGNORED;
            if (strcmp(name, "cls.predictions.decoder.bias") == 0) {
                if (filo_safetensors_has(f, "cls.predictions.bias"))
                    return NAME_IGNORED;
                snprintf(out, size, "cls.predictions.bias");
            }
        }
    }
    size_t n = strlen(out);
    if (ends_with(out, ".gamma") && n + 1 < size)
        strcpy(out + n - 6, ".weight");
    else if (ends_with(out, ".beta"))
        strcpy(out + n - 5, ".bias");
    return NAME_PARAM;
}

/* A tensor of a head the task does not have: the pooler, cls.* (masked LM and next sentence
 * prediction), classifier.*, qa_outputs.*. */
static int other_head(const char *model_name)
{
    return starts_with(model_name, "bert.pooler.") || starts_with(model_name, "pooler.") ||
           starts_with(model_name, "cls.") || starts_with(model_name, "classifier.") ||
           starts_with(model_name, "qa_outputs.");
}

static int param_index(const filo_params *ps, const char *name)
{
    for (int i = 0; i < filo_params_count(ps); i++)
        if (strcmp(filo_params_name_at(ps, i), name) == 0)
            return i;
    return -1;
}

static int is_float_dtype(filo_dtype t) { return t == FILO_F32 || t == FILO_F16 || t == FILO_BF16 || t == FILO_F64; }

/* What the file and the model disagree on, and what the load will do. */
typedef struct load_plan {
    int *source;            /* per parameter: the file tensor index, or -1 */
    name_list missing, shape, unknown, fresh, skipped;
} load_plan;

static filo_status plan_load(const filo_bert *m, const filo_safetensors *f, load_plan *p)
{
    const filo_params *ps = m->params;
    int np = filo_params_count(ps);
    char target[FILO_NN_NAME_MAX], a[96], b[96];
    for (int i = 0; i < filo_safetensors_count(f); i++) {
        const char *name = filo_safetensors_name_at(f, i);
        if (model_name(m, f, name, target, sizeof target) == NAME_IGNORED)
            continue;
        int j = param_index(ps, target);
        filo_dtype dt;
        int nd;
        int64_t shape[FILO_SAFETENSORS_MAX_DIMS];
        const char *st_dtype;
        FILO_TRY(filo_safetensors_info(f, name, &dt, &nd, shape, &st_dtype));
        filo_dims_format(nd, shape, a, sizeof a);
        if (j < 0) {
            if (other_head(target))
                list_add(&p->skipped, "%s%s", p->skipped.count ? ", " : "", name);
            else
                list_add(&p->unknown, "\n  unknown: %s %s", name, a);
            continue;
        }
        const filo_tensor *v = filo_var_value(filo_params_at(ps, j));
        int same = nd == v->ndim;
        for (int d = 0; same && d < nd; d++)
            same = shape[d] == v->shape[d];
        if (p->source[j] >= 0)
            list_add(&p->unknown, "\n  duplicate: %s and %s are both %s", filo_safetensors_name_at(f, p->source[j]),
                     name, target);
        else if (!is_float_dtype(dt))
            list_add(&p->shape, "\n  wrong dtype: %s is %s in the file; a float dtype is needed", name, st_dtype);
        else if (!same)
            list_add(&p->shape, "\n  wrong shape: %s is %s in the file, %s in the model", name, a,
                     filo_dims_format(v->ndim, v->shape, b, sizeof b));
        p->source[j] = i;
    }
    for (int j = 0; j < np; j++) {
        if (p->source[j] >= 0)
            continue;
        const char *name = filo_params_name_at(ps, j);
        const filo_tensor *v = filo_var_value(filo_params_at(ps, j));
        if (filo_bert_is_head_param(m, name))
            list_add(&p->fresh, "%s%s", p->fresh.count ? ", " : "", name);
        else
            list_add(&p->missing, "\n  missing: %s %s", name, filo_dims_format(v->ndim, v->shape, a, sizeof a));
    }
    return FILO_OK;
}

static filo_status plan_error(const filo_bert *m, const char *path, const load_plan *p)
{
    char x[1700], y[1700], z[1700];
    const char *arch = filo_bert_task_architecture(m->task);
    int total = p->missing.count + p->shape.count + p->unknown.count;
    /* The message buffer holds about 2 KB: a longer report goes to stderr in full. */
    if (p->missing.dropped + p->shape.dropped + p->unknown.dropped > 0 ||
        p->missing.used + p->shape.used + p->unknown.used > 1500)
        fprintf(stderr, "filo_bert_load_weights: %s does not fit %s:%s%s%s\n", path, arch,
                list_text(&p->missing, x, sizeof x), list_text(&p->shape, y, sizeof y),
                list_text(&p->unknown, z, sizeof z));
    return FILO_FAIL(FILO_ERR_FORMAT, "%s does not fit %s (%d problem%s: %d missing, %d wrong shape or dtype, %d unknown "
                     "or duplicate):%.600s%.600s%.600s",
                     path, arch, total, total == 1 ? "" : "s", p->missing.count, p->shape.count, p->unknown.count,
                     list_text(&p->missing, x, sizeof x), list_text(&p->shape, y, sizeof y),
                     list_text(&p->unknown, z, sizeof z));
}

filo_status filo_bert_load_weights(filo_bert *m, const char *path)
{
    if (!m || !path)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m and path must not be NULL");
    filo_safetensors *f;
    FILO_TRY(filo_safetensors_open(path, &f));
    int np = filo_params_count(m->params);
    load_plan *p = calloc(1, sizeof *p);
    int *source = malloc(sizeof *source * (size_t)(np ? np : 1));
    if (!p || !source) {
        free(p);
        free(source);
        filo_safetensors_close(f);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory loading %s", path);
    }
    for (int j = 0; j < np; j++)
        source[j] = -1;
    p->source = source;
    filo_status s = plan_load(m, f, p);
    if (s == FILO_OK && p->missing.count + p->shape.count + p->unknown.count > 0)
        s = plan_error(m, path, p);
    char buf[1700];
    const char *arch = filo_bert_task_architecture(m->task);
    if (s == FILO_OK && p->skipped.count)
        fprintf(stderr, "warning: %s: skipped the tensors of heads that %s does not have: %s\n", path, arch,
                list_text(&p->skipped, buf, sizeof buf));
    if (s == FILO_OK && p->fresh.count)
        fprintf(stderr, "%s: %s weights not in the file are newly initialized (train them before use): %s\n", path,
                arch, list_text(&p->fresh, buf, sizeof buf));
    for (int j = 0; s == FILO_OK && j < np; j++)
        if (source[j] >= 0)
            s = filo_safetensors_load_into(f, filo_safetensors_name_at(f, source[j]),
                                           filo_var_value(filo_params_at(m->params, j)));
    free(source);
    free(p);
    filo_safetensors_close(f);
    return s;
}

static filo_status join_path(char *out, const char *dir, const char *file)
{
    int n = snprintf(out, PATH_LEN, "%s/%s", dir, file);
    if (n < 0 || n >= PATH_LEN)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "the path %s/%s is too long", dir, file);
    return FILO_OK;
}

filo_status filo_bert_load(const char *dir, filo_bert_task task, filo_device device, uint64_t seed, filo_bert **out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!dir)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "dir is NULL");
    char path[PATH_LEN];
    FILO_TRY(join_path(path, dir, "config.json"));
    filo_bert_config cfg;
    FILO_TRY(filo_bert_config_load(path, &cfg));
    filo_bert *m = NULL;
    filo_status s = filo_bert_create(&cfg, task, device, seed, 0, &m);
    filo_bert_config_free(&cfg);
    if (s == FILO_OK)
        s = join_path(path, dir, "model.safetensors");
    if (s == FILO_OK)
        s = filo_bert_load_weights(m, path);
    if (s != FILO_OK) {
        filo_bert_free(m);
        return filo_error_wrap(s, "filo_bert_load");
    }
    *out = m;
    return FILO_OK;
}

/* mkdir -p. */
static filo_status make_dirs(const char *dir)
{
    char p[PATH_LEN];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "the directory name %s is too long", dir);
    for (char *c = p + 1; ; c++) {
        if (*c != '/' && *c != '\0')
            continue;
        char saved = *c;
        *c = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            return FILO_FAIL(FILO_ERR_IO, "cannot create the directory %s: %s", p, strerror(errno));
        *c = saved;
        if (!saved)
            break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return FILO_FAIL(FILO_ERR_IO, "%s is not a directory", dir);
    return FILO_OK;
}

filo_status filo_bert_save(const filo_bert *m, const char *dir)
{
    if (!m || !dir || !dir[0])
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "m and dir must not be NULL or empty");
    FILO_TRY(make_dirs(dir));
    int n = filo_params_count(m->params);
    const char **names = malloc(sizeof *names * (size_t)n);
    const filo_tensor **tensors = malloc(sizeof *tensors * (size_t)n);
    filo_status s = FILO_OK;
    if (!names || !tensors)
        s = FILO_FAIL(FILO_ERR_OOM, "out of host memory saving %s", dir);
    /* Every parameter under its transformers name; the masked LM's decoder is the word embedding
     * table, left out as save_pretrained leaves out tied weights. */
    for (int i = 0; s == FILO_OK && i < n; i++) {
        names[i] = filo_params_name_at(m->params, i);
        tensors[i] = filo_var_value(filo_params_at(m->params, i));
    }
    char path[PATH_LEN];
    const char *key = "format", *value = "pt";
    if (s == FILO_OK)
        s = join_path(path, dir, "model.safetensors");
    if (s == FILO_OK)
        s = filo_safetensors_write(path, n, names, tensors, 1, &key, &value);
    if (s == FILO_OK)
        s = join_path(path, dir, "config.json");
    if (s == FILO_OK)
        s = filo_bert_config_save(&m->config, filo_bert_task_architecture(m->task), path);
    free(names);
    free(tensors);
    return s;
}
