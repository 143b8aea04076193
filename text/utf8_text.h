/* Internal: UTF-8 decoding and the character classes of BERT's text cleaning, through utf8proc.
 * Where Hugging Face's Python tokenizer and its Rust twin (tokenizers, BertTokenizerFast) differ,
 * these follow the Rust one, whose output the parity fixture records. */
#ifndef FILO_TEXT_UTF8_TEXT_H
#define FILO_TEXT_UTF8_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* Decodes the character at s[0..n), n >= 1: its length in bytes (1 to 4) with *cp set, or 0 when
 * the bytes there are not UTF-8 (a stray or missing continuation byte, an overlong form, a
 * surrogate, a code point above U+10FFFF). */
int text_utf8_decode(const unsigned char *s, size_t n, int32_t *cp);

/* Writes cp as UTF-8 into out: its length (1 to 4). cp must be a valid scalar value. */
int text_utf8_encode(int32_t cp, char *out);

/* The offset of the first byte that does not start a valid UTF-8 character, or len. */
size_t text_utf8_check(const char *s, size_t len);

/* What cleaning does with a character of the original text. */
typedef enum text_clean_class {
    TEXT_CLEAN_KEEP,  /* goes on to normalization */
    TEXT_CLEAN_DROP,  /* NUL, U+FFFD, categories Cc Cf Co Cs except \t \n \r */
    TEXT_CLEAN_SPACE, /* \t \n \r and categories Zs Zl Zp (Rust's char::is_whitespace) */
    TEXT_CLEAN_CJK,   /* a CJK ideograph: a word of its own when split_cjk is on */
} text_clean_class;

text_clean_class text_clean_classify(int32_t cp);

/* BERT's punctuation: ASCII 33-47, 58-64, 91-96, 123-126, and Unicode categories P*. */
int text_is_punct(int32_t cp);

/* The most code points text_normalize_char writes for one character. */
#define TEXT_NORM_MAX 8

/* The normalized form of one character: with strip, its canonical decomposition (NFD) without
 * the nonspacing marks (category Mn); then with lower, each lowercased (U+0130 gives two). Returns
 * the count written to out (0 when only marks were left). */
int text_normalize_char(int32_t cp, int lower, int strip, int32_t *out);

/* Canonical combining class (0 for starters), for NFD's reordering of marks. */
int text_combining_class(int32_t cp);

#endif
