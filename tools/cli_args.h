/* Argument parsing shared by the filo subcommands: numbers and devices with errors that name the
 * command, the flag and the value. Each returns 0, or prints "filo CMD: ..." and returns 2. */
#ifndef FILO_TOOLS_CLI_ARGS_H
#define FILO_TOOLS_CLI_ARGS_H

#include <filo/device.h>

/* An integer in [lo, hi]. */
int cli_parse_long(const char *cmd, const char *flag, const char *value, long lo, long hi, long *out);
/* A finite number in [lo, hi]. */
int cli_parse_double(const char *cmd, const char *flag, const char *value, double lo, double hi, double *out);
/* "cpu", "cuda" (cuda:0) or "cuda:N", checked to exist. */
int cli_parse_device(const char *cmd, const char *value, filo_device *out);
/* The device to use when the user names none: cuda:0 when there is a GPU, else the CPU. */
filo_device cli_default_device(void);

#endif
