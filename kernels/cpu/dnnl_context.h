/* Internal: the oneDNN engine and streams the CPU kernels share (matmul, convolution). */
#ifndef FILO_KERNELS_CPU_DNNL_CONTEXT_H
#define FILO_KERNELS_CPU_DNNL_CONTEXT_H

#include <dnnl.h>

#include "filo/status.h"

/* Creates the process's CPU engine (once) and the calling thread's stream (once per thread).
 * After FILO_OK, filo_dnnl_engine() and filo_dnnl_stream() are valid on this thread. */
filo_status filo_dnnl_ready(void);
dnnl_engine_t filo_dnnl_engine(void);
dnnl_stream_t filo_dnnl_stream(void);

/* A failed oneDNN call as a filo error naming the call and the function it was made in. */
filo_status filo_dnnl_fail(dnnl_status_t s, const char *call, const char *where);

#define DNNL_TRY(call)                                               \
    do {                                                             \
        dnnl_status_t dnnl_try_s_ = (call);                          \
        if (dnnl_try_s_ != dnnl_success)                             \
            return filo_dnnl_fail(dnnl_try_s_, #call, __func__);     \
    } while (0)

#endif
