/* `filo bench`: picks the benchmark named by its first argument. */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "model_bench.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: filo bench kernels [--device D] [--shapes base|mini] [--quick] ...\n"
               "       filo bench train|infer [--config tiny|mini|small|medium|base|DIR] [--seq N] [--batch N]\n"
               "                              [--bf16] [--steps N] [--warmup N] [--device D] [--json]\n"
               "  kernels  the machine's ceilings, then each fused kernel and key op against them\n"
               "  train    full BERT training steps (forward, backward, AdamW) on synthetic token ids\n"
               "  infer    the same model, forward only\n"
               "  filo bench SUBCOMMAND --help for the options of each\n");
}

int filo_bench_main(int argc, char **argv)
{
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[0], "kernels") == 0)
        return filo_bench_kernels_main(argc - 1, argv + 1);
    if (strcmp(argv[0], "train") == 0 || strcmp(argv[0], "infer") == 0)
        return filo_bench_model_main(argc - 1, argv + 1, argv[0][0] == 't');
    if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "filo bench: unknown benchmark '%s'\n", argv[0]);
    usage(stderr);
    return 2;
}
