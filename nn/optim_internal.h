/* Internal: what nn/optimizer.c needs from nn/schedule.c. */
#ifndef FILO_NN_OPTIM_INTERNAL_H
#define FILO_NN_OPTIM_INTERNAL_H

#include "filo/optimizer.h"
#include "optim_rules_backend.h"

/* FILO_ERR_INVALID_ARG (reported for `op`) unless s is a valid schedule. */
filo_status filo_schedule_check(const filo_schedule *s, const char *op);
/* The schedule as the device kernels take it (NULL: constant 1). */
filo_sched_desc filo_schedule_desc(const filo_schedule *s);

#endif
