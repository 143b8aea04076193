/* What the example programs share: failing loudly on a filo error, command-line numbers with
 * range checks, a wall clock, host-side random draws from a filo generator (so a checkpoint's
 * saved generator state also restores the data order), and a loss history kept on the device
 * until it is printed (reading a loss every step would make a CUDA step wait for the host). */
#ifndef FILO_EXAMPLE_H
#define FILO_EXAMPLE_H

#include <stdint.h>

#include "filo/filo.h"

/* Runs a filo call; on failure prints where, the status and filo's message, and exits 1.
 * Examples are programs, not libraries: there is nothing to unwind. */
#define EX_CHECK(expr) ex_check((expr), #expr, __FILE__, __LINE__)
void ex_check(filo_status s, const char *expr, const char *file, int line);

/* Prints "prog: message" to stderr and exits 1. */
void ex_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Option values: the whole text must be a number in [lo, hi], else ex_die naming the option. */
long ex_parse_long(const char *opt, const char *text, long lo, long hi);
double ex_parse_double(const char *opt, const char *text, double lo, double hi);
uint64_t ex_parse_u64(const char *opt, const char *text);
/* argv[*i + 1] for option argv[*i] (advancing *i), or ex_die when it is missing. */
const char *ex_option_value(int argc, char **argv, int *i);

/* Monotonic seconds. */
double ex_now(void);

/* n uniform 32-bit draws from gen (Philox, as the library's own draws), advancing it. */
void ex_random_u32(filo_generator *gen, uint32_t *out, int64_t n);
/* A uniformly shuffled permutation of 0..n-1 (Fisher-Yates on gen). */
void ex_permutation(filo_generator *gen, int64_t *perm, int64_t n);

/* Losses (0-dim device tensors) gathered between two reports; read in one go. */
typedef struct ex_loss_log {
    filo_tensor **items;
    int n, cap;
} ex_loss_log;
/* Keeps a handle on the loss variable's value (no copy, no wait). */
void ex_loss_log_push(ex_loss_log *log, const filo_var *loss);
/* Mean of the gathered losses (reads them: waits for the device), then empties the log. */
double ex_loss_log_mean(ex_loss_log *log);
void ex_loss_log_free(ex_loss_log *log);

#endif
