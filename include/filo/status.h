/* Status codes and the thread-local error message every filo call leaves behind. */
#ifndef FILO_STATUS_H
#define FILO_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum filo_status {
    FILO_OK = 0,
    FILO_ERR_INVALID_ARG,  /* a bad argument: null pointer, out-of-range value */
    FILO_ERR_SHAPE,        /* shapes, strides or view arguments that do not fit */
    FILO_ERR_DTYPE,        /* unsupported or mismatched dtype */
    FILO_ERR_DEVICE,       /* wrong, mismatched or missing device */
    FILO_ERR_OOM,          /* an allocation failed even after freeing cached memory */
    FILO_ERR_CUDA,         /* a CUDA runtime, cuBLAS, cuDNN or NCCL call failed */
    FILO_ERR_IO,           /* a file could not be read or written */
    FILO_ERR_FORMAT,       /* a malformed file or header */
    FILO_ERR_UNSUPPORTED,  /* valid, but not implemented for this case */
    FILO_ERR_STATE,        /* the call is not valid in the object's current state (double free...) */
    FILO_ERR_INTERNAL,     /* a bug in filo */
    FILO_ERR_TIMEOUT,      /* a collective or a rendezvous did not finish within its deadline */
    FILO_ERR_COMM          /* another rank failed, disconnected, or disagrees (shapes, order) */
} filo_status;

/* The message of the last failed filo call on this thread: what failed and where.
 * Empty when no call has failed since the last filo_error_clear(). Never NULL. */
const char *filo_last_error(void);
void filo_error_clear(void);
/* "FILO_ERR_SHAPE" and so on. */
const char *filo_status_name(filo_status status);

#ifdef __cplusplus
}
#endif
#endif
