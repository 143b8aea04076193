/* Each rank's share of a batch and its loss weight; evaluation sharded over the ranks and
 * gathered (see dist_data.h). */
#define _POSIX_C_SOURCE 200809L
#include "dist_data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dp_share(int64_t n, int rank, int world, int64_t *lo, int64_t *hi)
{
    int64_t base = n / world, extra = n % world;
    *lo = rank * base + (rank < extra ? rank : extra);
    *hi = *lo + base + (rank < extra ? 1 : 0);
}

/* What example e's loss term averages over: its labelled tokens for token classification (the
 * others are -100, ignored), else the example itself. */
static int64_t loss_count(const ft_dataset *d, const ft_example *e)
{
    if (d->task != FT_NER)
        return 1;
    int64_t n = 0;
    for (int k = 0; k < e->len; k++)
        n += e->token_labels[k] != -100;
    return n;
}

void dp_slice_batch(const ft_dataset *d, const ft_batch *g, int rank, int world, dp_slice *out)
{
    memset(out, 0, sizeof *out);
    int64_t lo, hi;
    dp_share(g->n, rank, world, &lo, &hi);
    if (hi == lo) {
        out->b.idx = g->idx + g->n - 1;
        out->b.n = 1;
        out->repeat = 1;
    } else {
        out->b.idx = g->idx + lo;
        out->b.n = (int)(hi - lo);
    }
    int64_t mine = 0, all = 0;
    for (int i = 0; i < g->n; i++) {
        int64_t c = loss_count(d, &d->ex[g->idx[i]]);
        all += c;
        if (i >= lo && i < hi)
            mine += c;
    }
    for (int i = 0; i < out->b.n; i++)
        if (d->ex[out->b.idx[i]].len > out->b.len)
            out->b.len = d->ex[out->b.idx[i]].len;
    if (d->task == FT_QA)
        out->b.len = g->len;
    /* A global batch with nothing to average over has a NaN loss in one process too; its
     * gradient is zero either way. */
    out->weight = out->repeat ? 0.0 : all ? (double)world * (double)mine / (double)all : 1.0;
}

int dp_sum(filo_comm *comm, double *v, int n)
{
    if (!comm || n == 0)
        return 0;
    int world = filo_comm_size(comm);
    double *all = malloc(sizeof *all * (size_t)n * (size_t)world);
    if (!all) {
        fprintf(stderr, "filo: out of host memory\n");
        return 1;
    }
    if (filo_comm_all_gather_bytes(comm, v, sizeof *v * (size_t)n, all) != FILO_OK) {
        fprintf(stderr, "filo: summing over the ranks: %s\n", filo_last_error());
        free(all);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        v[i] = 0;
        for (int r = 0; r < world; r++)
            v[i] += all[(size_t)r * (size_t)n + (size_t)i];
    }
    free(all);
    return 0;
}

int dp_forward_all(filo_comm *comm, const filo_bert *m, const ft_dataset *d, int batch, filo_dtype autocast,
                   double *loss, ft_outputs *out)
{
    if (!comm || filo_comm_size(comm) == 1)
        return ft_forward_all(m, d, batch, autocast, 1, loss, out);
    memset(out, 0, sizeof *out);
    const int world = filo_comm_size(comm), rank = filo_comm_rank(comm), C = m->config.num_labels;
    int64_t lo, hi;
    dp_share(d->n, rank, world, &lo, &hi);
    ft_dataset shard = *d;
    shard.ex = d->ex + lo;
    shard.n = hi - lo;
    ft_outputs part;
    double part_loss = 0;
    if (ft_forward_all(m, &shard, batch, autocast, 1, &part_loss, &part))
        return 1;
    /* The message: this shard's loss sum, then its logits in dataset order. */
    int64_t floats = part.offset[shard.n];
    size_t bytes = sizeof(double) + sizeof(float) * (size_t)floats;
    unsigned char *msg = malloc(bytes);
    size_t *lens = malloc(sizeof *lens * (size_t)world);
    void *all = NULL;
    int rc = 0;
    if (!msg || !lens) {
        fprintf(stderr, "filo: out of host memory for the evaluation outputs\n");
        rc = 1;
    } else {
        double sum = shard.n ? part_loss * (double)shard.n : 0.0;
        memcpy(msg, &sum, sizeof sum);
        memcpy(msg + sizeof sum, part.logits, sizeof(float) * (size_t)floats);
        if (filo_comm_all_gather_varied(comm, msg, bytes, &all, lens) != FILO_OK) {
            fprintf(stderr, "filo: gathering the evaluation outputs: %s\n", filo_last_error());
            rc = 1;
        }
    }
    ft_outputs_free(&part);
    free(msg);
    out->n_labels = C;
    out->offset = rc ? NULL : malloc(sizeof *out->offset * (size_t)(d->n + 1));
    if (!rc && !out->offset) {
        fprintf(stderr, "filo: out of host memory for the evaluation outputs\n");
        rc = 1;
    }
    int64_t total = 0;
    for (int64_t i = 0; !rc && i < d->n; i++) {
        out->offset[i] = total;
        total += ft_output_width(d, &d->ex[i], C);
    }
    if (!rc) {
        out->offset[d->n] = total;
        out->logits = malloc(sizeof *out->logits * (size_t)(total ? total : 1));
        rc = !out->logits;
        if (rc)
            fprintf(stderr, "filo: out of host memory for the evaluation outputs\n");
    }
    double loss_sum = 0;
    const unsigned char *at = all;
    for (int r = 0; r < world && !rc; r++) {
        int64_t rlo, rhi;
        dp_share(d->n, r, world, &rlo, &rhi);
        size_t want = sizeof(double) + sizeof(float) * (size_t)(out->offset[rhi] - out->offset[rlo]);
        if (lens[r] != want) {
            fprintf(stderr,
                    "filo: rank %d sent %zu bytes of evaluation outputs for examples %lld..%lld, not %zu: "
                    "do the ranks read the same evaluation data?\n",
                    r, lens[r], (long long)rlo, (long long)rhi, want);
            rc = 1;
            break;
        }
        double s;
        memcpy(&s, at, sizeof s);
        loss_sum += s;
        memcpy(out->logits + out->offset[rlo], at + sizeof s, want - sizeof s);
        at += want;
    }
    free(all);
    free(lens);
    if (rc)
        ft_outputs_free(out);
    else if (loss)
        *loss = d->n ? loss_sum / (double)d->n : NAN;
    return rc;
}
