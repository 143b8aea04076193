/* Argument checks shared by the op groups (kernels/op_checks.h). */
#include "op_checks.h"

#include "error.h"

#define DESC_LEN 200

filo_status filo_check_like(const char *op, const char *what, const filo_tensor *other, const char *xwhat,
                            const filo_tensor *x)
{
    char a[DESC_LEN], b[DESC_LEN];
    if (!other)
        return filo_error_set(FILO_ERR_INVALID_ARG, op, "%s is NULL", what);
    int same = other->ndim == x->ndim;
    for (int i = 0; same && i < x->ndim; i++)
        same = other->shape[i] == x->shape[i];
    if (!same)
        return filo_error_set(FILO_ERR_SHAPE, op, "%s %s must have the shape of %s %s", what,
                              filo_tensor_describe(other, a, sizeof a), xwhat, filo_tensor_describe(x, b, sizeof b));
    if (other->dtype != x->dtype)
        return filo_error_set(FILO_ERR_DTYPE, op, "%s %s must have the dtype of %s %s", what,
                              filo_tensor_describe(other, a, sizeof a), xwhat, filo_tensor_describe(x, b, sizeof b));
    if (!filo_device_equal(other->device, x->device))
        return filo_error_set(FILO_ERR_DEVICE, op, "%s %s is not on the device of %s %s", what,
                              filo_tensor_describe(other, a, sizeof a), xwhat, filo_tensor_describe(x, b, sizeof b));
    return FILO_OK;
}
