/* Pieces every transport of filo_comm shares: the clock deadlines are measured on, the
 * description of a call that goes into error messages, and the host reduction itself. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "comm_internal.h"

double comm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *comm_call_describe(int rank, const comm_call *call, char *buf, size_t size)
{
    char amount[32];
    if (call->bytes >= ((size_t)1 << 20))
        snprintf(amount, sizeof amount, "%.1f MiB", (double)call->bytes / (double)(1 << 20));
    else
        snprintf(amount, sizeof amount, "%zu bytes", call->bytes);
    const char *label = call->label ? call->label : "";
    snprintf(buf, size, "rank %d: %s #%lld (%s%s%s)", rank, call->op, (long long)call->seq, label,
             label[0] ? ", " : "", amount);
    return buf;
}

#define REDUCE_LOOP(T)                                                    \
    do {                                                                  \
        T *a = acc;                                                       \
        const T *b = in;                                                  \
        switch (op) {                                                     \
        case FILO_REDUCE_SUM:                                             \
        case FILO_REDUCE_AVG:                                             \
            for (size_t i = 0; i < count; i++)                            \
                a[i] += b[i];                                             \
            break;                                                        \
        case FILO_REDUCE_MAX:                                             \
            for (size_t i = 0; i < count; i++)                            \
                a[i] = b[i] > a[i] ? b[i] : a[i];                         \
            break;                                                        \
        case FILO_REDUCE_MIN:                                             \
            for (size_t i = 0; i < count; i++)                            \
                a[i] = b[i] < a[i] ? b[i] : a[i];                         \
            break;                                                        \
        }                                                                 \
    } while (0)

void comm_reduce_into(void *acc, const void *in, size_t count, filo_dtype dt, filo_reduce_op op)
{
    switch (dt) {
    case FILO_F32: REDUCE_LOOP(float); break;
    case FILO_F64: REDUCE_LOOP(double); break;
    case FILO_I32: REDUCE_LOOP(int32_t); break;
    case FILO_I64: REDUCE_LOOP(int64_t); break;
    default: break; /* comm.c admits only the four dtypes above on host transports */
    }
}

void comm_scale_avg(void *buf, size_t count, filo_dtype dt, int world)
{
    switch (dt) {
    case FILO_F32:
        for (size_t i = 0; i < count; i++)
            ((float *)buf)[i] /= (float)world;
        break;
    case FILO_F64:
        for (size_t i = 0; i < count; i++)
            ((double *)buf)[i] /= (double)world;
        break;
    case FILO_I32:
        for (size_t i = 0; i < count; i++)
            ((int32_t *)buf)[i] /= world;
        break;
    case FILO_I64:
        for (size_t i = 0; i < count; i++)
            ((int64_t *)buf)[i] /= world;
        break;
    default: break;
    }
}
