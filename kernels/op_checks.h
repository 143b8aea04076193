/* Internal: argument checks shared by the op groups' dispatch files (kernels/GROUP.c). Each returns
 * FILO_OK or sets an error naming the op, the argument and the tensors involved. */
#ifndef FILO_KERNELS_OP_CHECKS_H
#define FILO_KERNELS_OP_CHECKS_H

#include "filo/tensor.h"

/* `other` (named `what`) must exist and have x's (named `xwhat`) shape, dtype and device. */
filo_status filo_check_like(const char *op, const char *what, const filo_tensor *other, const char *xwhat,
                            const filo_tensor *x);

#endif
