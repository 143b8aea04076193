/* The filo command line. */
#define _POSIX_C_SOURCE 200809L
#include <filo/filo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "model_bench.h"

static int fail(const char *what)
{
    fprintf(stderr, "filo: %s: %s\n", what, filo_last_error());
    return 1;
}

static void print_bytes(const char *label, size_t bytes)
{
    printf("  %-22s %.1f MiB\n", label, (double)bytes / (1 << 20));
}

static int cmd_info(void)
{
    int n = filo_cuda_device_count();
    printf("filo %d.%d.%d\n", FILO_VERSION_MAJOR, FILO_VERSION_MINOR, FILO_VERSION_PATCH);
    for (int i = -1; i < n; i++) {
        filo_device d = i < 0 ? filo_cpu() : filo_cuda(i);
        filo_device_info info;
        if (filo_device_info_get(d, &info) != FILO_OK)
            return fail("device info");
        char name[32];
        filo_device_format(d, name, sizeof name);
        if (d.type == FILO_DEVICE_CPU)
            printf("%-8s %s, %d cores, %.1f GiB\n", name, info.name, info.multiprocessors,
                   (double)info.total_memory / (1 << 30));
        else
            printf("%-8s %s, sm_%d%d, %d SMs, %.1f GiB\n", name, info.name, info.compute_major, info.compute_minor,
                   info.multiprocessors, (double)info.total_memory / (1 << 30));
    }
    if (n == 0)
        printf("no CUDA device: filo runs on the CPU\n");
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A tour of the runtime on every device: random draws that agree across backends, strided views
 * made contiguous, the copy rate, and what the caching allocator did. */
static int cmd_tour(void)
{
    if (cmd_info())
        return 1;
    int ndev = 1 + filo_cuda_device_count();
    const int64_t rows = 1024, cols = 1024;
    int64_t shape[2] = {rows, cols};
    float *first = malloc(sizeof(float) * (size_t)(rows * cols));
    float *host = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int i = 0; i < ndev; i++) {
        filo_device d = i == 0 ? filo_cpu() : filo_cuda(i - 1);
        char name[32];
        filo_device_format(d, name, sizeof name);
        printf("\n%s\n", name);
        filo_generator gen;
        filo_generator_init(&gen, 42);
        filo_tensor *x, *xt, *c;
        if (filo_tensor_empty(d, FILO_F32, 2, shape, &x) || filo_tensor_normal(x, &gen, 0.0, 1.0))
            return fail("normal draw");
        if (filo_tensor_to_host(x, host, sizeof(float) * (size_t)(rows * cols)))
            return fail("read back");
        double sum = 0, sq = 0;
        for (int64_t k = 0; k < rows * cols; k++) {
            sum += host[k];
            sq += (double)host[k] * host[k];
        }
        double mean = sum / (double)(rows * cols);
        printf("  1M normal draws: mean %+.4f, std %.4f\n", mean, sqrt(sq / (double)(rows * cols) - mean * mean));
        if (i == 0)
            memcpy(first, host, sizeof(float) * (size_t)(rows * cols));
        else
            printf("  identical to the cpu draws: %s\n",
                   memcmp(first, host, sizeof(float) * (size_t)(rows * cols)) == 0 ? "yes" : "NO");
        if (filo_tensor_transpose(x, 0, 1, &xt))
            return fail("transpose");
        const int reps = 5;
        double t0 = now_s();
        for (int r = 0; r < reps; r++) {
            if (filo_tensor_contiguous(xt, &c))
                return fail("contiguous");
            filo_tensor_free(c);
        }
        if (filo_device_synchronize(d))
            return fail("synchronize");
        double dt = (now_s() - t0) / reps;
        printf("  transpose-copy of 4 MiB: %.2f ms (%.1f GB/s read+write)\n", dt * 1e3,
               2.0 * 4.0 * (double)(rows * cols) / dt / 1e9);
        filo_tensor_free(xt);
        filo_tensor_free(x);
        filo_alloc_stats st;
        if (filo_alloc_stats_get(d, &st))
            return fail("allocator stats");
        print_bytes("allocator peak in use", st.allocated_peak);
        print_bytes("allocator reserved", st.reserved_bytes);
        printf("  %-22s %llu (the %d copies reused cached blocks)\n", "raw allocations",
               (unsigned long long)st.raw_allocs, reps);
    }
    free(first);
    free(host);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: filo <command>\n"
               "  finetune --model DIR | --config NAME --vocab FILE, --train FILE --out DIR ...\n"
               "         fine-tune BERT on a labelled TSV/CSV/JSONL file, keeping the best epoch\n"
               "  predict --model DIR --input FILE|- [--output FILE]\n"
               "         one JSON object of predictions per input\n"
               "  tokenize --vocab FILE [--cased] [--max-len N] [--pair]\n"
               "         the BERT token ids of each line of standard input\n"
               "  info   list the devices filo can use\n"
               "  tour   run the runtime on every device: random draws, copies, allocator stats\n"
               "  bench kernels [--device D] [--quick] ...\n"
               "         time each fused kernel and key op against the machine's measured ceilings\n"
               "  bench train|infer [--config NAME|DIR] [--seq N] [--batch N] [--bf16] [--json] ...\n"
               "         BERT training steps or forward passes: throughput, MFU, step times, memory\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "info") == 0)
        return cmd_info();
    if (strcmp(argv[1], "tour") == 0)
        return cmd_tour();
    if (strcmp(argv[1], "finetune") == 0)
        return filo_cmd_finetune(argc - 2, argv + 2);
    if (strcmp(argv[1], "predict") == 0)
        return filo_cmd_predict(argc - 2, argv + 2);
    if (strcmp(argv[1], "bench") == 0)
        return filo_bench_main(argc - 2, argv + 2);
    if (strcmp(argv[1], "tokenize") == 0)
        return filo_cmd_tokenize(argc - 2, argv + 2);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "filo: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
