/* Training checkpoints: parameters, optimizer state, loss scaler, step, schedule and RNG
 * state, saved so that a resumed run reproduces the uninterrupted one (bitwise on the CPU).
 *
 * A checkpoint is a directory:
 *   model-<step>.safetensors      the parameters under their store names (f32)
 *   optimizer-<step>.safetensors  the optimizer's state tensors and the loss scaler's
 *   trainer.json                  the commit record: format version, step, epoch, the
 *                                 optimizer's kind, config, groups and schedule, every
 *                                 generator's (seed, offset), the two file names with their
 *                                 sizes, and the caller's "extra" JSON object
 * Every file is written through a temporary file, fsync and rename; trainer.json is written
 * last and names the tensor files it belongs to, and files of other steps are removed only after
 * it is committed. A crash at any instant therefore leaves the previous complete checkpoint or
 * the new one, never a mix.
 *
 * Loading fills existing objects built the same way (the same model and optimizer
 * construction): every parameter and state tensor must be present with the same shape; a
 * missing, extra or mis-shaped tensor, a different optimizer kind or group layout, or a file size
 * that disagrees with trainer.json is an error naming it, and nothing is half-loaded into the
 * objects (values are checked before any is copied). */
#ifndef FILO_TRAIN_CHECKPOINT_H
#define FILO_TRAIN_CHECKPOINT_H

#include <stdint.h>

#include "filo/optimizer.h"
#include "filo/params.h"
#include "filo/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FILO_TRAIN_MAX_GENERATORS 8

typedef struct filo_train_state {
    filo_params *params;          /* required */
    filo_optimizer *opt;          /* NULL: none saved / loaded */
    filo_grad_scaler *scaler;     /* NULL: none */
    int n_generators;             /* generators[0..n): dropout, data order, ... */
    filo_generator *generators[FILO_TRAIN_MAX_GENERATORS];
    int64_t step, epoch;          /* the training loop's own counters */
    /* save: NULL or a JSON object text stored as "extra". load: receives a malloc'ed copy of the
     * stored text (NULL when none), freed by the caller. */
    char *extra_json;
} filo_train_state;

filo_status filo_train_checkpoint_save(const char *dir, const filo_train_state *st);
filo_status filo_train_checkpoint_load(const char *dir, filo_train_state *st);
/* 1 when dir holds a committed checkpoint (trainer.json present). */
int filo_train_checkpoint_exists(const char *dir);

#ifdef __cplusplus
}
#endif
#endif
