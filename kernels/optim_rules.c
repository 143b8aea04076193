/* Dispatch of the optimizer rules, the step prologue and the loss-scale update to
 * kernels/cpu/optim_rules.c or kernels/cuda/optim_rules.cu by device. The arguments were checked
 * by nn/optimizer.c, which builds the descriptors. */
#include "backend.h"
#include "error.h"
#include "optim_rules_backend.h"

filo_status filo_rule_step_run(filo_device dev, const filo_rule_desc *d)
{
    if (dev.type == FILO_DEVICE_CPU)
        return filo_cpu_rule_step(d);
    void *stream = NULL;
    FILO_TRY(filo_stream_current_native(dev, &stream));
    return FILO_CUDA_CALL(filo_cuda_rule_step(d, stream));
}

filo_status filo_step_prepare(filo_device dev, const filo_prepare_desc *d)
{
    if (dev.type == FILO_DEVICE_CPU) {
        filo_step_prepare_run(d);
        return FILO_OK;
    }
    void *stream = NULL;
    FILO_TRY(filo_stream_current_native(dev, &stream));
    return FILO_CUDA_CALL(filo_cuda_step_prepare(d, stream));
}

filo_status filo_scaler_update(filo_device dev, const filo_scaler_desc *d)
{
    if (dev.type == FILO_DEVICE_CPU) {
        filo_scaler_update_run(d);
        return FILO_OK;
    }
    void *stream = NULL;
    FILO_TRY(filo_stream_current_native(dev, &stream));
    return FILO_CUDA_CALL(filo_cuda_scaler_update(d, stream));
}
