/* Philox generator state: a seed and a block offset that every draw advances. */
#include "filo/rng.h"

#include "element.h"

void filo_generator_init(filo_generator *gen, uint64_t seed)
{
    gen->seed = seed;
    gen->offset = 0;
}

uint64_t filo_generator_advance(filo_generator *gen, uint64_t n)
{
    uint64_t first = gen->offset;
    gen->offset += (n + 3) / 4;
    return first;
}

void filo_philox4x32(uint64_t counter, uint64_t subsequence, uint64_t key, uint32_t out[4])
{
    filo_philox_block(counter, subsequence, key, out);
}
