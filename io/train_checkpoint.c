#define _POSIX_C_SOURCE 200809L
/* Training checkpoints (include/filo/train_checkpoint.h): two safetensors files of a step and
 * trainer.json, the commit record written last.
 *
 * Crash safety: each file is written to a temporary name, fsync'ed and renamed; trainer.json
 * names the step's files and is renamed into place only after both are complete, and the
 * directory is fsync'ed after it so the rename itself survives a power loss. Files of other
 * steps (and temporary files a crash left behind) are removed only after that, so at every
 * instant trainer.json names complete files.
 *
 * Loading reads trainer.json, checks every file's size against it, opens the safetensors files
 * (their headers are validated in full), and checks that every parameter, optimizer state and
 * scaler tensor is present with its shape and that nothing else is; only then are values copied
 * into the objects, so a bad checkpoint leaves them untouched. */
#include "filo/train_checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "text_file.h"
#include "error.h"
#include "filo/safetensors.h"

#define FORMAT_NAME "filo-train-checkpoint"
#define FORMAT_VERSION 1
#define TRAINER_JSON "trainer.json"
#define PATH_LEN 4096
#define SCALER_PREFIX "grad_scaler."

static const char *const scaler_tensors[3] = {"scale", "growth_tracker", "found_inf"};
static const char *const schedule_names[3] = {"constant", "linear", "cosine"};

static void join(char *buf, const char *dir, const char *name) { snprintf(buf, PATH_LEN, "%s/%s", dir, name); }

int filo_train_checkpoint_exists(const char *dir)
{
    if (!dir)
        return 0;
    char p[PATH_LEN];
    join(p, dir, TRAINER_JSON);
    return access(p, F_OK) == 0;
}

static filo_status check_state(const char *op, const char *dir, const filo_train_state *st)
{
    if (!dir || !*dir || !st)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "dir and st must not be NULL or empty");
    if (strlen(dir) > PATH_LEN - 64)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "the directory name is too long (%zu bytes)", strlen(dir));
    if (!st->params)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "st->params is NULL");
    if (st->n_generators < 0 || st->n_generators > FILO_TRAIN_MAX_GENERATORS)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "n_generators %d is outside [0, %d]", st->n_generators,
                              FILO_TRAIN_MAX_GENERATORS);
    for (int i = 0; i < st->n_generators; i++)
        if (!st->generators[i])
            return filo_error_set(FILO_ERR_INVALID_ARG, op, "generators[%d] is NULL", i);
    return FILO_OK;
}

/* ---- the named tensors of a state: what is saved, and what a load must find ---- */

typedef struct tensor_list {
    int n, cap;
    char **names;
    filo_tensor **t; /* borrowed: the objects' own tensors */
} tensor_list;

static void list_free(tensor_list *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    free(l->t);
    memset(l, 0, sizeof *l);
}

static filo_status list_add(tensor_list *l, const char *prefix, const char *name, filo_tensor *t)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **nn = realloc(l->names, sizeof *nn * (size_t)cap);
        if (nn)
            l->names = nn;
        filo_tensor **nt = realloc(l->t, sizeof *nt * (size_t)cap);
        if (nt)
            l->t = nt;
        if (!nn || !nt)
            return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
        l->cap = cap;
    }
    size_t len = strlen(prefix) + strlen(name) + 1;
    char *s = malloc(len);
    if (!s)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    snprintf(s, len, "%s%s", prefix, name);
    l->names[l->n] = s;
    l->t[l->n++] = t;
    return FILO_OK;
}

static filo_status model_list(const filo_params *ps, tensor_list *l)
{
    for (int i = 0; i < filo_params_count(ps); i++)
        FILO_TRY(list_add(l, "", filo_params_name_at(ps, i), filo_var_value(filo_params_at(ps, i))));
    return FILO_OK;
}

static filo_status optimizer_list(const filo_train_state *st, tensor_list *l)
{
    for (int i = 0; st->opt && i < filo_optimizer_state_count(st->opt); i++) {
        const char *name;
        filo_tensor *t;
        FILO_TRY(filo_optimizer_state_at(st->opt, i, &name, &t));
        FILO_TRY(list_add(l, "", name, t));
    }
    for (int i = 0; st->scaler && i < 3; i++) {
        filo_tensor *t = filo_grad_scaler_tensor(st->scaler, scaler_tensors[i]);
        if (!t)
            return FILO_FAIL(FILO_ERR_INTERNAL, "the grad scaler has no tensor '%s'", scaler_tensors[i]);
        FILO_TRY(list_add(l, SCALER_PREFIX, scaler_tensors[i], t));
    }
    return FILO_OK;
}

/* ---- save ---- */

static cJSON *config_json(const filo_optimizer *opt)
{
    filo_optimizer_config c;
    filo_schedule s;
    if (filo_optimizer_get_config(opt, &c, &s) != FILO_OK)
        return NULL;
    cJSON *o = cJSON_CreateObject(), *cfg = cJSON_AddObjectToObject(o, "config");
    cJSON *sch = cJSON_AddObjectToObject(o, "schedule");
    if (!cfg || !sch) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddStringToObject(o, "kind", filo_optimizer_kind_name(c.kind));
    cJSON_AddNumberToObject(o, "groups", filo_optimizer_group_count(opt));
    cJSON_AddNumberToObject(cfg, "lr", c.lr);
    cJSON_AddNumberToObject(cfg, "weight_decay", c.weight_decay);
    cJSON_AddNumberToObject(cfg, "momentum", c.momentum);
    cJSON_AddNumberToObject(cfg, "dampening", c.dampening);
    cJSON_AddBoolToObject(cfg, "nesterov", c.nesterov);
    cJSON_AddNumberToObject(cfg, "beta1", c.beta1);
    cJSON_AddNumberToObject(cfg, "beta2", c.beta2);
    cJSON_AddNumberToObject(cfg, "eps", c.eps);
    cJSON_AddNumberToObject(cfg, "alpha", c.alpha);
    cJSON_AddBoolToObject(cfg, "centered", c.centered);
    cJSON_AddNumberToObject(cfg, "lr_decay", c.lr_decay);
    cJSON_AddNumberToObject(cfg, "initial_accumulator_value", c.initial_accumulator_value);
    cJSON_AddBoolToObject(cfg, "decoupled_weight_decay", c.decoupled_weight_decay);
    int sk = (int)s.kind;
    cJSON_AddStringToObject(sch, "kind", sk >= 0 && sk < 3 ? schedule_names[sk] : "unknown");
    cJSON_AddNumberToObject(sch, "warmup_steps", (double)s.warmup_steps);
    cJSON_AddNumberToObject(sch, "total_steps", (double)s.total_steps);
    cJSON_AddNumberToObject(sch, "min_factor", s.min_factor);
    return o;
}

static filo_status file_size(const char *path, int64_t *size)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return FILO_FAIL(FILO_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    *size = (int64_t)sb.st_size;
    return FILO_OK;
}

static filo_status write_tensors(const char *path, const tensor_list *l, int64_t step, int64_t *size)
{
    char stepbuf[32];
    snprintf(stepbuf, sizeof stepbuf, "%" PRId64, step);
    const char *keys[2] = {"format", "step"}, *values[2] = {"pt", stepbuf};
    FILO_TRY(filo_safetensors_write(path, l->n, (const char *const *)l->names, (const filo_tensor *const *)l->t, 2, keys,
                                    values));
    return file_size(path, size);
}

static cJSON *trainer_json(const filo_train_state *st, const char *model_file, int64_t model_bytes,
                           const char *opt_file, int64_t opt_bytes, cJSON *extra)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", FORMAT_NAME);
    cJSON_AddNumberToObject(j, "version", FORMAT_VERSION);
    cJSON_AddNumberToObject(j, "step", (double)st->step);
    cJSON_AddNumberToObject(j, "epoch", (double)st->epoch);
    cJSON_AddStringToObject(j, "model_file", model_file);
    cJSON_AddNumberToObject(j, "model_bytes", (double)model_bytes);
    if (opt_file) {
        cJSON_AddStringToObject(j, "optimizer_file", opt_file);
        cJSON_AddNumberToObject(j, "optimizer_bytes", (double)opt_bytes);
    } else {
        cJSON_AddNullToObject(j, "optimizer_file");
    }
    cJSON *o = st->opt ? config_json(st->opt) : NULL;
    if (o)
        cJSON_AddItemToObject(j, "optimizer", o);
    else
        cJSON_AddNullToObject(j, "optimizer");
    cJSON_AddBoolToObject(j, "grad_scaler", st->scaler != NULL);
    /* u64 seeds and offsets as decimal strings: a JSON number (a double) would round them. */
    cJSON *gens = cJSON_AddArrayToObject(j, "generators");
    for (int i = 0; gens && i < st->n_generators; i++) {
        char seed[32], off[32];
        snprintf(seed, sizeof seed, "%" PRIu64, st->generators[i]->seed);
        snprintf(off, sizeof off, "%" PRIu64, st->generators[i]->offset);
        cJSON *g = cJSON_CreateObject();
        cJSON_AddStringToObject(g, "seed", seed);
        cJSON_AddStringToObject(g, "offset", off);
        cJSON_AddItemToArray(gens, g);
    }
    if (extra)
        cJSON_AddItemToObject(j, "extra", extra);
    else
        cJSON_AddNullToObject(j, "extra");
    return j;
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* 1 when name is <prefix><digits>.safetensors; *step receives the digits' value. */
static int step_file(const char *name, const char *prefix, int64_t *step)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0)
        return 0;
    const char *p = name + pl;
    if (*p < '0' || *p > '9')
        return 0;
    char *end;
    long long v = strtoll(p, &end, 10);
    if (strcmp(end, ".safetensors") != 0)
        return 0;
    *step = v;
    return 1;
}

/* After a commit: the other steps' tensor files, and the temporary files of interrupted saves. */
static void remove_stale(const char *dir, int64_t step)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[PATH_LEN];
    while ((e = readdir(d))) {
        int64_t s;
        int ours = step_file(e->d_name, "model-", &s) || step_file(e->d_name, "optimizer-", &s);
        int stale = ours && s != step;
        if (!ours && strstr(e->d_name, ".tmp.") &&
            (!strncmp(e->d_name, "model-", 6) || !strncmp(e->d_name, "optimizer-", 10) ||
             !strncmp(e->d_name, TRAINER_JSON ".tmp.", strlen(TRAINER_JSON) + 5)))
            stale = 1;
        if (stale) {
            join(p, dir, e->d_name);
            unlink(p);
        }
    }
    closedir(d);
}

filo_status filo_train_checkpoint_save(const char *dir, const filo_train_state *st)
{
    const char *op = __func__;
    FILO_TRY(check_state(op, dir, st));
    if (st->step < 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "step %" PRId64 " is negative", st->step);
    cJSON *extra = NULL;
    if (st->extra_json) {
        extra = cJSON_Parse(st->extra_json);
        if (!cJSON_IsObject(extra)) {
            cJSON_Delete(extra);
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "extra_json is not a JSON object: %.80s", st->extra_json);
        }
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        cJSON_Delete(extra);
        return FILO_FAIL(FILO_ERR_IO, "cannot create the directory %s: %s", dir, strerror(errno));
    }
    char model_file[64], opt_file[64], p[PATH_LEN];
    snprintf(model_file, sizeof model_file, "model-%" PRId64 ".safetensors", st->step);
    snprintf(opt_file, sizeof opt_file, "optimizer-%" PRId64 ".safetensors", st->step);
    int has_opt = st->opt || st->scaler;
    tensor_list ml = {0}, ol = {0};
    int64_t model_bytes = 0, opt_bytes = 0;
    filo_status s = model_list(st->params, &ml);
    if (s == FILO_OK)
        s = optimizer_list(st, &ol);
    if (s == FILO_OK) {
        join(p, dir, model_file);
        s = write_tensors(p, &ml, st->step, &model_bytes);
    }
    if (s == FILO_OK && has_opt) {
        join(p, dir, opt_file);
        s = write_tensors(p, &ol, st->step, &opt_bytes);
    }
    list_free(&ml);
    list_free(&ol);
    if (s != FILO_OK) {
        cJSON_Delete(extra);
        return filo_error_wrap(s, op);
    }
    cJSON *j = trainer_json(st, model_file, model_bytes, has_opt ? opt_file : NULL, opt_bytes, extra);
    char *text = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    if (!text)
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory building %s", TRAINER_JSON);
    join(p, dir, TRAINER_JSON);
    s = filo_text_file_write(p, text);
    cJSON_free(text);
    if (s != FILO_OK)
        return filo_error_wrap(s, op);
    sync_dir(dir);
    remove_stale(dir, st->step);
    return FILO_OK;
}

/* ---- load ---- */

typedef struct loader {
    const char *op;
    char json_path[PATH_LEN];
    cJSON *root;
} loader;

/* A FORMAT error about trainer.json: fmt has two %s, the file and `what`. */
static filo_status bad(const loader *L, const char *fmt, const char *what)
{
    return filo_error_set(FILO_ERR_FORMAT, L->op, fmt, L->json_path, what);
}

static filo_status get_int(const loader *L, const cJSON *obj, const char *key, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble)
        return bad(L, "%s: '%s' is missing or not an integer", key);
    *out = (int64_t)v->valuedouble;
    return FILO_OK;
}

static filo_status get_u64_string(const loader *L, const cJSON *obj, const char *key, uint64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    char *end = NULL;
    if (!cJSON_IsString(v) || !*v->valuestring || *v->valuestring == '-')
        return bad(L, "%s: generator '%s' is missing or not a decimal string", key);
    errno = 0;
    unsigned long long x = strtoull(v->valuestring, &end, 10);
    if (*end || errno)
        return bad(L, "%s: generator '%s' is not a decimal u64", key);
    *out = x;
    return FILO_OK;
}

/* A tensor file named by trainer.json: a plain name in dir whose size is the recorded one. */
static filo_status open_tensor_file(const loader *L, const char *dir, const char *file_key, const char *bytes_key,
                                    filo_safetensors **out, char p[PATH_LEN])
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(L->root, file_key);
    if (!cJSON_IsString(f) || !*f->valuestring || strchr(f->valuestring, '/'))
        return bad(L, "%s: '%s' is missing or not a file name in the checkpoint directory", file_key);
    int64_t want = 0;
    FILO_TRY(get_int(L, L->root, bytes_key, &want));
    join(p, dir, f->valuestring);
    int64_t got = -1;
    filo_status s = file_size(p, &got);
    if (s != FILO_OK)
        return filo_error_wrap(s, L->op);
    if (got != want)
        return filo_error_set(FILO_ERR_FORMAT, L->op, "%s has %" PRId64 " bytes, but %s records %" PRId64
                              " (truncated or replaced file)", p, got, L->json_path, want);
    s = filo_safetensors_open(p, out);
    return s == FILO_OK ? FILO_OK : filo_error_wrap(s, L->op);
}

/* Tensors of an object not given to the load: in the file, but neither loaded nor extra. */
enum { SKIP_SCALER = 1, SKIP_OPTIMIZER = 2 };

static int skipped(const char *name, int skip)
{
    int is_scaler = strncmp(name, SCALER_PREFIX, strlen(SCALER_PREFIX)) == 0;
    return is_scaler ? (skip & SKIP_SCALER) != 0 : (skip & SKIP_OPTIMIZER) != 0;
}

/* Every listed tensor is in the file with its shape, and the file has nothing else. */
static filo_status check_tensors(const loader *L, const filo_safetensors *f, const char *path, const char *what,
                                 const tensor_list *l, int skip)
{
    for (int i = 0; i < l->n; i++) {
        int ndim;
        int64_t shape[FILO_SAFETENSORS_MAX_DIMS];
        if (!filo_safetensors_has(f, l->names[i]))
            return filo_error_set(FILO_ERR_FORMAT, L->op, "the %s file %s has no tensor '%s'", what, path, l->names[i]);
        FILO_TRY(filo_safetensors_info(f, l->names[i], NULL, &ndim, shape, NULL));
        const filo_tensor *t = l->t[i];
        int same = ndim == t->ndim;
        for (int k = 0; same && k < ndim; k++)
            same = shape[k] == t->shape[k];
        if (!same) {
            char a[120], b[120];
            return filo_error_set(FILO_ERR_SHAPE, L->op, "%s tensor '%s' is saved with shape %s in %s but is %s here",
                                  what, l->names[i], filo_dims_format(ndim, shape, a, sizeof a), path,
                                  filo_dims_format(t->ndim, t->shape, b, sizeof b));
        }
    }
    for (int i = 0; i < filo_safetensors_count(f); i++) {
        const char *name = filo_safetensors_name_at(f, i);
        int known = skipped(name, skip);
        for (int k = 0; !known && k < l->n; k++)
            known = strcmp(name, l->names[k]) == 0;
        if (!known)
            return filo_error_set(FILO_ERR_FORMAT, L->op, "the %s file %s has a tensor '%s' that this %s lacks", what,
                                  path, name, what);
    }
    return FILO_OK;
}

static filo_status check_optimizer(const loader *L, const filo_train_state *st)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(L->root, "optimizer");
    if (!st->opt)
        return FILO_OK;
    if (!cJSON_IsObject(o))
        return filo_error_set(FILO_ERR_FORMAT, L->op, "%s: the checkpoint has no optimizer state, but one was given to load",
                              L->json_path);
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
    filo_optimizer_config c;
    FILO_TRY(filo_optimizer_get_config(st->opt, &c, NULL));
    const char *mine = filo_optimizer_kind_name(c.kind);
    if (!cJSON_IsString(kind) || strcmp(kind->valuestring, mine) != 0)
        return filo_error_set(FILO_ERR_FORMAT, L->op, "%s: the checkpoint's optimizer is '%s', the one given is '%s'",
                              L->json_path, cJSON_IsString(kind) ? kind->valuestring : "?", mine);
    int64_t groups = 0;
    FILO_TRY(get_int(L, o, "groups", &groups));
    if (groups != filo_optimizer_group_count(st->opt))
        return filo_error_set(FILO_ERR_FORMAT, L->op, "%s: the checkpoint's optimizer has %" PRId64
                              " parameter groups, the one given has %d",
                              L->json_path, groups, filo_optimizer_group_count(st->opt));
    return FILO_OK;
}

static filo_status load_values(const filo_safetensors *f, const tensor_list *l)
{
    for (int i = 0; i < l->n; i++)
        FILO_TRY(filo_safetensors_load_into(f, l->names[i], l->t[i]));
    return FILO_OK;
}

filo_status filo_train_checkpoint_load(const char *dir, filo_train_state *st)
{
    loader L = {.op = __func__};
    FILO_TRY(check_state(L.op, dir, st));
    join(L.json_path, dir, TRAINER_JSON);
    char *text = NULL;
    FILO_TRY(filo_text_file_read(L.json_path, &text, NULL));
    L.root = cJSON_Parse(text);
    free(text);
    filo_safetensors *mf = NULL, *of = NULL;
    char mpath[PATH_LEN], opath[PATH_LEN];
    tensor_list ml = {0}, ol = {0};
    filo_status s = FILO_OK;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(L.root, "format");
    int64_t version = 0, step = 0, epoch = 0;
    if (!cJSON_IsObject(L.root) || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, FORMAT_NAME) != 0)
        s = bad(&L, "%s: not a %s record (missing or wrong \"format\")", FORMAT_NAME);
    if (s == FILO_OK)
        s = get_int(&L, L.root, "version", &version);
    if (s == FILO_OK && version != FORMAT_VERSION)
        s = filo_error_set(FILO_ERR_FORMAT, L.op, "%s: format version %" PRId64 ", this filo reads %d", L.json_path,
                           version, FORMAT_VERSION);
    if (s == FILO_OK)
        s = get_int(&L, L.root, "step", &step);
    if (s == FILO_OK)
        s = get_int(&L, L.root, "epoch", &epoch);
    /* The generators: exactly as many as given. */
    filo_generator gens[FILO_TRAIN_MAX_GENERATORS];
    const cJSON *ga = cJSON_GetObjectItemCaseSensitive(L.root, "generators");
    if (s == FILO_OK && !cJSON_IsArray(ga))
        s = bad(&L, "%s: '%s' is missing or not an array", "generators");
    if (s == FILO_OK && cJSON_GetArraySize(ga) != st->n_generators)
        s = filo_error_set(FILO_ERR_FORMAT, L.op, "%s: the checkpoint has %d generators, %d were given to load",
                           L.json_path, cJSON_GetArraySize(ga), st->n_generators);
    for (int i = 0; s == FILO_OK && i < st->n_generators; i++) {
        const cJSON *g = cJSON_GetArrayItem(ga, i);
        s = get_u64_string(&L, g, "seed", &gens[i].seed);
        if (s == FILO_OK)
            s = get_u64_string(&L, g, "offset", &gens[i].offset);
    }
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(L.root, "extra");
    if (s == FILO_OK && extra && !cJSON_IsNull(extra) && !cJSON_IsObject(extra))
        s = bad(&L, "%s: '%s' is not an object", "extra");
    if (s == FILO_OK)
        s = check_optimizer(&L, st);
    const cJSON *scaler = cJSON_GetObjectItemCaseSensitive(L.root, "grad_scaler");
    if (s == FILO_OK && st->scaler && !cJSON_IsTrue(scaler))
        s = filo_error_set(FILO_ERR_FORMAT, L.op, "%s: the checkpoint has no grad scaler state, but a scaler was given",
                           L.json_path);
    /* The tensors, checked against the files before anything is copied. */
    if (s == FILO_OK)
        s = model_list(st->params, &ml);
    if (s == FILO_OK)
        s = optimizer_list(st, &ol);
    if (s == FILO_OK)
        s = open_tensor_file(&L, dir, "model_file", "model_bytes", &mf, mpath);
    if (s == FILO_OK)
        s = check_tensors(&L, mf, mpath, "model", &ml, 0);
    if (s == FILO_OK && (st->opt || st->scaler))
        s = open_tensor_file(&L, dir, "optimizer_file", "optimizer_bytes", &of, opath);
    if (s == FILO_OK && of)
        s = check_tensors(&L, of, opath, "optimizer", &ol, !st->opt ? SKIP_OPTIMIZER : !st->scaler ? SKIP_SCALER : 0);
    char *extra_text = NULL;
    if (s == FILO_OK && cJSON_IsObject(extra) && !(extra_text = cJSON_PrintUnformatted(extra)))
        s = FILO_FAIL(FILO_ERR_OOM, "out of host memory");
    /* Everything checked: copy. */
    if (s == FILO_OK)
        s = load_values(mf, &ml);
    if (s == FILO_OK && of)
        s = load_values(of, &ol);
    if (s == FILO_OK) {
        for (int i = 0; i < st->n_generators; i++)
            *st->generators[i] = gens[i];
        st->step = step;
        st->epoch = epoch;
        st->extra_json = extra_text;
        extra_text = NULL;
    }
    free(extra_text);
    filo_safetensors_close(mf);
    filo_safetensors_close(of);
    list_free(&ml);
    list_free(&ol);
    cJSON_Delete(L.root);
    return s;
}
