/* Data-parallel equivalence, run as every rank of a world (mpirun, or tests/dist/run-ranks.sh
 * for the TCP transport):  ddp_check DEVICE
 *
 * A small BERT classifier is trained K steps with filo_ddp, each rank on its slice of every
 * global batch, its loss weighted by its share (n_r * W / n) so the average over ranks is the
 * mean over the whole batch. Rank 0 also trains a second copy of the model alone on the whole
 * batches, and the two must end with the same parameters (1e-5). Ranks start from different
 * seeds: the broadcast at filo_ddp_init must make them equal. Then: accumulation over two
 * micro-steps (the first starts no collective), a parameter used by one rank only and one used
 * by none, the overlap counters, and a rank whose model differs (a clear error on every rank).
 * Prints "ddp_check: ok" on rank 0 and exits 0, or names what failed and exits 1. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <filo/filo.h>
#include <filo/ddp.h>
#include <filo/dist.h>

#define GLOBAL_BATCH 7
#define STEPS 4
#define VOCAB 97
#define MAX_LEN 19

static int g_rank;

#define CHECK(cond, ...)                                               \
    do {                                                               \
        if (!(cond)) {                                                 \
            fprintf(stderr, "ddp_check rank %d: %s:%d: ", g_rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                              \
            fprintf(stderr, "\n");                                     \
            exit(1);                                                   \
        }                                                              \
    } while (0)
#define OK(call) CHECK((call) == FILO_OK, "%s: %s", #call, filo_last_error())

/* One global batch, the same on every rank (drawn from the step number). */
typedef struct batch {
    int n, len[GLOBAL_BATCH], ids[GLOBAL_BATCH][MAX_LEN], label[GLOBAL_BATCH];
} batch;

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void make_batch(int step, batch *b)
{
    uint64_t s = mix((uint64_t)step + 1000);
    b->n = GLOBAL_BATCH;
    for (int i = 0; i < b->n; i++) {
        s = mix(s);
        b->len[i] = 4 + (int)(s % (MAX_LEN - 4));
        b->label[i] = (int)((s >> 20) % 3);
        for (int t = 0; t < MAX_LEN; t++) {
            s = mix(s);
            b->ids[i][t] = t < b->len[i] ? 1 + (int)(s % (VOCAB - 1)) : 0;
        }
    }
}

/* Forward + weighted loss + backward of examples [lo, hi) of b. */
static void run_part(filo_bert *m, const batch *b, int lo, int hi, double weight, filo_device dev)
{
    int n = hi - lo, L = 0;
    for (int i = lo; i < hi; i++)
        L = b->len[i] > L ? b->len[i] : L;
    int32_t *ids = calloc((size_t)n * (size_t)L, sizeof *ids), lens[GLOBAL_BATCH], labels[GLOBAL_BATCH];
    for (int i = 0; i < n; i++) {
        for (int t = 0; t < L; t++)
            ids[i * L + t] = b->ids[lo + i][t];
        lens[i] = b->len[lo + i];
        labels[i] = b->label[lo + i];
    }
    int64_t shape[2] = {n, L}, bn = n;
    filo_tensor *t_ids, *t_lens, *t_labels;
    OK(filo_tensor_from_host(dev, FILO_I32, 2, shape, ids, &t_ids));
    OK(filo_tensor_from_host(dev, FILO_I32, 1, &bn, lens, &t_lens));
    OK(filo_tensor_from_host(dev, FILO_I32, 1, &bn, labels, &t_labels));
    filo_bert_inputs in = {.input_ids = t_ids, .lengths = t_lens};
    filo_nn_ctx ctx = filo_nn_ctx_make(1, NULL);
    filo_var *logits, *loss, *scaled;
    OK(filo_bert_forward(m, &ctx, &in, &logits));
    OK(filo_bert_loss(m, logits, t_labels, &loss));
    OK(filo_ag_binary_scalar(FILO_BINARY_MUL, loss, weight, 0, &scaled));
    OK(filo_backward(scaled, NULL, 0));
    filo_var_free(scaled);
    filo_var_free(loss);
    filo_var_free(logits);
    filo_tensor_free(t_ids);
    filo_tensor_free(t_lens);
    filo_tensor_free(t_labels);
    free(ids);
}

static filo_bert *new_model(const filo_bert_config *cfg, filo_device dev, uint64_t seed)
{
    filo_bert *m;
    OK(filo_bert_new(cfg, FILO_BERT_SEQUENCE_CLASSIFY, dev, seed, &m));
    return m;
}

static filo_optimizer *new_optimizer(filo_bert *m, filo_device dev)
{
    filo_optimizer_config oc = filo_optimizer_defaults(FILO_OPT_ADAMW);
    oc.lr = 2e-3;
    oc.weight_decay = 0.01;
    filo_optimizer *opt;
    OK(filo_optimizer_new(dev, &oc, &opt));
    OK(filo_optimizer_add_params(opt, m->params));
    return opt;
}

static void optimizer_step(filo_optimizer *opt)
{
    filo_step_options so = filo_step_defaults();
    so.max_grad_norm = 1.0;
    OK(filo_optimizer_step(opt, &so));
    filo_optimizer_zero_grad(opt);
}

/* Largest |a - b| over every parameter of two models of the same config. */
static double max_param_diff(const filo_bert *a, const filo_bert *b)
{
    double worst = 0;
    for (int i = 0; i < filo_params_count(a->params); i++) {
        const filo_tensor *x = filo_var_value(filo_params_at(a->params, i));
        const filo_tensor *y = filo_var_value(filo_params_at(b->params, i));
        size_t n = (size_t)filo_tensor_numel(x);
        double *hx = malloc(n * sizeof *hx), *hy = malloc(n * sizeof *hy);
        OK(filo_tensor_to_host_as(x, FILO_F64, hx, n * sizeof *hx));
        OK(filo_tensor_to_host_as(y, FILO_F64, hy, n * sizeof *hy));
        for (size_t k = 0; k < n; k++)
            worst = fmax(worst, fabs(hx[k] - hy[k]));
        free(hx);
        free(hy);
    }
    return worst;
}

/* This rank's share [lo, hi) of n examples: as even as possible. */
static void share(int n, int rank, int world, int *lo, int *hi)
{
    *lo = (int)((int64_t)n * rank / world);
    *hi = (int)((int64_t)n * (rank + 1) / world);
}

/* Trains `steps` steps from step0; micro 1: one backward per step, 2: the rank's share split in
 * two micro-steps (sync only on the second). ref: the single-process copy (rank 0), or NULL. */
static void train(filo_comm *comm, filo_ddp *ddp, filo_bert *m, filo_optimizer *opt, filo_bert *ref,
                  filo_optimizer *ref_opt, int step0, int steps, int micro, filo_device dev)
{
    const int rank = filo_comm_rank(comm), world = filo_comm_size(comm);
    for (int step = step0; step < step0 + steps; step++) {
        batch b;
        make_batch(step, &b);
        int lo, hi;
        share(b.n, rank, world, &lo, &hi);
        CHECK(hi > lo, "empty share");
        for (int k = 0; k < micro; k++) {
            int mlo = lo + (hi - lo) * k / micro, mhi = lo + (hi - lo) * (k + 1) / micro;
            filo_ddp_set_sync(ddp, k == micro - 1);
            filo_comm_stats before, after;
            filo_comm_stats_get(comm, &before);
            /* mean over the part * its share of the global batch * world: averaging over the
             * ranks then gives the mean over the whole batch. */
            run_part(m, &b, mlo, mhi, (double)(mhi - mlo) * world / b.n, dev);
            filo_comm_stats_get(comm, &after);
            if (k < micro - 1)
                CHECK(after.collectives == before.collectives,
                      "a backward with sync 0 started %lld collectives",
                      (long long)(after.collectives - before.collectives));
        }
        OK(filo_ddp_finish(ddp));
        optimizer_step(opt);
        if (ref) {
            run_part(ref, &b, 0, b.n, 1.0, dev);
            optimizer_step(ref_opt);
        }
    }
}

/* Three parameters: w used by every rank, u by rank 0 only, z by none. After the finish, u's
 * gradient is the average with rank 0's alone counting, z has none. */
static void check_unused(filo_comm *comm, filo_device dev)
{
    const int rank = filo_comm_rank(comm), world = filo_comm_size(comm);
    filo_params *ps;
    OK(filo_params_new(dev, 5, &ps));
    int64_t shape = 5;
    filo_var *w, *u, *z;
    OK(filo_params_create(ps, "w", 1, &shape, (filo_init){FILO_INIT_UNIFORM, -1, 1}, FILO_PARAM_WEIGHT, &w));
    OK(filo_params_create(ps, "u", 1, &shape, (filo_init){FILO_INIT_UNIFORM, -1, 1}, FILO_PARAM_WEIGHT, &u));
    OK(filo_params_create(ps, "z", 1, &shape, (filo_init){FILO_INIT_UNIFORM, -1, 1}, FILO_PARAM_WEIGHT, &z));
    filo_ddp_options o = filo_ddp_defaults();
    o.bucket_bytes = 24; /* one parameter a bucket */
    filo_ddp *ddp;
    OK(filo_ddp_init(comm, ps, &o, &ddp));
    filo_var *loss, *scaled;
    OK(filo_ag_sum(rank == 0 ? u : w, FILO_ALL_DIMS, 0, &loss));
    if (rank == 0) {
        filo_var *lw, *sum;
        OK(filo_ag_sum(w, FILO_ALL_DIMS, 0, &lw));
        OK(filo_ag_add(loss, lw, &sum));
        filo_var_free(lw);
        filo_var_free(loss);
        loss = sum;
    }
    OK(filo_ag_binary_scalar(FILO_BINARY_MUL, loss, (double)(rank + 1), 0, &scaled));
    OK(filo_backward(scaled, NULL, 0));
    OK(filo_ddp_finish(ddp));
    /* d/dw: (rank + 1) on every rank, averaged: (W + 1) / 2; d/du: 1 on rank 0 only: 1 / W. */
    float gw[5], gu[5];
    CHECK(filo_var_grad(w) && filo_var_grad(u), "w or u has no gradient after the finish");
    CHECK(!filo_var_grad(z), "z, used by no rank, got a gradient");
    OK(filo_tensor_to_host(filo_var_grad(w), gw, sizeof gw));
    OK(filo_tensor_to_host(filo_var_grad(u), gu, sizeof gu));
    for (int i = 0; i < 5; i++) {
        CHECK(fabsf(gw[i] - (float)(world + 1) / 2) < 1e-6f, "w grad %g, want %g", gw[i], (world + 1) / 2.0);
        CHECK(fabsf(gu[i] - 1.0f / (float)world) < 1e-6f, "u grad %g, want %g", gu[i], 1.0 / world);
    }
    filo_var_free(scaled);
    filo_var_free(loss);
    filo_ddp_free(ddp);
    filo_params_free(ps);
}

int main(int argc, char **argv)
{
    filo_dist_env env;
    OK(filo_dist_env_detect(&env));
    g_rank = env.rank;
    filo_device dev;
    OK(filo_device_parse(argc > 1 ? argv[1] : "cpu", &dev));
    filo_comm_options copts = {.timeout_s = 120};
    filo_comm *comm;
    OK(filo_comm_init(&env, dev, &copts, &comm));
    const int rank = filo_comm_rank(comm), world = filo_comm_size(comm);

    filo_bert_config cfg;
    OK(filo_bert_config_preset("tiny", VOCAB, 3, &cfg));
    cfg.hidden_size = 32;
    cfg.num_attention_heads = 1; /* head dim 32: the fused attention takes 32, 64 or 128 */
    cfg.intermediate_size = 64;
    cfg.max_position_embeddings = 32;
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0;
    cfg.classifier_dropout = 0.0;

    /* Different seeds per rank: the broadcast makes them rank 0's model. */
    filo_bert *m = new_model(&cfg, dev, 11 + (uint64_t)rank);
    filo_ddp_options o = filo_ddp_defaults();
    o.bucket_bytes = 16 << 10;
    filo_ddp *ddp;
    OK(filo_ddp_init(comm, m->params, &o, &ddp));
    OK(filo_ddp_check_equal(ddp));
    filo_optimizer *opt = new_optimizer(m, dev);
    filo_bert *ref = NULL;
    filo_optimizer *ref_opt = NULL;
    if (rank == 0) {
        ref = new_model(&cfg, dev, 11);
        ref_opt = new_optimizer(ref, dev);
        CHECK(max_param_diff(m, ref) == 0.0, "rank 0's model changed at the broadcast");
    }

    train(comm, ddp, m, opt, ref, ref_opt, 0, STEPS, 1, dev);
    filo_ddp_stats st;
    filo_ddp_stats_get(ddp, &st);
    CHECK(st.buckets > 2, "only %d buckets at 16 KiB", st.buckets);
    CHECK(st.reductions == STEPS, "%lld reductions", (long long)st.reductions);
    CHECK(st.launched_in_backward > 0, "no bucket started inside the backward (%lld at finish)",
          (long long)st.launched_at_finish);
    filo_ddp_trace_event ev[64];
    int n_ev = filo_ddp_trace(ddp, ev, 64);
    CHECK(n_ev == st.buckets, "trace has %d events for %d buckets", n_ev, st.buckets);
    if (rank == 0) {
        printf("ddp_check: world %d on %s (%s / %s), %d buckets (largest %zu bytes); last step:\n", world, argv[1],
               filo_comm_host_backend(comm), filo_comm_device_backend(comm), st.buckets, st.bucket_bytes_max);
        for (int i = 0; i < n_ev && i < 64; i++)
            printf("  bucket %2d: %2d params %7zu bytes  started %8.3f ms  done %8.3f ms  %s\n", ev[i].bucket,
                   ev[i].n_params, ev[i].bytes, ev[i].start_s * 1e3, ev[i].end_s * 1e3,
                   ev[i].in_backward ? "inside backward" : "at finish");
        printf("ddp_check: %lld of %lld bucket launches inside the backward\n", (long long)st.launched_in_backward,
               (long long)(st.launched_in_backward + st.launched_at_finish));
        double d = max_param_diff(m, ref);
        printf("ddp_check: after %d steps, max |ddp - single process| = %.3g\n", STEPS, d);
        CHECK(d <= 1e-5, "ddp and the single process differ by %g", d);
    }

    train(comm, ddp, m, opt, ref, ref_opt, STEPS, 2, 2, dev);
    OK(filo_ddp_check_equal(ddp));
    if (rank == 0) {
        double d = max_param_diff(m, ref);
        printf("ddp_check: after 2 more steps of 2 micro-steps, max diff = %.3g\n", d);
        CHECK(d <= 1e-5, "accumulation: ddp and the single process differ by %g", d);
    }
    filo_ddp_free(ddp);

    check_unused(comm, dev);

    /* A rank with another model: every rank gets the same clear error. */
    if (world > 1) {
        filo_bert_config other;
        OK(filo_bert_config_copy(&cfg, &other));
        if (rank == world - 1)
            other.intermediate_size = 48;
        filo_bert *odd = new_model(&other, dev, 3);
        filo_ddp *bad = NULL;
        filo_status s = filo_ddp_init(comm, odd->params, NULL, &bad);
        CHECK(s == FILO_ERR_COMM && !bad, "a differing model gave %s", filo_status_name(s));
        CHECK(strstr(filo_last_error(), "intermediate.dense.weight") && strstr(filo_last_error(), "[48, 32]"),
              "the error does not name the parameter and shapes: %s", filo_last_error());
        if (rank == 0)
            printf("ddp_check: a differing rank: %s\n", filo_last_error());
        filo_bert_free(odd);
        filo_bert_config_free(&other);
    }

    OK(filo_barrier(comm));
    filo_optimizer_free(opt);
    filo_optimizer_free(ref_opt);
    filo_bert_free(ref);
    filo_bert_free(m);
    filo_bert_config_free(&cfg);
    filo_comm_free(comm);
    if (rank == 0)
        printf("ddp_check: ok\n");
    return 0;
}
