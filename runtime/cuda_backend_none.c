/* The CUDA backend of a build without CUDA: there are no CUDA devices, which is not an error.
 * filo_device_check rejects every cuda:N before these functions could be reached. */
#include "backend.h"

#include "error.h"

static filo_status no_cuda(const char *where)
{
    return filo_error_set(FILO_ERR_DEVICE, where, "this build of filo has no CUDA backend");
}

int filo_cuda_backend_count(void) { return 0; }
int filo_cuda_backend_emulated(void) { return 0; }
filo_status filo_cuda_backend_info(int index, filo_device_info *out) { (void)index; (void)out; return no_cuda(__func__); }
filo_status filo_cuda_backend_synchronize(int index) { (void)index; return no_cuda(__func__); }
filo_status filo_cuda_check_launch(const char *where) { return no_cuda(where); }

static filo_status raw_alloc(void *ctx, size_t bytes, void **ptr) { (void)ctx; (void)bytes; (void)ptr; return no_cuda(__func__); }
static void raw_free(void *ctx, void *ptr) { (void)ctx; (void)ptr; }
const filo_raw_ops filo_cuda_raw_ops_template = {NULL, raw_alloc, raw_free, NULL, NULL, NULL};
const filo_raw_ops filo_pinned_raw_ops = {NULL, raw_alloc, raw_free, NULL, NULL, NULL};

filo_status filo_cuda_stream_create(int index, void **native) { (void)index; (void)native; return no_cuda(__func__); }
void filo_cuda_stream_destroy(int index, void *native) { (void)index; (void)native; }
filo_status filo_cuda_stream_synchronize(int index, void *native) { (void)index; (void)native; return no_cuda(__func__); }
filo_status filo_cuda_stream_wait_event(int index, void *stream, void *event) { (void)index; (void)stream; (void)event; return no_cuda(__func__); }
filo_status filo_cuda_event_create(int index, void **native) { (void)index; (void)native; return no_cuda(__func__); }
void filo_cuda_event_destroy(int index, void *native) { (void)index; (void)native; }
filo_status filo_cuda_event_record(int index, void *event, void *stream) { (void)index; (void)event; (void)stream; return no_cuda(__func__); }
filo_status filo_cuda_capture_begin(int index, void *stream) { (void)index; (void)stream; return no_cuda(__func__); }
filo_status filo_cuda_capture_end(int index, void *stream, void **exec) { (void)index; (void)stream; (void)exec; return no_cuda(__func__); }
filo_status filo_cuda_graph_launch(int index, void *exec, void *stream) { (void)index; (void)exec; (void)stream; return no_cuda(__func__); }
void filo_cuda_graph_destroy(int index, void *exec) { (void)index; (void)exec; }
filo_status filo_cuda_event_synchronize(int index, void *event) { (void)index; (void)event; return no_cuda(__func__); }
filo_status filo_cuda_event_query(int index, void *event, int *done) { (void)index; (void)event; (void)done; return no_cuda(__func__); }
filo_status filo_cuda_event_elapsed(int index, void *start, void *end, float *ms) { (void)index; (void)start; (void)end; (void)ms; return no_cuda(__func__); }
filo_status filo_cuda_memcpy_async(int index, void *dst, const void *src, size_t bytes, filo_copy_kind kind, void *stream)
{
    (void)index; (void)dst; (void)src; (void)bytes; (void)kind; (void)stream;
    return no_cuda(__func__);
}
filo_status filo_cuda_memset_async(int index, void *dst, int byte, size_t bytes, void *stream)
{
    (void)index; (void)dst; (void)byte; (void)bytes; (void)stream;
    return no_cuda(__func__);
}
filo_status filo_cuda_blaslt_handle(int index, void **out) { (void)index; (void)out; return no_cuda(__func__); }
filo_status filo_cuda_dnn_handle(int index, void *stream, void **out) { (void)index; (void)stream; (void)out; return no_cuda(__func__); }
