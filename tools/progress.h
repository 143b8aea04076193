/* Training progress for the filo commands.
 *
 * On a terminal: one line rewritten in place, at most 10 times a second (and always at the end of
 * an epoch and at the last step):
 *     finetune epoch 2/3 [########--------]  67% 240/360 loss 0.4123 5230 tok/s 00:42<00:21
 * The loss there is an exponential moving average (0.95, bias-corrected, as fastai shows it).
 * Elsewhere (a pipe, a log file): plain lines every log_every steps and at the end of each epoch,
 * each with the mean loss over the steps since the line before:
 *     finetune: epoch 1/3 step 50/360 loss 0.6931 5230 tok/s elapsed 00:10 eta 01:02
 *     finetune: epoch 1/3 done: step 120/360 loss 0.5502 5230 tok/s elapsed 00:24
 * Rates and the ETA count from progress_begin. While a bar is shown, print through progress_note
 * (not to stderr directly), so the bar is cleared first and redrawn below the message.
 *
 *     progress p;
 *     progress_begin(&p, total_steps, "finetune", &(progress_options){.steps_per_epoch = n});
 *     for (...) { ...; progress_update(&p, step, loss, tokens_in_batch); }
 *     progress_note(&p, "epoch %d: eval accuracy %.4f", e, acc);
 *     progress_end(&p);
 */
#ifndef FILO_TOOLS_PROGRESS_H
#define FILO_TOOLS_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef enum progress_mode {
    PROGRESS_AUTO = 0, /* a bar when out is a terminal, else plain lines */
    PROGRESS_BAR,
    PROGRESS_PLAIN,
} progress_mode;

typedef struct progress_options {
    FILE *out;               /* NULL: stderr */
    progress_mode mode;
    int64_t steps_per_epoch; /* steps 1..n are epoch 1, and so on; 0: one epoch, not shown */
    int64_t log_every;       /* plain lines every N steps; 0: 50 */
    int width;               /* bar mode: the line's width; 0: the terminal's (80 if unknown) */
    double (*clock)(void);   /* seconds; NULL: the monotonic clock (tests pass their own) */
} progress_options;

/* The reporter's state; its fields are private. */
typedef struct progress {
    progress_options opt;
    char label[48];
    int bar, drawn;
    int64_t total, step, first; /* first: the step before the first update (for the ETA) */
    double t_begin, t_drawn;
    int64_t tokens;
    double ema, ema_weight;             /* the bar's smoothed loss */
    double line_loss, epoch_loss;       /* sums for the plain lines' means */
    int64_t line_steps, epoch_steps;
    int64_t logged;                     /* the step of the last plain line */
} progress;

/* Starts reporting a run of total_steps steps; opt may be NULL (all defaults). */
void progress_begin(progress *p, int64_t total_steps, const char *label, const progress_options *opt);
/* Step `step` of total_steps (1-based; a resumed run starts above 1) finished with this loss (NaN:
 * none) and this many tokens. */
void progress_update(progress *p, int64_t step, double loss, int64_t tokens);
/* Prints one line (no newline needed) without breaking the bar; after progress_end it just prints,
 * and p NULL prints to stderr. */
void progress_note(progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Finishes the bar's line and prints "label: N steps in T, R tok/s". */
void progress_end(progress *p);

#endif
