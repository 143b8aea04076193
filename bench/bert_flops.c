/* The two halves of model FLOPs utilization: the FLOPs a BERT step must do, counted from its
 * configuration (not from what the kernels happen to execute, so recomputation and padding do
 * not inflate it), and the vendor's datasheet peak of the GPUs the benchmarks are run on. */
#include <string.h>

#include "model_bench.h"

double bench_bert_forward_flops(const filo_bert_config *c, int64_t batch, int64_t seq)
{
    const double b = (double)batch, l = (double)seq, tokens = b * l;
    const double h = (double)c->hidden_size, ffn = (double)c->intermediate_size;
    double per_layer = 2.0 * tokens * h * (3.0 * h) /* Q, K, V */
                       + 2.0 * b * l * l * h        /* QK^T, summed over the heads */
                       + 2.0 * b * l * l * h        /* PV */
                       + 2.0 * tokens * h * h       /* attention output */
                       + 2.0 * tokens * h * ffn * 2.0; /* FFN up and down */
    double head = 2.0 * b * h * h + 2.0 * b * h * (double)c->num_labels; /* pooler, classifier */
    return (double)c->num_hidden_layers * per_layer + head;
}

/* Dense (no sparsity) peaks from NVIDIA's datasheets, in TFLOP/s: bf16/f16 tensor cores, and f32
 * on the CUDA cores (filo's f32 GEMM uses TF32 only when FILO_TF32=1). The SXM parts are named
 * "H100 80GB HBM3" / "H200" by the driver; the PCIe and NVL parts say so. */
double bench_datasheet_peak(const char *device_name, filo_dtype dtype)
{
    static const struct {
        const char *match, *unless;
        double half, f32;
    } gpus[] = {
        {"H100", "PCIe", 989.4, 66.9}, /* SXM */
        {"H100 PCIe", NULL, 756.0, 51.2},
        {"H200", NULL, 989.4, 66.9},
        {"A100", NULL, 312.0, 19.5},
    };
    if (!device_name)
        return 0;
    for (size_t i = 0; i < sizeof gpus / sizeof gpus[0]; i++) {
        if (!strstr(device_name, gpus[i].match) || (gpus[i].unless && strstr(device_name, gpus[i].unless)))
            continue;
        if (strstr(device_name, "NVL")) /* H100 NVL and H200 NVL: lower clocks and power */
            return 1e12 * (dtype == FILO_F32 ? 60.0 : 835.0);
        if (dtype == FILO_BF16 || dtype == FILO_F16)
            return 1e12 * gpus[i].half;
        return dtype == FILO_F32 ? 1e12 * gpus[i].f32 : 0;
    }
    return 0;
}
