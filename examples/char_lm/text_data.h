/* A text file as a sequence of byte ids for a character language model: the vocabulary is the
 * set of bytes that occur (sorted, so ids do not depend on the order they appear in), and the
 * unigram entropy is the baseline a model that ignores context would reach. */
#ifndef TEXT_DATA_H
#define TEXT_DATA_H

#include <stdint.h>

typedef struct text_data {
    int64_t *ids;          /* n byte ids in [0, vocab) */
    int64_t n;
    int vocab;
    unsigned char byte_of[256]; /* id -> byte */
    int id_of[256];             /* byte -> id, -1 when absent */
    double unigram_bits;        /* entropy of the byte frequencies, bits per char */
} text_data;

/* Reads the file whole; an unreadable file or one shorter than min_len bytes ends the program
 * with a message naming it. */
void text_load(const char *path, int64_t min_len, text_data *t);
void text_free(text_data *t);

#endif
