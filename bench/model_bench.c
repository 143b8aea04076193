/* `filo bench train` and `filo bench infer`: whole BERT steps (forward, loss, backward, AdamW; or
 * the forward alone) on synthetic token ids, as a user's fine-tuning or serving loop runs them.
 * Each step ends with a device synchronize, so a step's time is what the host waits for it; the
 * warm-up steps (the allocator filling its cache, oneDNN and cuBLASLt building their plans) are
 * left out and the medians reported. The ids are a fixed formula of the position, so that
 * bench/compare feeds PyTorch exactly the same batch. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "harness.h"
#include "model_bench.h"

#define BENCH_VOCAB 30522 /* bert-base-uncased's vocabulary, for the presets */
#define BENCH_LABELS 2

typedef struct model_options {
    const char *config;
    long seq, batch, steps, warmup;
    int bf16, json, train, have_batch;
    filo_device device;
} model_options;

typedef struct model_run {
    filo_bert *model;
    filo_optimizer *opt;
    filo_tensor *ids, *labels;
    filo_nn_ctx ctx;
    filo_generator dropout_gen;
} model_run;

typedef struct model_result {
    double p50_ms, p90_ms, flops_fwd, peak_measured, peak_datasheet;
    filo_alloc_stats mem;
    uint64_t raw_after_warmup;
    long rss_bytes;
    int64_t params;
} model_result;

static const char *cmd_name(int train) { return train ? "filo bench train" : "filo bench infer"; }

static void usage(FILE *f, int train)
{
    fprintf(f,
            "usage: %s [--config tiny|mini|small|medium|base|DIR] [--seq N] [--batch N] [--bf16]\n"
            "                        [--steps N] [--warmup N] [--device cpu|cuda:N] [--json]\n"
            "  %s on synthetic token ids; prints samples/s, tokens/s, model FLOPs\n"
            "  utilization, p50/p90 step time, peak memory and the raw allocations after warm-up.\n"
            "  --config   a preset (vocabulary 30522) or a folder with a BERT config.json (default mini)\n"
            "  --seq      tokens per sequence (default 128)     --batch  sequences per step (default 16\n"
            "             on the CPU, 32 on a GPU)\n"
            "  --bf16     bf16 autocast                          --steps  measured steps (default 20)\n"
            "  --warmup   steps before timing (default 3; 10 on a GPU)\n"
            "  --json     one JSON object instead of the text report\n",
            cmd_name(train),
            train ? "full training steps (forward, backward, AdamW)" : "forward passes (no gradients)");
}

/* An integer argument in [min, max], or a message naming the option. */
static int parse_long(int train, const char *flag, const char *v, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || errno || x < min || x > max) {
        fprintf(stderr, "%s: %s wants an integer from %ld to %ld, got '%s'\n", cmd_name(train), flag, min, max,
                v ? v : "(nothing)");
        return 0;
    }
    *out = x;
    return 1;
}

/* 0: parsed; 1: --help printed; 2: a bad argument (message printed). */
static int parse_args(int argc, char **argv, model_options *o)
{
    const int t = o->train;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout, t);
            return 1;
        } else if (!strcmp(a, "--bf16")) {
            o->bf16 = 1;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--config") || !strcmp(a, "--device") || !strcmp(a, "--seq") ||
                   !strcmp(a, "--batch") || !strcmp(a, "--steps") || !strcmp(a, "--warmup")) {
            if (!v) {
                fprintf(stderr, "%s: %s needs a value\n", cmd_name(t), a);
                return 2;
            }
            i++;
            if (!strcmp(a, "--config")) {
                o->config = v;
            } else if (!strcmp(a, "--device")) {
                if (filo_device_parse(v, &o->device) != FILO_OK) {
                    fprintf(stderr, "%s: --device %s: %s\n", cmd_name(t), v, filo_last_error());
                    return 2;
                }
            } else if (!strcmp(a, "--seq")) {
                if (!parse_long(t, a, v, 1, 1 << 20, &o->seq))
                    return 2;
            } else if (!strcmp(a, "--batch")) {
                if (!parse_long(t, a, v, 1, 1 << 20, &o->batch))
                    return 2;
                o->have_batch = 1;
            } else if (!strcmp(a, "--steps")) {
                if (!parse_long(t, a, v, 1, 1000000, &o->steps))
                    return 2;
            } else if (!parse_long(t, a, v, 1, 1000000, &o->warmup)) {
                return 2;
            }
        } else {
            fprintf(stderr, "%s: unknown argument '%s'\n", cmd_name(t), a);
            usage(stderr, t);
            return 2;
        }
    }
    return 0;
}

/* A preset name, else a model folder holding config.json. */
static int load_config(const model_options *o, filo_bert_config *cfg)
{
    static const char *presets[] = {"tiny", "mini", "small", "medium", "base"};
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(o->config, presets[i])) {
            if (filo_bert_config_preset(o->config, BENCH_VOCAB, BENCH_LABELS, cfg) == FILO_OK)
                return 0;
            fprintf(stderr, "%s: --config %s: %s\n", cmd_name(o->train), o->config, filo_last_error());
            return 1;
        }
    size_t n = strlen(o->config) + sizeof "/config.json";
    char *path = malloc(n);
    if (!path)
        return 1;
    snprintf(path, n, "%s/config.json", o->config);
    filo_status st = filo_bert_config_load(path, cfg);
    free(path);
    if (st != FILO_OK) {
        fprintf(stderr,
                "%s: --config '%s' is neither a preset (tiny, mini, small, medium, base) nor a model folder: %s\n",
                cmd_name(o->train), o->config, filo_last_error());
        return 1;
    }
    return 0;
}

/* Token id at flat position i of the batch: a multiplicative hash, never the padding id 0. The
 * PyTorch side (bench/compare/torch_worker.py) computes the same ids. */
static int64_t token_id(int64_t i, int64_t vocab)
{
    return 1 + (int64_t)((uint64_t)i * 2654435761u % 4294967296u % (uint64_t)(vocab - 1));
}

static filo_status run_setup(const model_options *o, const filo_bert_config *cfg, model_run *r)
{
    const int64_t n = o->batch * o->seq, shape[2] = {o->batch, o->seq};
    int64_t *ids = malloc(sizeof *ids * (size_t)n), *labels = malloc(sizeof *labels * (size_t)o->batch);
    filo_status st = ids && labels ? FILO_OK : FILO_ERR_OOM;
    for (int64_t i = 0; st == FILO_OK && i < n; i++)
        ids[i] = token_id(i, cfg->vocab_size);
    for (int64_t b = 0; st == FILO_OK && b < o->batch; b++)
        labels[b] = b % cfg->num_labels;
    if (st == FILO_OK)
        st = filo_tensor_from_host(o->device, FILO_I64, 2, shape, ids, &r->ids);
    if (st == FILO_OK)
        st = filo_tensor_from_host(o->device, FILO_I64, 1, shape, labels, &r->labels);
    free(ids);
    free(labels);
    if (st == FILO_OK)
        st = filo_bert_new(cfg, FILO_BERT_SEQUENCE_CLASSIFY, o->device, 1, &r->model);
    filo_generator_init(&r->dropout_gen, 7);
    r->ctx = filo_nn_ctx_make(o->train, &r->dropout_gen);
    r->ctx.autocast = o->bf16 ? FILO_BF16 : FILO_F32;
    if (st == FILO_OK && o->train) {
        filo_optimizer_config oc = filo_optimizer_defaults(FILO_OPT_ADAMW);
        oc.lr = 1e-4;
        st = filo_optimizer_new(o->device, &oc, &r->opt);
        if (st == FILO_OK)
            st = filo_optimizer_add_params(r->opt, r->model->params);
    }
    return st;
}

static void run_free(model_run *r)
{
    filo_optimizer_free(r->opt);
    filo_bert_free(r->model);
    filo_tensor_free(r->ids);
    filo_tensor_free(r->labels);
}

/* One step, complete on the device when it returns. */
static filo_status run_step(const model_options *o, model_run *r)
{
    filo_bert_inputs in = {.input_ids = r->ids};
    filo_var *logits = NULL, *loss = NULL;
    filo_status st = filo_bert_forward(r->model, &r->ctx, &in, &logits);
    if (st == FILO_OK && o->train) {
        st = filo_bert_loss(r->model, logits, r->labels, &loss);
        if (st == FILO_OK)
            st = filo_backward(loss, NULL, 0);
        if (st == FILO_OK)
            st = filo_optimizer_step(r->opt, NULL);
        filo_optimizer_zero_grad(r->opt);
    }
    filo_var_free(logits);
    filo_var_free(loss);
    if (st == FILO_OK)
        st = filo_device_synchronize(o->device);
    return st;
}

/* The nearest-rank percentile of sorted values. */
static double percentile(const double *sorted, long n, double p)
{
    long k = (long)(p * (double)n + 0.999999) - 1;
    return sorted[k < 0 ? 0 : k >= n ? n - 1 : k];
}

static int step_failed(const model_options *o, const char *when, long step, filo_status st)
{
    fprintf(stderr, "%s: %s step %ld: %s (%s)\n", cmd_name(o->train), when, step + 1, filo_status_name(st),
            filo_last_error());
    return 1;
}

static int measure(const model_options *o, model_run *r, model_result *res)
{
    filo_status st;
    for (long i = 0; i < o->warmup; i++)
        if ((st = run_step(o, r)) != FILO_OK)
            return step_failed(o, "warm-up", i, st);
    filo_alloc_stats before;
    if ((st = filo_alloc_stats_get(o->device, &before)) != FILO_OK)
        return step_failed(o, "warm-up", o->warmup - 1, st);
    double *ms = malloc(sizeof *ms * (size_t)o->steps);
    if (!ms)
        return step_failed(o, "measured", 0, FILO_ERR_OOM);
    for (long i = 0; i < o->steps; i++) {
        double t0 = bench_now_ms();
        if ((st = run_step(o, r)) != FILO_OK) {
            free(ms);
            return step_failed(o, "measured", i, st);
        }
        ms[i] = bench_now_ms() - t0;
    }
    qsort(ms, (size_t)o->steps, sizeof *ms, bench_cmp_double);
    res->p50_ms = o->steps % 2 ? ms[o->steps / 2] : 0.5 * (ms[o->steps / 2 - 1] + ms[o->steps / 2]);
    res->p90_ms = percentile(ms, o->steps, 0.9);
    free(ms);
    if ((st = filo_alloc_stats_get(o->device, &res->mem)) != FILO_OK)
        return step_failed(o, "measured", o->steps - 1, st);
    res->raw_after_warmup = res->mem.raw_allocs - before.raw_allocs;
    struct rusage ru;
    res->rss_bytes = getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss * 1024L : 0;
    return 0;
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void report_json(const model_options *o, const filo_bert_config *cfg, const filo_device_info *info,
                        const model_result *res)
{
    char dev[32];
    filo_device_format(o->device, dev, sizeof dev);
    const double step_s = res->p50_ms * 1e-3, flops = res->flops_fwd * (o->train ? 3.0 : 1.0);
    printf("{\"benchmark\":\"%s\",\"device\":\"%s\",\"device_name\":", o->train ? "train" : "infer", dev);
    json_string(info->name);
    printf(",\"emulated\":%s,\"config\":", info->emulated ? "true" : "false");
    json_string(o->config);
    printf(",\"layers\":%lld,\"hidden\":%lld,\"heads\":%lld,\"intermediate\":%lld,\"vocab\":%lld,\"params\":%lld,"
           "\"seq\":%ld,\"batch\":%ld,\"dtype\":\"%s\",\"warmup_steps\":%ld,\"steps\":%ld,",
           (long long)cfg->num_hidden_layers, (long long)cfg->hidden_size, (long long)cfg->num_attention_heads,
           (long long)cfg->intermediate_size, (long long)cfg->vocab_size, (long long)res->params, o->seq, o->batch,
           o->bf16 ? "bf16" : "f32", o->warmup, o->steps);
    printf("\"samples_per_s\":%.6g,\"tokens_per_s\":%.6g,\"step_ms_p50\":%.6g,\"step_ms_p90\":%.6g,"
           "\"model_flops_per_step\":%.6g,\"achieved_flops_per_s\":%.6g,\"measured_peak_flops_per_s\":%.6g,"
           "\"mfu\":%.6g,",
           (double)o->batch / step_s, (double)(o->batch * o->seq) / step_s, res->p50_ms, res->p90_ms, flops,
           flops / step_s, res->peak_measured, flops / step_s / res->peak_measured);
    if (res->peak_datasheet > 0)
        printf("\"datasheet_peak_flops_per_s\":%.6g,\"mfu_datasheet\":%.6g,", res->peak_datasheet,
               flops / step_s / res->peak_datasheet);
    else
        printf("\"datasheet_peak_flops_per_s\":null,\"mfu_datasheet\":null,");
    printf("\"peak_allocated_bytes\":%zu,\"peak_reserved_bytes\":%zu,\"peak_rss_bytes\":%ld,"
           "\"raw_allocs_after_warmup\":%llu,\"filo_version\":\"%d.%d.%d\"}\n",
           res->mem.allocated_peak, res->mem.reserved_peak, res->rss_bytes,
           (unsigned long long)res->raw_after_warmup, FILO_VERSION_MAJOR, FILO_VERSION_MINOR, FILO_VERSION_PATCH);
}

static void report_text(const model_options *o, const filo_bert_config *cfg, const filo_device_info *info,
                        const model_result *res)
{
    char dev[32];
    filo_device_format(o->device, dev, sizeof dev);
    const double step_s = res->p50_ms * 1e-3, flops = res->flops_fwd * (o->train ? 3.0 : 1.0);
    const double mib = 1.0 / (1 << 20);
    printf("%s: BERT %s (%lld layers, hidden %lld, %lld heads, FFN %lld, vocab %lld; %.1fM parameters)\n",
           cmd_name(o->train), o->config, (long long)cfg->num_hidden_layers, (long long)cfg->hidden_size,
           (long long)cfg->num_attention_heads, (long long)cfg->intermediate_size, (long long)cfg->vocab_size,
           (double)res->params * 1e-6);
    printf("  seq %ld, batch %ld, %s on %s (%s)\n", o->seq, o->batch, o->bf16 ? "bf16 autocast" : "f32", dev,
           info->name);
    printf("  %ld warm-up + %ld measured steps (%s)\n", o->warmup, o->steps,
           o->train ? "forward, loss, backward, AdamW" : "forward only");
    printf("  step time      p50 %.2f ms, p90 %.2f ms\n", res->p50_ms, res->p90_ms);
    printf("  throughput     %.1f samples/s, %.0f tokens/s\n", (double)o->batch / step_s,
           (double)(o->batch * o->seq) / step_s);
    printf("  model FLOPs    %.2f GFLOP a step%s, %.3f TFLOP/s achieved\n", flops * 1e-9,
           o->train ? " (3x the forward)" : "", flops / step_s * 1e-12);
    printf("  MFU            %.1f%% of the measured %s GEMM peak (%.3f TFLOP/s)",
           100.0 * flops / step_s / res->peak_measured, o->bf16 ? "bf16" : "f32", res->peak_measured * 1e-12);
    if (res->peak_datasheet > 0)
        printf("; %.1f%% of the datasheet's %.0f TFLOP/s\n", 100.0 * flops / step_s / res->peak_datasheet,
               res->peak_datasheet * 1e-12);
    else
        printf("; no datasheet peak for this device\n");
    printf("  memory         peak allocated %.1f MiB, peak reserved %.1f MiB, process peak RSS %.1f MiB\n",
           (double)res->mem.allocated_peak * mib, (double)res->mem.reserved_peak * mib, (double)res->rss_bytes * mib);
    printf("  raw allocations after warm-up: %llu\n", (unsigned long long)res->raw_after_warmup);
}

int filo_bench_model_main(int argc, char **argv, int train)
{
    model_options o = {.config = "mini", .seq = 128, .batch = 16, .steps = 20, .train = train, .device = filo_cpu()};
    if (filo_cuda_device_count() > 0)
        o.device = filo_cuda(0);
    int pr = parse_args(argc, argv, &o);
    if (pr)
        return pr == 1 ? 0 : 2;
    const int gpu = o.device.type == FILO_DEVICE_CUDA;
    if (!o.have_batch)
        o.batch = gpu ? 32 : 16;
    if (!o.warmup)
        o.warmup = gpu ? 10 : 3;
    filo_bert_config cfg;
    if (load_config(&o, &cfg))
        return 2;
    if (o.seq > cfg.max_position_embeddings) {
        fprintf(stderr, "%s: --seq %ld is over the model's %lld positions\n", cmd_name(train), o.seq,
                (long long)cfg.max_position_embeddings);
        filo_bert_config_free(&cfg);
        return 2;
    }
    filo_device_info info;
    filo_status st = filo_device_info_get(o.device, &info);
    model_run r = {0};
    model_result res = {0};
    int rc = 0;
    if (st == FILO_OK)
        st = run_setup(&o, &cfg, &r);
    if (st != FILO_OK) {
        fprintf(stderr, "%s: setting up the model: %s (%s)\n", cmd_name(train), filo_status_name(st),
                filo_last_error());
        rc = 1;
    }
    if (!rc) {
        /* Inference records no graph, as PyTorch's inference_mode. */
        int prev = filo_grad_set_enabled(train);
        rc = measure(&o, &r, &res);
        filo_grad_set_enabled(prev);
    }
    if (!rc) {
        res.params = filo_params_numel(r.model->params, 1);
        res.flops_fwd = bench_bert_forward_flops(&cfg, o.batch, o.seq);
        res.peak_datasheet =
            info.emulated || !gpu ? 0 : bench_datasheet_peak(info.name, o.bf16 ? FILO_BF16 : FILO_F32);
        /* After the memory readings, so that the GEMM's own buffers do not count in them. */
        bench_options popt = {.device = o.device, .warmup = 2, .reps = 5, .quick = info.emulated};
        if ((st = bench_gemm_peak(&popt, o.bf16 ? FILO_BF16 : FILO_F32, &res.peak_measured)) != FILO_OK) {
            fprintf(stderr, "%s: measuring the GEMM peak: %s (%s)\n", cmd_name(train), filo_status_name(st),
                    filo_last_error());
            rc = 1;
        }
    }
    if (!rc) {
        if (o.json)
            report_json(&o, &cfg, &info, &res);
        else
            report_text(&o, &cfg, &info, &res);
    }
    run_free(&r);
    filo_bert_config_free(&cfg);
    return rc;
}
