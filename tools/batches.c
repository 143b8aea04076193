#define _POSIX_C_SOURCE 200809L
#include "batches.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_BATCHES 50

/* splitmix64: the data order needs a small, seedable host generator, independent of the
 * device generators that dropout draws from. */
static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void shuffle_i64(int64_t *a, int64_t n, uint64_t *s)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(next_u64(s) % (uint64_t)(i + 1));
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static const ft_dataset *sort_data;

/* Longest first; ties by index so the order is the same on every libc. */
static int by_length_desc(const void *a, const void *b)
{
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    int32_t li = sort_data->ex[i].len, lj = sort_data->ex[j].len;
    return li != lj ? (lj > li) - (lj < li) : (i > j) - (i < j);
}

int ft_plan_batches(const ft_dataset *d, int batch, int shuffle, uint64_t seed, ft_batch_plan *out)
{
    memset(out, 0, sizeof *out);
    int64_t nb = (d->n + batch - 1) / batch;
    out->store = malloc(sizeof *out->store * (size_t)(d->n ? d->n : 1));
    out->b = malloc(sizeof *out->b * (size_t)(nb ? nb : 1));
    if (!out->store || !out->b) {
        ft_batch_plan_free(out);
        fprintf(stderr, "filo: out of host memory for the batch order\n");
        return 1;
    }
    for (int64_t i = 0; i < d->n; i++)
        out->store[i] = i;
    uint64_t s = seed;
    sort_data = d;
    if (shuffle) {
        shuffle_i64(out->store, d->n, &s);
        int64_t group = (int64_t)batch * GROUP_BATCHES;
        for (int64_t g = 0; g < d->n; g += group)
            qsort(out->store + g, (size_t)(d->n - g < group ? d->n - g : group), sizeof *out->store, by_length_desc);
    } else {
        qsort(out->store, (size_t)d->n, sizeof *out->store, by_length_desc);
    }
    for (int64_t k = 0; k < nb; k++) {
        ft_batch *b = &out->b[k];
        b->idx = out->store + k * batch;
        b->n = (int)(d->n - k * batch < batch ? d->n - k * batch : batch);
        b->len = 0;
        for (int i = 0; i < b->n; i++)
            if (d->ex[b->idx[i]].len > b->len)
                b->len = d->ex[b->idx[i]].len;
    }
    out->n = nb;
    if (shuffle && nb > 1) {
        for (int64_t i = nb - 1; i > 0; i--) {
            int64_t j = (int64_t)(next_u64(&s) % (uint64_t)(i + 1));
            ft_batch t = out->b[i];
            out->b[i] = out->b[j];
            out->b[j] = t;
        }
        int64_t longest = 0;
        for (int64_t k = 1; k < nb; k++)
            if ((int64_t)out->b[k].len * out->b[k].n > (int64_t)out->b[longest].len * out->b[longest].n)
                longest = k;
        ft_batch t = out->b[0];
        out->b[0] = out->b[longest];
        out->b[longest] = t;
    }
    return 0;
}

void ft_batch_plan_free(ft_batch_plan *p)
{
    free(p->store);
    free(p->b);
    memset(p, 0, sizeof *p);
}

static int upload(filo_device dev, filo_dtype dt, int ndim, const int64_t *shape, const void *data, filo_tensor **out)
{
    if (filo_tensor_from_host(dev, dt, ndim, shape, data, out) != FILO_OK) {
        fprintf(stderr, "filo: uploading a batch: %s\n", filo_last_error());
        return 1;
    }
    return 0;
}

int ft_batch_upload(const ft_dataset *d, const ft_batch *b, filo_device device, int with_labels, int n_labels,
                    ft_device_batch *out)
{
    memset(out, 0, sizeof *out);
    const int64_t B = b->n, L = b->len;
    int32_t *ids = calloc((size_t)(B * L), sizeof *ids);
    int32_t *types = calloc((size_t)(B * L), sizeof *types);
    int32_t *lens = malloc(sizeof *lens * (size_t)B);
    int64_t label_count = d->task == FT_NER ? B * L : d->task == FT_QA ? 2 * B
                          : d->task == FT_CLASSIFY ? B
                                                   : B * n_labels;
    void *labels = malloc(sizeof(int32_t) * (size_t)label_count);
    int rc = 0;
    if (!ids || !types || !lens || !labels) {
        fprintf(stderr, "filo: out of host memory for a batch of %lld x %lld tokens\n", (long long)B, (long long)L);
        rc = 1;
    }
    for (int64_t i = 0; i < B && !rc; i++) {
        const ft_example *e = &d->ex[b->idx[i]];
        memcpy(ids + i * L, e->ids, sizeof *ids * (size_t)e->len);
        memcpy(types + i * L, e->type_ids, sizeof *types * (size_t)e->len);
        lens[i] = e->len;
        out->tokens += e->len;
        if (!with_labels)
            continue;
        int32_t *li = labels;
        float *lf = labels;
        switch (d->task) {
        case FT_CLASSIFY:
            li[i] = e->label;
            break;
        case FT_MULTILABEL:
        case FT_REGRESS:
            memcpy(lf + i * n_labels, e->targets, sizeof *lf * (size_t)n_labels);
            break;
        case FT_NER:
            for (int64_t k = 0; k < L; k++)
                li[i * L + k] = k < e->len ? e->token_labels[k] : -100;
            break;
        case FT_QA:
            li[2 * i] = e->answer_start;
            li[2 * i + 1] = e->answer_end;
            break;
        }
    }
    const int64_t shape2[2] = {B, L};
    if (!rc)
        rc = upload(device, FILO_I32, 2, shape2, ids, &out->ids) ||
             upload(device, FILO_I32, 2, shape2, types, &out->type_ids) ||
             upload(device, FILO_I32, 1, &B, lens, &out->lengths);
    if (!rc && with_labels) {
        int64_t shape[2] = {B, d->task == FT_NER ? L : d->task == FT_QA ? 2 : n_labels};
        int ndim = d->task == FT_CLASSIFY || (d->task == FT_REGRESS && n_labels == 1) ? 1 : 2;
        filo_dtype dt = d->task == FT_MULTILABEL || d->task == FT_REGRESS ? FILO_F32 : FILO_I32;
        rc = upload(device, dt, ndim, shape, labels, &out->labels);
    }
    free(ids);
    free(types);
    free(lens);
    free(labels);
    if (rc)
        ft_device_batch_free(out);
    return rc;
}

void ft_device_batch_free(ft_device_batch *b)
{
    filo_tensor_free(b->ids);
    filo_tensor_free(b->type_ids);
    filo_tensor_free(b->lengths);
    filo_tensor_free(b->labels);
    memset(b, 0, sizeof *b);
}

int ft_batch_failed(filo_status st, const char *what, const ft_batch *b)
{
    if (st == FILO_ERR_OOM)
        fprintf(stderr, "filo: out of memory in the %s of a batch of %d x %d tokens: %s\n"
                        "  try a smaller --batch (with --grad-accum to keep the effective batch) or --max-len\n",
                what, b->n, b->len, filo_last_error());
    else
        fprintf(stderr, "filo: %s of a batch of %d x %d tokens: %s\n", what, b->n, b->len, filo_last_error());
    return 1;
}
