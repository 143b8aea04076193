/* One oneDNN CPU engine per process; a stream per thread, since a oneDNN stream is not meant to
 * be used by several threads at once. */
#include "dnnl_context.h"

#include <pthread.h>

#include "error.h"

static dnnl_engine_t cpu_engine;
static dnnl_status_t cpu_engine_status = dnnl_success;
static pthread_once_t cpu_engine_once = PTHREAD_ONCE_INIT;
static _Thread_local dnnl_stream_t cpu_stream;

static void create_engine(void) { cpu_engine_status = dnnl_engine_create(&cpu_engine, dnnl_cpu, 0); }

filo_status filo_dnnl_fail(dnnl_status_t s, const char *call, const char *where)
{
    return filo_error_set(FILO_ERR_INTERNAL, where, "%s failed with oneDNN status %d", call, (int)s);
}

filo_status filo_dnnl_ready(void)
{
    pthread_once(&cpu_engine_once, create_engine);
    if (cpu_engine_status != dnnl_success)
        return filo_dnnl_fail(cpu_engine_status, "dnnl_engine_create", __func__);
    if (!cpu_stream)
        DNNL_TRY(dnnl_stream_create(&cpu_stream, cpu_engine, dnnl_stream_default_flags));
    return FILO_OK;
}

dnnl_engine_t filo_dnnl_engine(void) { return cpu_engine; }

dnnl_stream_t filo_dnnl_stream(void) { return cpu_stream; }
