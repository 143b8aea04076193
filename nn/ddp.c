/* Data-parallel gradient averaging (filo/ddp.h): parameters grouped into buckets, each bucket's
 * gradients packed into one flat buffer and all-reduced as soon as the backward has finished
 * them, while the rest of the backward runs.
 *
 * Each bucket's flat buffer holds its parameters' gradients one after another and then one flag
 * per parameter: 1 when this rank had a gradient for it. After the average a flag above zero
 * says some rank had one, so "no gradient anywhere" is told apart from "a zero gradient" in the
 * same collective, with no extra round trip (PyTorch needs find_unused_parameters for that).
 * The buffers are allocated once, so steady-state steps allocate nothing. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "filo/ddp.h"

#define DEFAULT_BUCKET_BYTES ((size_t)25 << 20)

typedef struct ddp_param {
    filo_ddp *ddp;
    filo_var *var;
    const char *name;
    int bucket;
    int64_t offset; /* in the bucket's flat buffer, elements */
    int64_t numel;
    int ready;      /* its gradient is final in this sync step */
} ddp_param;

typedef struct ddp_bucket {
    int first, count;       /* ddp->params[first .. first + count) */
    int64_t numel;          /* gradient elements; the flags follow */
    filo_tensor *flat;      /* [numel + count] in the reduce dtype */
    int pending;            /* parameters not yet ready this step */
    filo_comm_work *work;   /* in flight */
    filo_ddp_trace_event ev;
} ddp_bucket;

struct filo_ddp {
    filo_comm *comm;
    filo_params *params;
    filo_ddp_options opts;
    int n_params;
    ddp_param *params_;
    int n_buckets;
    ddp_bucket *buckets;
    int sync;
    int next_launch;          /* buckets start in index order: the next one to start, and the
                               * count started this step */
    int traced;               /* buckets of the last finished step (their ev is its trace) */
    double step_t0;           /* host time of the step's first hook */
    filo_ddp_stats stats;
    int64_t step_in_backward; /* buckets started from hooks this step */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

filo_ddp_options filo_ddp_defaults(void)
{
    return (filo_ddp_options){.bucket_bytes = DEFAULT_BUCKET_BYTES};
}

/* A view of elements [offset, offset + numel) of a bucket's flat buffer, shaped like t. */
static filo_status flat_view(const ddp_bucket *b, int64_t offset, const filo_tensor *shape_of, filo_tensor **out)
{
    filo_tensor *slice = NULL;
    FILO_TRY(filo_tensor_slice(b->flat, 0, offset, offset + filo_tensor_numel(shape_of), 1, &slice));
    filo_status s = filo_tensor_view(slice, shape_of->ndim, shape_of->shape, out);
    filo_tensor_free(slice);
    return s;
}

/* Copies each parameter's gradient (or zeros) and its flag into the bucket's flat buffer. The
 * flags are set to 1 in one fill; only a parameter without a gradient (rare) costs another. */
static filo_status bucket_pack(filo_ddp *d, ddp_bucket *b)
{
    filo_tensor *flags = NULL;
    FILO_TRY(filo_tensor_slice(b->flat, 0, b->numel, b->numel + b->count, 1, &flags));
    filo_status s = filo_tensor_fill(flags, 1.0);
    for (int i = 0; i < b->count && s == FILO_OK; i++) {
        ddp_param *p = &d->params_[b->first + i];
        filo_tensor *grad = filo_var_grad(p->var), *dst = NULL, *flag = NULL;
        s = flat_view(b, p->offset, filo_var_value(p->var), &dst);
        if (s == FILO_OK)
            s = grad ? filo_tensor_copy(dst, grad) : filo_tensor_fill(dst, 0.0);
        if (s == FILO_OK && !grad)
            s = filo_tensor_slice(flags, 0, i, i + 1, 1, &flag);
        if (s == FILO_OK && !grad)
            s = filo_tensor_fill(flag, 0.0);
        filo_tensor_free(flag);
        filo_tensor_free(dst);
    }
    filo_tensor_free(flags);
    return s;
}

/* Packs and starts the next bucket in index order. */
static filo_status bucket_launch(filo_ddp *d, int in_backward)
{
    const int index = d->next_launch;
    ddp_bucket *b = &d->buckets[index];
    FILO_TRY(bucket_pack(d, b));
    char label[32];
    snprintf(label, sizeof label, "bucket %d", index);
    FILO_TRY(filo_all_reduce_start(d->comm, b->flat, FILO_REDUCE_AVG, label, &b->work));
    if (d->step_t0 == 0)
        d->step_t0 = now_s();
    b->ev = (filo_ddp_trace_event){.bucket = index,
                                   .n_params = b->count,
                                   .bytes = filo_tensor_nbytes(b->flat),
                                   .start_s = now_s() - d->step_t0,
                                   .in_backward = in_backward};
    d->next_launch++;
    if (in_backward)
        d->step_in_backward++;
    return FILO_OK;
}

static filo_status grad_ready(filo_var *leaf, filo_tensor *grad, void *user)
{
    (void)leaf;
    (void)grad;
    ddp_param *p = user;
    filo_ddp *d = p->ddp;
    if (!d->sync)
        return FILO_OK;
    if (d->step_t0 == 0)
        d->step_t0 = now_s();
    ddp_bucket *b = &d->buckets[p->bucket];
    if (p->ready) {
        if (b->work)
            return FILO_FAIL(FILO_ERR_STATE,
                             "the gradient of %s changed after its bucket was all-reduced: call "
                             "filo_ddp_finish after each synchronizing backward (or set sync 0 for "
                             "accumulation), and do not use a parameter both inside and outside a "
                             "checkpointed function",
                             p->name);
        return FILO_OK;
    }
    p->ready = 1;
    b->pending--;
    /* Every rank must start the same collectives in the same order, whatever order its hooks
     * fire in, so a ready bucket waits for the ones before it. */
    while (d->next_launch < d->n_buckets && d->buckets[d->next_launch].pending == 0)
        FILO_TRY(bucket_launch(d, 1));
    return FILO_OK;
}

/* "name|dtype|[d0, d1]\n" per trainable parameter in registration order, for comparing ranks. */
static char *signature(const filo_ddp *d, size_t *len)
{
    size_t cap = 256, n = 0;
    char *s = malloc(cap);
    for (int i = d->n_params - 1; s && i >= 0; i--) {
        const filo_tensor *v = filo_var_value(d->params_[i].var);
        char shape[160];
        filo_dims_format(v->ndim, v->shape, shape, sizeof shape);
        size_t need = strlen(d->params_[i].name) + strlen(shape) + 24;
        if (n + need >= cap) {
            while (n + need >= cap)
                cap *= 2;
            char *g = realloc(s, cap);
            if (!g) {
                free(s);
                return NULL;
            }
            s = g;
        }
        n += (size_t)snprintf(s + n, cap - n, "%s|%s|%s\n", d->params_[i].name, filo_dtype_name(v->dtype),
                              shape);
    }
    if (s)
        *len = n;
    return s;
}

/* The line `k` (0-based) of a signature, into buf, '|' shown as spaces. */
static const char *signature_line(const char *sig, size_t len, int k, char *buf, size_t size)
{
    size_t at = 0;
    for (int i = 0; i < k && at < len; i++) {
        const char *nl = memchr(sig + at, '\n', len - at);
        at = nl ? (size_t)(nl - sig) + 1 : len;
    }
    size_t end = at;
    while (end < len && sig[end] != '\n')
        end++;
    if (at >= len)
        return snprintf(buf, size, "nothing"), buf;
    size_t n = end - at < size - 1 ? end - at : size - 1;
    memcpy(buf, sig + at, n);
    buf[n] = 0;
    for (char *c = buf; *c; c++)
        if (*c == '|')
            *c = ' ';
    return buf;
}

/* Every rank gathers every rank's signature and fails the same way on the first difference. */
static filo_status check_same_params(filo_ddp *d)
{
    size_t len = 0;
    char *sig = signature(d, &len);
    if (!sig)
        return FILO_FAIL(FILO_ERR_OOM, "parameter signature");
    const int world = filo_comm_size(d->comm);
    size_t *lens = calloc((size_t)world, sizeof *lens);
    void *all = NULL;
    filo_status s = lens ? filo_comm_all_gather_varied(d->comm, sig, len, &all, lens)
                         : FILO_FAIL(FILO_ERR_OOM, "signature lengths");
    int64_t *counts = calloc((size_t)world, sizeof *counts);
    int64_t mine = d->n_params;
    if (s == FILO_OK && !counts)
        s = FILO_FAIL(FILO_ERR_OOM, "parameter counts");
    if (s == FILO_OK)
        s = filo_comm_all_gather_bytes(d->comm, &mine, sizeof mine, counts);
    const char *base = all;
    size_t base_len = s == FILO_OK ? lens[0] : 0, at = base_len;
    for (int r = 1; r < world && s == FILO_OK; r++) {
        const char *other = (const char *)all + at;
        size_t other_len = lens[r];
        at += other_len;
        if (other_len == base_len && !memcmp(other, base, base_len))
            continue;
        /* The first line that differs. */
        int line = 0;
        size_t i = 0;
        while (i < base_len && i < other_len && base[i] == other[i]) {
            if (base[i] == '\n')
                line++;
            i++;
        }
        char a[256], b[256];
        signature_line(base, base_len, line, a, sizeof a);
        signature_line(other, other_len, line, b, sizeof b);
        s = FILO_FAIL(FILO_ERR_COMM,
                      "the ranks do not hold the same model: rank 0 has %lld trainable parameters, rank %d "
                      "has %lld; trainable parameter %d is %s on rank 0 but %s on rank %d (same --config, "
                      "checkpoint and frozen layers on every rank?)",
                      (long long)counts[0], r, (long long)counts[r], line, a, b, r);
    }
    free(all);
    free(lens);
    free(counts);
    free(sig);
    return s;
}

/* Sends rank 0's parameter values to every rank (once, at the start: one collective each). */
static filo_status broadcast_values(filo_ddp *d)
{
    for (int i = 0; i < d->n_params; i++) {
        filo_status s = filo_broadcast(d->comm, filo_var_value(d->params_[i].var), 0);
        if (s != FILO_OK)
            return filo_error_wrap(s, d->params_[i].name);
    }
    return FILO_OK;
}

/* Buckets in reverse registration order: the last layers' gradients are final first. */
static filo_status make_buckets(filo_ddp *d)
{
    const size_t elem = d->opts.reduce_bf16 ? 2 : 4;
    d->buckets = calloc((size_t)d->n_params + 1, sizeof *d->buckets);
    if (!d->buckets)
        return FILO_FAIL(FILO_ERR_OOM, "ddp buckets");
    int nb = 0;
    for (int i = 0; i < d->n_params; i++) {
        ddp_param *p = &d->params_[i];
        ddp_bucket *b = nb ? &d->buckets[nb - 1] : NULL;
        if (!b || (size_t)(b->numel + p->numel) * elem > d->opts.bucket_bytes) {
            b = &d->buckets[nb++];
            b->first = i;
        }
        p->bucket = nb - 1;
        p->offset = b->numel;
        b->numel += p->numel;
        b->count++;
    }
    d->n_buckets = nb;
    const filo_device dev = filo_params_device(d->params);
    for (int k = 0; k < nb; k++) {
        ddp_bucket *b = &d->buckets[k];
        int64_t n = b->numel + b->count;
        FILO_TRY(filo_tensor_zeros(dev, d->opts.reduce_bf16 ? FILO_BF16 : FILO_F32, 1, &n, &b->flat));
        b->pending = b->count;
        size_t bytes = filo_tensor_nbytes(b->flat);
        if (bytes > d->stats.bucket_bytes_max)
            d->stats.bucket_bytes_max = bytes;
    }
    d->stats.buckets = nb;
    return FILO_OK;
}

filo_status filo_ddp_init(filo_comm *comm, filo_params *params, const filo_ddp_options *opts, filo_ddp **out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!comm || !params)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "a communicator and a parameter store are required");
    const filo_device dev = filo_params_device(params);
    if (dev.type != FILO_DEVICE_CPU && !filo_device_equal(dev, filo_comm_device(comm))) {
        char a[32], b[32];
        return FILO_FAIL(FILO_ERR_DEVICE, "the parameters are on %s but the communicator serves %s",
                         filo_device_format(dev, a, sizeof a), filo_device_format(filo_comm_device(comm), b, sizeof b));
    }
    filo_ddp *d = calloc(1, sizeof *d);
    if (!d)
        return FILO_FAIL(FILO_ERR_OOM, "ddp");
    d->comm = comm;
    d->params = params;
    d->opts = opts ? *opts : filo_ddp_defaults();
    if (d->opts.bucket_bytes == 0)
        d->opts.bucket_bytes = DEFAULT_BUCKET_BYTES;
    d->sync = 1;
    filo_status s = FILO_OK;
    if (d->opts.reduce_bf16 && dev.type == FILO_DEVICE_CPU)
        s = FILO_FAIL(FILO_ERR_UNSUPPORTED, "bf16 gradient reduction needs CUDA parameters (NCCL); CPU "
                                            "collectives reduce in f32");
    int total = filo_params_count(params), n = 0;
    if (s == FILO_OK) {
        d->params_ = calloc((size_t)total + 1, sizeof *d->params_);
        if (!d->params_)
            s = FILO_FAIL(FILO_ERR_OOM, "ddp parameters");
    }
    for (int i = total - 1; i >= 0 && s == FILO_OK; i--) {
        filo_var *v = filo_params_at(params, i);
        if (!filo_var_requires_grad(v))
            continue;
        if (filo_var_value(v)->dtype != FILO_F32)
            s = FILO_FAIL(FILO_ERR_DTYPE, "parameter %s is not f32", filo_params_name_at(params, i));
        d->params_[n++] = (ddp_param){.ddp = d,
                                      .var = v,
                                      .name = filo_params_name_at(params, i),
                                      .numel = filo_tensor_numel(filo_var_value(v))};
    }
    d->n_params = n;
    if (s == FILO_OK)
        s = check_same_params(d);
    if (s == FILO_OK)
        s = make_buckets(d);
    if (s == FILO_OK && !d->opts.skip_broadcast)
        s = broadcast_values(d);
    if (s == FILO_OK && d->opts.skip_broadcast)
        s = filo_ddp_check_equal(d);
    for (int i = 0; i < n && s == FILO_OK; i++)
        s = filo_var_add_hook(d->params_[i].var, grad_ready, &d->params_[i]);
    if (s != FILO_OK) {
        filo_ddp_free(d);
        return s;
    }
    *out = d;
    return FILO_OK;
}

void filo_ddp_free(filo_ddp *d)
{
    if (!d)
        return;
    for (int k = 0; k < d->n_buckets; k++) {
        filo_comm_work_free(d->buckets[k].work);
        filo_tensor_free(d->buckets[k].flat);
    }
    for (int i = 0; i < d->n_params; i++)
        filo_var_clear_hooks(d->params_[i].var);
    free(d->buckets);
    free(d->params_);
    free(d);
}

void filo_ddp_set_sync(filo_ddp *d, int sync)
{
    if (d)
        d->sync = sync != 0;
}

/* Writes a finished bucket's averages back into the gradients. */
static filo_status bucket_unpack(filo_ddp *d, ddp_bucket *b)
{
    float *flags = malloc(sizeof *flags * (size_t)b->count);
    filo_tensor *flag_view = NULL;
    filo_status s = flags ? filo_tensor_slice(b->flat, 0, b->numel, b->numel + b->count, 1, &flag_view)
                          : FILO_FAIL(FILO_ERR_OOM, "bucket flags");
    /* A host read of a few floats: the step synchronizes here anyway before the optimizer. */
    if (s == FILO_OK)
        s = filo_tensor_to_host_as(flag_view, FILO_F32, flags, sizeof *flags * (size_t)b->count);
    filo_tensor_free(flag_view);
    for (int i = 0; i < b->count && s == FILO_OK; i++) {
        ddp_param *p = &d->params_[b->first + i];
        if (flags[i] <= 0.0f) {
            filo_var_zero_grad(p->var);
            continue;
        }
        filo_tensor *src = NULL, *grad = filo_var_grad(p->var);
        s = flat_view(b, p->offset, filo_var_value(p->var), &src);
        if (s == FILO_OK && grad)
            s = filo_tensor_copy(grad, src);
        else if (s == FILO_OK) {
            filo_tensor *fresh = NULL;
            s = filo_tensor_empty(src->device, FILO_F32, src->ndim, src->shape, &fresh);
            if (s == FILO_OK)
                s = filo_tensor_copy(fresh, src);
            if (s == FILO_OK)
                s = filo_var_set_grad(p->var, fresh);
            filo_tensor_free(fresh);
        }
        filo_tensor_free(src);
    }
    free(flags);
    return s;
}

static void step_reset(filo_ddp *d)
{
    for (int i = 0; i < d->n_params; i++)
        d->params_[i].ready = 0;
    for (int k = 0; k < d->n_buckets; k++) {
        filo_comm_work_free(d->buckets[k].work);
        d->buckets[k].work = NULL;
        d->buckets[k].pending = d->buckets[k].count;
    }
    d->next_launch = 0;
    d->step_t0 = 0;
    d->step_in_backward = 0;
}

filo_status filo_ddp_finish(filo_ddp *d)
{
    if (!d)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "ddp is NULL");
    if (!d->sync)
        return FILO_FAIL(FILO_ERR_STATE, "filo_ddp_finish on a step with sync 0: set sync 1 before the "
                                         "last micro-step's backward");
    filo_status s = FILO_OK;
    /* What the hooks did not start: buckets with a parameter that got no gradient on this rank,
     * and those after it. */
    while (d->next_launch < d->n_buckets && s == FILO_OK)
        s = bucket_launch(d, 0);
    const int started = d->next_launch;
    for (int j = 0; j < started; j++) {
        ddp_bucket *b = &d->buckets[j];
        filo_status w = filo_comm_work_wait(b->work);
        b->ev.end_s = now_s() - d->step_t0;
        if (s == FILO_OK)
            s = w;
    }
    for (int j = 0; j < started && s == FILO_OK; j++)
        s = bucket_unpack(d, &d->buckets[j]);
    if (s == FILO_OK) {
        d->stats.reductions++;
        d->stats.launched_in_backward += d->step_in_backward;
        d->stats.launched_at_finish += started - d->step_in_backward;
        d->stats.last_backward_overlap = started ? (double)d->step_in_backward / started : 0.0;
        d->traced = started;
    }
    step_reset(d);
    return s;
}

/* FNV-1a over a parameter's bytes. */
static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

filo_status filo_ddp_check_equal(filo_ddp *d)
{
    if (!d)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "ddp is NULL");
    const int world = filo_comm_size(d->comm), n = d->n_params;
    uint64_t *mine = calloc((size_t)n + 1, sizeof *mine);
    uint64_t *all = calloc(((size_t)n + 1) * (size_t)world, sizeof *all);
    size_t cap = 0;
    unsigned char *host = NULL;
    filo_status s = mine && all ? FILO_OK : FILO_FAIL(FILO_ERR_OOM, "parameter hashes");
    for (int i = 0; i < n && s == FILO_OK; i++) {
        const filo_tensor *v = filo_var_value(d->params_[i].var);
        size_t bytes = filo_tensor_nbytes(v);
        if (bytes > cap) {
            unsigned char *g = realloc(host, bytes);
            if (!g) {
                s = FILO_FAIL(FILO_ERR_OOM, "parameter %s on the host", d->params_[i].name);
                break;
            }
            host = g;
            cap = bytes;
        }
        s = filo_tensor_to_host(v, host, bytes);
        if (s == FILO_OK)
            mine[i] = hash_bytes(host, bytes);
    }
    if (s == FILO_OK)
        s = filo_comm_all_gather_bytes(d->comm, mine, sizeof *mine * ((size_t)n + 1), all);
    for (int r = 1; r < world && s == FILO_OK; r++)
        for (int i = 0; i < n; i++)
            if (all[(size_t)r * ((size_t)n + 1) + (size_t)i] != all[i]) {
                s = FILO_FAIL(FILO_ERR_COMM, "parameter %s differs between rank 0 and rank %d", d->params_[i].name,
                              r);
                break;
            }
    free(host);
    free(mine);
    free(all);
    return s;
}

void filo_ddp_stats_get(const filo_ddp *d, filo_ddp_stats *out)
{
    if (out)
        *out = d ? d->stats : (filo_ddp_stats){0};
}

int filo_ddp_trace(const filo_ddp *d, filo_ddp_trace_event *events, int max)
{
    if (!d)
        return 0;
    for (int j = 0; j < d->traced && j < max; j++)
        events[j] = d->buckets[j].ev;
    return d->traced;
}
