/* Philox4x32-10 counter-based random numbers.
 *
 * A generator is a (seed, offset) pair. Element i of a draw uses the counter block
 * (offset + i / 4) and lane i % 4, so the CPU and CUDA produce identical numbers for the same
 * seed and offset, whatever the launch shape. Each draw advances the offset past what it used. */
#ifndef FILO_RNG_H
#define FILO_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct filo_generator {
    uint64_t seed;
    uint64_t offset; /* in blocks of four 32-bit outputs */
} filo_generator;

void filo_generator_init(filo_generator *gen, uint64_t seed);
/* Reserves enough blocks for n outputs and returns the first block's offset. */
uint64_t filo_generator_advance(filo_generator *gen, uint64_t n);

/* One Philox4x32-10 block: 4 outputs for counter (ctr_lo, ctr_hi) and the 64-bit key. */
void filo_philox4x32(uint64_t counter, uint64_t subsequence, uint64_t key, uint32_t out[4]);

#ifdef __cplusplus
}
#endif
#endif
