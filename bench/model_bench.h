/* Whole-model benchmarks (`filo bench train`, `filo bench infer`) and the arithmetic behind their
 * model FLOPs utilization (bench/bert_flops.c). */
#ifndef FILO_BENCH_MODEL_BENCH_H
#define FILO_BENCH_MODEL_BENCH_H

#include <filo/filo.h>

/* Matmul FLOPs (2*m*n*k each) of one forward pass of a BERT sequence classifier over a batch of
 * `batch` sequences of `seq` tokens: per layer the Q, K, V and output projections, the attention
 * scores QK^T and the weighted sum PV, and the two FFN matmuls; then the pooler and the
 * classifier. Embedding lookups, norms, softmax and elementwise work are not counted (the usual
 * model-FLOPs convention: they are a few percent and bound by memory). A training step is 3x the
 * forward (backward = 2x). */
double bench_bert_forward_flops(const filo_bert_config *c, int64_t batch, int64_t seq);

/* The vendor's dense peak in FLOP/s for a GPU named `device_name` (as cudaGetDeviceProperties
 * gives it) at `dtype` (bf16 and f16 on tensor cores; f32 without TF32), or 0 when the device is
 * not one we know (every CPU among them). */
double bench_datasheet_peak(const char *device_name, filo_dtype dtype);

/* `filo bench train|infer ...`: argv excludes "train"/"infer". Returns a process exit code. */
int filo_bench_model_main(int argc, char **argv, int train);

/* `filo bench kernels|train|infer ...`: argv[0] is the subcommand. Returns a process exit code. */
int filo_bench_main(int argc, char **argv);

#endif
