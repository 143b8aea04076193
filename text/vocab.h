/* Internal: the tokenizer object — the vocabulary as an id-ordered token list with a hash index,
 * the special ids and the resolved options — shared by the loaders, WordPiece and encoding. */
#ifndef FILO_TEXT_VOCAB_H
#define FILO_TEXT_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "filo/tokenizer.h"

/* The specials kept whole when written in text: [PAD] [UNK] [CLS] [SEP] [MASK]. */
#define VOCAB_MAX_NEVER_SPLIT 5

struct filo_tokenizer {
    filo_tokenizer_options opts;
    int strip;                 /* opts.strip_accents resolved (-1 follows lowercase) */
    int32_t n;
    char **tokens;             /* tokens[id]: NUL-terminated, vocab.txt form */
    uint32_t *lens;            /* byte lengths */
    uint32_t *hashes;          /* hash of each token */
    int32_t *slots;            /* open addressing, linear probing: an id or -1 */
    uint32_t mask;             /* slot count - 1 (a power of two, at least twice n) */
    uint32_t max_word_piece;   /* longest word-initial token, in bytes */
    uint32_t max_cont_piece;   /* longest continuation token without its "##", in bytes */
    filo_special_ids sp;
    int32_t never_split[VOCAB_MAX_NEVER_SPLIT];
    int n_never_split;
};

/* A token list being read, in id order. */
typedef struct vocab_list {
    char **tokens;
    int32_t n, cap;
} vocab_list;

/* Appends a copy of token[0..len). */
int vocab_list_push(vocab_list *l, const char *token, size_t len);
void vocab_list_free(vocab_list *l);

/* Builds a tokenizer from the list (taken over, emptied even on failure) and the options:
 * checks the options, indexes the tokens, rejects duplicates and a missing unk_token. `what` names
 * the source in messages (the file), `unit` what an id is there: "line" (numbered from 1),
 * "entry" or "id". */
filo_status vocab_build(vocab_list *l, const filo_tokenizer_options *opts, const char *unk_token, const char *what,
                        const char *unit, filo_tokenizer **out);

/* The id of the token (prefix ? "##" : "") + s[0..len), or -1. */
int32_t vocab_lookup(const filo_tokenizer *tok, int prefix, const char *s, size_t len);

/* The options made valid ({1, -1, 1, 100} when NULL), or FILO_ERR_INVALID_ARG. */
filo_status vocab_check_options(const filo_tokenizer_options *opts, filo_tokenizer_options *out);

#endif
