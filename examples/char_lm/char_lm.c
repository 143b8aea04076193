/* A character-level language model: embedding -> LSTM (or GRU) -> linear head over the bytes of
 * a text file, trained with truncated backpropagation through time, AdamW and gradient
 * clipping, then sampled with a temperature.
 *
 * Truncated BPTT: the training text is cut into --batch contiguous streams read side by side,
 * --seq-len characters per step. The recurrent state at the end of one step is the initial
 * state of the next (detached: gradients stop at the step boundary), so the model sees context
 * longer than the window it backpropagates through. When a stream runs out, every stream starts
 * over from a random offset with a zero state, so the windows' boundaries move between passes.
 *
 * The last --val-fraction of the text is held out; its loss shows how much of the drop below the
 * unigram entropy (the best a context-free model can do) is learned structure rather than
 * memorized text. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"
#include "text_data.h"

#ifndef FILO_EXAMPLE_DATA_DIR
#define FILO_EXAMPLE_DATA_DIR "examples/data"
#endif

static const double LN2 = 0.69314718055994530942;

typedef struct options {
    filo_device device;
    char device_name[32];
    const char *text;
    filo_rnn_kind cell;
    int64_t steps, batch, seq_len, embed, hidden;
    int layers;
    double lr, weight_decay, clip, val_fraction, temperature;
    uint64_t seed;
    int64_t log_every, sample_every, sample_len;
    const char *prime;
} options;

typedef struct char_model {
    filo_nn_embedding emb;
    filo_rnn rnn;
    filo_nn_linear head;
    filo_rnn_kind cell;
} char_model;

/* The recurrent state carried between steps: NULL (zeros) or detached [layers, B, H] leaves. */
typedef struct rnn_state {
    filo_var *h, *c;
} rnn_state;

static void usage(FILE *f)
{
    fputs("usage: char_lm [options]\n"
          "  --text FILE          training text (default examples/data/tales.txt)\n"
          "  --device cpu|cuda:N  where to train (default cpu)\n"
          "  --cell lstm|gru      recurrent cell (default lstm)\n"
          "  --steps N            training steps (default 500)\n"
          "  --batch N            parallel streams (default 32)\n"
          "  --seq-len N          characters per step, the BPTT window (default 32)\n"
          "  --embed N            character embedding size (default 32)\n"
          "  --hidden N           recurrent state size (default 192)\n"
          "  --layers N           stacked recurrent layers (default 1)\n"
          "  --lr X               peak learning rate (default 3e-3)\n"
          "  --weight-decay X     AdamW's decoupled weight decay (default 1e-2)\n"
          "  --clip X             global gradient-norm limit, 0 to disable (default 1)\n"
          "  --val-fraction X     held-out tail of the text, 0 to disable (default 0.1)\n"
          "  --seed N             initialization, offsets and sampling (default 1)\n"
          "  --log-every N        report the mean loss every N steps (default 50)\n"
          "  --sample-every N     print a short sample (<= 120 chars) every N steps, 0: only at the end\n"
          "                       (default 250)\n"
          "  --sample-len N       characters in the final sample (default 400)\n"
          "  --temperature X      sampling temperature, 0 = greedy (default 0.8)\n"
          "  --prime TEXT         what samples start from (default \"The \")\n",
          f);
}

static void parse_options(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->device = filo_cpu();
    o->text = FILO_EXAMPLE_DATA_DIR "/tales.txt";
    o->cell = FILO_RNN_LSTM;
    o->steps = 500;
    o->batch = 32;
    o->seq_len = 32;
    o->embed = 32;
    o->hidden = 192;
    o->layers = 1;
    o->lr = 3e-3;
    o->weight_decay = 1e-2;
    o->clip = 1.0;
    o->val_fraction = 0.1;
    o->temperature = 0.8;
    o->seed = 1;
    o->log_every = 50;
    o->sample_every = 250;
    o->sample_len = 400;
    o->prime = "The ";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--text")) {
            o->text = ex_option_value(argc, argv, &i);
        } else if (!strcmp(a, "--device")) {
            EX_CHECK(filo_device_parse(ex_option_value(argc, argv, &i), &o->device));
        } else if (!strcmp(a, "--cell")) {
            const char *v = ex_option_value(argc, argv, &i);
            if (!strcmp(v, "lstm"))
                o->cell = FILO_RNN_LSTM;
            else if (!strcmp(v, "gru"))
                o->cell = FILO_RNN_GRU;
            else
                ex_die("--cell wants lstm or gru, got '%s'", v);
        } else if (!strcmp(a, "--steps")) {
            o->steps = ex_parse_long(a, ex_option_value(argc, argv, &i), 1, 1L << 40);
        } else if (!strcmp(a, "--batch")) {
            o->batch = ex_parse_long(a, ex_option_value(argc, argv, &i), 1, 1 << 16);
        } else if (!strcmp(a, "--seq-len")) {
            o->seq_len = ex_parse_long(a, ex_option_value(argc, argv, &i), 1, 1 << 16);
        } else if (!strcmp(a, "--embed")) {
            o->embed = ex_parse_long(a, ex_option_value(argc, argv, &i), 1, 1 << 16);
        } else if (!strcmp(a, "--hidden")) {
            o->hidden = ex_parse_long(a, ex_option_value(argc, argv, &i), 1, 1 << 16);
        } else if (!strcmp(a, "--layers")) {
            o->layers = (int)ex_parse_long(a, ex_option_value(argc, argv, &i), 1, FILO_RNN_MAX_LAYERS);
        } else if (!strcmp(a, "--lr")) {
            o->lr = ex_parse_double(a, ex_option_value(argc, argv, &i), 0, 10);
        } else if (!strcmp(a, "--weight-decay")) {
            o->weight_decay = ex_parse_double(a, ex_option_value(argc, argv, &i), 0, 10);
        } else if (!strcmp(a, "--clip")) {
            o->clip = ex_parse_double(a, ex_option_value(argc, argv, &i), 0, 1e6);
        } else if (!strcmp(a, "--val-fraction")) {
            o->val_fraction = ex_parse_double(a, ex_option_value(argc, argv, &i), 0, 0.5);
        } else if (!strcmp(a, "--seed")) {
            o->seed = ex_parse_u64(a, ex_option_value(argc, argv, &i));
        } else if (!strcmp(a, "--log-every")) {
            o->log_every = ex_parse_long(a, ex_option_value(argc, argv, &i), 1, 1L << 40);
        } else if (!strcmp(a, "--sample-every")) {
            o->sample_every = ex_parse_long(a, ex_option_value(argc, argv, &i), 0, 1L << 40);
        } else if (!strcmp(a, "--sample-len")) {
            o->sample_len = ex_parse_long(a, ex_option_value(argc, argv, &i), 0, 1 << 24);
        } else if (!strcmp(a, "--temperature")) {
            o->temperature = ex_parse_double(a, ex_option_value(argc, argv, &i), 0, 100);
        } else if (!strcmp(a, "--prime")) {
            o->prime = ex_option_value(argc, argv, &i);
        } else {
            usage(stderr);
            ex_die("unknown option '%s'", a);
        }
    }
    filo_device_format(o->device, o->device_name, sizeof o->device_name);
}

static void model_init(char_model *m, filo_params *ps, const options *o, int vocab)
{
    EX_CHECK(filo_nn_embedding_init(&m->emb, ps, "embedding", vocab, o->embed, -1));
    filo_rnn_config rc = {.kind = o->cell, .input_size = o->embed, .hidden_size = o->hidden, .num_layers = o->layers};
    EX_CHECK(filo_rnn_init(&m->rnn, ps, "rnn", &rc));
    EX_CHECK(filo_nn_linear_init(&m->head, ps, "head", o->hidden, vocab, 1));
    m->cell = o->cell;
}

static void state_reset(rnn_state *s)
{
    filo_var_free(s->h);
    filo_var_free(s->c);
    s->h = s->c = NULL;
}

/* ids [B, L] -> logits [B, L, vocab]; the state goes in and is replaced by the final one,
 * detached so that the next step's backward stops here. */
static filo_var *model_forward(const char_model *m, const filo_nn_ctx *ctx, const filo_tensor *ids, rnn_state *s)
{
    filo_var *e, *out, *hn = NULL, *cn = NULL, *logits;
    EX_CHECK(filo_nn_embedding_forward(&m->emb, ctx, ids, &e));
    EX_CHECK(filo_rnn_forward(&m->rnn, ctx, e, NULL, s->h, s->c, &out, &hn, m->cell == FILO_RNN_LSTM ? &cn : NULL));
    EX_CHECK(filo_nn_linear_forward(&m->head, ctx, out, &logits));
    state_reset(s);
    EX_CHECK(filo_var_detach(hn, &s->h));
    if (cn)
        EX_CHECK(filo_var_detach(cn, &s->c));
    filo_var_free(hn);
    filo_var_free(cn);
    filo_var_free(out);
    filo_var_free(e);
    return logits;
}

static filo_tensor *upload_ids(filo_device dev, int64_t rows, int64_t cols, const int64_t *ids)
{
    const int64_t shape[2] = {rows, cols};
    filo_tensor *t;
    EX_CHECK(filo_tensor_from_host(dev, FILO_I64, 2, shape, ids, &t));
    return t;
}

/* Mean cross-entropy (nats per char) over ids[0..n) read as one stream in windows of seq_len. */
static double evaluate(const options *o, const char_model *m, const int64_t *ids, int64_t n)
{
    int prev = filo_grad_set_enabled(0);
    filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
    filo_cross_entropy_options ce = filo_cross_entropy_defaults();
    ce.reduction = FILO_LOSS_SUM;
    rnn_state s = {0};
    double total = 0;
    int64_t counted = 0;
    for (int64_t pos = 0; pos + 1 < n; pos += o->seq_len) {
        int64_t len = n - 1 - pos < o->seq_len ? n - 1 - pos : o->seq_len;
        filo_tensor *x = upload_ids(o->device, 1, len, ids + pos);
        filo_tensor *y = upload_ids(o->device, 1, len, ids + pos + 1);
        filo_var *logits = model_forward(m, &ctx, x, &s), *loss;
        EX_CHECK(filo_loss_cross_entropy(logits, y, &ce, &loss));
        float v;
        EX_CHECK(filo_tensor_to_host_as(filo_var_value(loss), FILO_F32, &v, sizeof v));
        total += v;
        counted += len;
        filo_var_free(loss);
        filo_var_free(logits);
        filo_tensor_free(x);
        filo_tensor_free(y);
    }
    state_reset(&s);
    filo_grad_set_enabled(prev);
    return total / (double)counted;
}

/* Prints prime followed by len characters drawn one at a time from softmax(logits / temperature)
 * (the most likely one when temperature is 0), with draws from gen. */
static void sample(const options *o, const char_model *m, const text_data *t, int64_t len, filo_generator *gen)
{
    int prev = filo_grad_set_enabled(0);
    filo_nn_ctx ctx = filo_nn_ctx_make(0, NULL);
    int64_t n_prime = 0;
    int64_t *prime = malloc(sizeof *prime * (strlen(o->prime) + 1));
    float *logits = malloc(sizeof *logits * (size_t)t->vocab);
    double *p = malloc(sizeof *p * (size_t)t->vocab);
    if (!prime || !logits || !p)
        ex_die("out of host memory for sampling");
    /* Bytes of the prime that never occur in the text have no id: they are skipped. */
    for (const unsigned char *c = (const unsigned char *)o->prime; *c; c++)
        if (t->id_of[*c] >= 0)
            prime[n_prime++] = t->id_of[*c];
    if (n_prime == 0)
        prime[n_prime++] = t->ids[0];
    for (int64_t i = 0; i < n_prime; i++)
        putchar(t->byte_of[prime[i]]);

    rnn_state s = {0};
    filo_tensor *x = upload_ids(o->device, 1, n_prime, prime);
    for (int64_t k = 0; k < len; k++) {
        filo_var *out = model_forward(m, &ctx, x, &s), *last;
        filo_tensor_free(x);
        int64_t L = filo_var_value(out)->shape[1];
        EX_CHECK(filo_ag_slice(out, 1, L - 1, L, 1, &last));
        EX_CHECK(filo_tensor_to_host_as(filo_var_value(last), FILO_F32, logits, sizeof *logits * (size_t)t->vocab));
        filo_var_free(last);
        filo_var_free(out);
        int64_t next = 0;
        if (o->temperature == 0) {
            for (int c = 1; c < t->vocab; c++)
                if (logits[c] > logits[next])
                    next = c;
        } else {
            double mx = logits[0], sum = 0;
            for (int c = 1; c < t->vocab; c++)
                mx = logits[c] > mx ? logits[c] : mx;
            for (int c = 0; c < t->vocab; c++)
                sum += p[c] = exp((logits[c] - mx) / o->temperature);
            uint32_t r;
            ex_random_u32(gen, &r, 1);
            double u = ((double)r + 0.5) / 4294967296.0 * sum, acc = 0;
            next = t->vocab - 1;
            for (int c = 0; c < t->vocab; c++) {
                acc += p[c];
                if (u < acc) {
                    next = c;
                    break;
                }
            }
        }
        putchar(t->byte_of[next]);
        x = upload_ids(o->device, 1, 1, &next);
    }
    filo_tensor_free(x);
    putchar('\n');
    fflush(stdout);
    state_reset(&s);
    free(prime);
    free(logits);
    free(p);
    filo_grad_set_enabled(prev);
}

int main(int argc, char **argv)
{
    options o;
    parse_options(argc, argv, &o);

    text_data t;
    text_load(o.text, o.batch * (o.seq_len + 1), &t);
    int64_t n_val = (int64_t)(o.val_fraction * (double)t.n);
    if (n_val < o.seq_len + 1)
        n_val = 0; /* too short to say anything: train on all of it */
    int64_t n_train = t.n - n_val;
    int64_t stream_len = n_train / o.batch;
    if (stream_len < o.seq_len + 1)
        ex_die("%s: %lld training bytes make streams of %lld, shorter than --seq-len %lld + 1 (lower --batch)",
               o.text, (long long)n_train, (long long)stream_len, (long long)o.seq_len);
    printf("text: %s, %lld bytes (%lld train, %lld held out), vocabulary %d, unigram entropy %.3f bits/char "
           "(%.3f nats)\n",
           o.text, (long long)t.n, (long long)n_train, (long long)n_val, t.vocab, t.unigram_bits,
           t.unigram_bits * LN2);

    filo_params *ps;
    EX_CHECK(filo_params_new(o.device, o.seed, &ps));
    char_model m;
    model_init(&m, ps, &o, t.vocab);
    filo_optimizer_config cfg = filo_optimizer_defaults(FILO_OPT_ADAMW);
    cfg.lr = o.lr;
    cfg.weight_decay = o.weight_decay;
    filo_optimizer *opt;
    EX_CHECK(filo_optimizer_new(o.device, &cfg, &opt));
    EX_CHECK(filo_optimizer_add_params(opt, ps));
    filo_schedule sched = {.kind = FILO_SCHEDULE_COSINE, .total_steps = o.steps, .min_factor = 0.1};
    sched.warmup_steps = o.steps >= 20 ? (o.steps / 20 < 50 ? o.steps / 20 : 50) : 0;
    EX_CHECK(filo_optimizer_set_schedule(opt, &sched));
    filo_step_options step_opts = filo_step_defaults();
    step_opts.max_grad_norm = o.clip;

    printf("model: embedding(%d, %lld) -> %s(%lld x %d) -> linear(%d), %lld parameters; AdamW lr %g wd %g, "
           "clip %g, batch %lld x seq-len %lld, %lld steps, device %s\n",
           t.vocab, (long long)o.embed, o.cell == FILO_RNN_LSTM ? "LSTM" : "GRU", (long long)o.hidden, o.layers,
           t.vocab, (long long)filo_params_numel(ps, 1), o.lr, o.weight_decay, o.clip, (long long)o.batch,
           (long long)o.seq_len, (long long)o.steps, o.device_name);

    filo_generator offset_gen, sample_gen;
    filo_generator_init(&offset_gen, o.seed ^ 0x6f6666736574ull);
    filo_generator_init(&sample_gen, o.seed ^ 0x73616d706c65ull);
    const int64_t B = o.batch, L = o.seq_len;
    int64_t *xb = malloc(sizeof *xb * (size_t)(B * L)), *yb = malloc(sizeof *yb * (size_t)(B * L));
    if (!xb || !yb)
        ex_die("out of host memory for batches");
    rnn_state state = {0};
    int64_t pos = 0, offset = 0;
    filo_nn_ctx ctx = filo_nn_ctx_make(1, NULL);
    ex_loss_log losses = {0};
    double t_start = ex_now(), t_log = t_start;

    for (int64_t step = 0; step < o.steps; step++) {
        if (step == 0 || offset + pos + L + 1 > stream_len) {
            uint32_t r;
            ex_random_u32(&offset_gen, &r, 1);
            offset = (int64_t)(r % (uint32_t)(stream_len - L)); /* stream_len - L >= 1 */
            pos = 0;
            state_reset(&state);
        }
        for (int64_t b = 0; b < B; b++) {
            const int64_t *src = t.ids + b * stream_len + offset + pos;
            memcpy(xb + b * L, src, sizeof *xb * (size_t)L);
            memcpy(yb + b * L, src + 1, sizeof *yb * (size_t)L);
        }
        pos += L;
        filo_tensor *x = upload_ids(o.device, B, L, xb), *y = upload_ids(o.device, B, L, yb);
        filo_var *logits = model_forward(&m, &ctx, x, &state), *loss;
        EX_CHECK(filo_loss_cross_entropy(logits, y, NULL, &loss));
        EX_CHECK(filo_backward(loss, NULL, 0));
        EX_CHECK(filo_optimizer_step(opt, &step_opts));
        filo_optimizer_zero_grad(opt);
        ex_loss_log_push(&losses, loss);
        filo_var_free(loss);
        filo_var_free(logits);
        filo_tensor_free(x);
        filo_tensor_free(y);

        int64_t done = step + 1;
        if (done % o.log_every == 0 || done == o.steps) {
            int64_t n_steps = losses.n;
            double loss_mean = ex_loss_log_mean(&losses);
            double now = ex_now();
            double rate = (double)(n_steps * B * L) / (now - t_log);
            printf("step %5lld/%lld  loss %.4f (%.3f bits/char)", (long long)done, (long long)o.steps, loss_mean,
                   loss_mean / LN2);
            if (n_val) {
                double v = evaluate(&o, &m, t.ids + n_train, n_val);
                printf("  held-out %.4f (%.3f bits/char)", v, v / LN2);
            }
            printf("  lr %.2e  %6.0f chars/s  %.1f s\n", filo_optimizer_group_lr(opt, 0), rate, now - t_start);
            fflush(stdout);
            t_log = ex_now();
        }
        if (o.sample_every && done % o.sample_every == 0 && done < o.steps) {
            printf("--- sample at step %lld (temperature %g) ---\n", (long long)done, o.temperature);
            sample(&o, &m, &t, o.sample_len < 120 ? o.sample_len : 120, &sample_gen);
            printf("---\n");
            t_log = ex_now();
        }
    }
    printf("trained %lld steps (%.1f epochs of the training text) in %.1f s; unigram entropy %.3f bits/char\n",
           (long long)o.steps, (double)(o.steps * B * L) / (double)n_train, ex_now() - t_start, t.unigram_bits);
    if (o.sample_len > 0) {
        printf("--- sample (temperature %g, seed %llu) ---\n", o.temperature, (unsigned long long)o.seed);
        sample(&o, &m, &t, o.sample_len, &sample_gen);
        printf("---\n");
    }

    state_reset(&state);
    ex_loss_log_free(&losses);
    free(xb);
    free(yb);
    filo_optimizer_free(opt);
    filo_params_free(ps);
    text_free(&t);
    return 0;
}
