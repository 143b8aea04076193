/* Devices (the CPU and CUDA:n), streams and events.
 *
 * Work on a device is enqueued on that device's current stream and does not block the host;
 * only an explicit read to host memory (or a synchronize call) waits. On the CPU, streams
 * run their work when it is enqueued, so every CPU call is complete when it returns. */
#ifndef FILO_DEVICE_H
#define FILO_DEVICE_H

#include <stddef.h>

#include "filo/alloc.h"
#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_device_type { FILO_DEVICE_CPU = 0, FILO_DEVICE_CUDA = 1 } filo_device_type;

typedef struct filo_device {
    filo_device_type type;
    int index; /* 0 for the CPU */
} filo_device;

filo_device filo_cpu(void);
filo_device filo_cuda(int index);
int filo_device_equal(filo_device a, filo_device b);

/* Number of usable CUDA devices: 0 without a GPU or driver, which is not an error. */
int filo_cuda_device_count(void);
/* 1 when this build's CUDA backend is the emulator that runs kernels on the CPU (tests only). */
int filo_cuda_is_emulated(void);

/* Parses "cpu", "cuda" (= cuda:0) or "cuda:N"; checks that the device exists. */
filo_status filo_device_parse(const char *text, filo_device *out);
/* Writes "cpu" or "cuda:N" into buf and returns buf. */
const char *filo_device_format(filo_device device, char *buf, size_t size);
/* FILO_OK when the device exists, FILO_ERR_DEVICE with a message otherwise. */
filo_status filo_device_check(filo_device device);

typedef struct filo_device_info {
    char name[256];
    size_t total_memory;      /* bytes; physical RAM for the CPU */
    int multiprocessors;      /* CUDA SMs; cores for the CPU */
    int compute_major;        /* 0 for the CPU */
    int compute_minor;
    int emulated;             /* 1 for the CUDA emulator */
} filo_device_info;

filo_status filo_device_info_get(filo_device device, filo_device_info *out);
/* Waits for all work on every stream of the device. */
filo_status filo_device_synchronize(filo_device device);

/* The device's caching allocator (see filo/alloc.h): statistics, returning cached memory to the
 * backend, and restarting the peaks. */
filo_status filo_alloc_stats_get(filo_device device, filo_alloc_stats *out);
filo_status filo_alloc_empty_cache(filo_device device);
filo_status filo_alloc_reset_peak(filo_device device);

typedef struct filo_stream filo_stream;
typedef struct filo_event filo_event;

/* The device's default stream: owned by filo, never destroyed by the caller. */
filo_status filo_stream_default(filo_device device, filo_stream **out);
/* The stream ops use on this device for the calling thread (the default stream unless set). */
filo_status filo_stream_current(filo_device device, filo_stream **out);
/* Sets the calling thread's current stream for the stream's device; NULL restores the default. */
filo_status filo_stream_set_current(filo_device device, filo_stream *stream);
filo_status filo_stream_create(filo_device device, filo_stream **out);
void filo_stream_destroy(filo_stream *stream);
filo_device filo_stream_device(const filo_stream *stream);
filo_status filo_stream_synchronize(filo_stream *stream);
/* Later work on stream waits until the event's recorded work is done (no host wait). */
filo_status filo_stream_wait_event(filo_stream *stream, filo_event *event);
/* The backend's handle (cudaStream_t on CUDA, NULL on the CPU). */
void *filo_stream_native(const filo_stream *stream);

filo_status filo_event_create(filo_device device, filo_event **out);
void filo_event_destroy(filo_event *event);
filo_status filo_event_record(filo_event *event, filo_stream *stream);
filo_status filo_event_synchronize(filo_event *event);
/* *done = 1 when the recorded work has completed. */
filo_status filo_event_query(filo_event *event, int *done);
/* Milliseconds between two recorded events. */
filo_status filo_event_elapsed_ms(filo_event *start, filo_event *end, float *ms);

#ifdef __cplusplus
}
#endif
#endif
