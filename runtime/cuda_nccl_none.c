/* comm_nccl in a build without CUDA: there is no device to reduce on, so a communicator is a
 * host one (filo_comm_init never asks for NCCL, since cuda:N does not exist in such a build). */
#include "comm_internal.h"
#include "error.h"

static filo_status no_nccl(const char *where)
{
    return filo_error_set(FILO_ERR_UNSUPPORTED, where, "this build of filo has no CUDA backend, so no NCCL");
}

int comm_nccl_available(void) { return 0; }

filo_status comm_nccl_open(int rank, int world, int device_index, comm_host_exec_fn exec, void *ctx,
                           double deadline, comm_nccl **out)
{
    (void)rank; (void)world; (void)device_index; (void)exec; (void)ctx; (void)deadline;
    if (out)
        *out = NULL;
    return no_nccl(__func__);
}

filo_status comm_nccl_all_reduce(comm_nccl *n, void *buf, size_t count, filo_dtype dt, filo_reduce_op op,
                                 void *stream, const comm_call *call)
{
    (void)n; (void)buf; (void)count; (void)dt; (void)op; (void)stream; (void)call;
    return no_nccl(__func__);
}

filo_status comm_nccl_broadcast(comm_nccl *n, void *buf, size_t bytes, int root, void *stream, const comm_call *call)
{
    (void)n; (void)buf; (void)bytes; (void)root; (void)stream; (void)call;
    return no_nccl(__func__);
}

filo_status comm_nccl_all_gather(comm_nccl *n, const void *in, size_t bytes, void *out, void *stream,
                                 const comm_call *call)
{
    (void)n; (void)in; (void)bytes; (void)out; (void)stream; (void)call;
    return no_nccl(__func__);
}

filo_status comm_nccl_poll(comm_nccl *n)
{
    (void)n;
    return FILO_OK;
}

void comm_nccl_abort(comm_nccl *n) { (void)n; }
void comm_nccl_free(comm_nccl *n) { (void)n; }
