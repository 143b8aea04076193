/* Model inputs from text: [CLS] a [SEP] (b [SEP]), truncated as Hugging Face's tokenizers library
 * truncates, then padded; and the way back from ids to text, as BertTokenizer.decode. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "vocab.h"

void filo_encoding_free(filo_encoding *e)
{
    if (!e)
        return;
    free(e->ids);
    free(e->type_ids);
    free(e->attention_mask);
    free(e->begin);
    free(e->end);
    free(e->sequence);
    memset(e, 0, sizeof *e);
}

/* The tokenizers library stops tokenizing a text once it holds max_len pieces, at the end of a
 * word; on a pair that cut decides which text counts as the longer. A word's later pieces are
 * the "##" ones (BERT's pre-tokenizer makes every '#' a word of its own). */
static int cut_at_word(const filo_tokenizer *tok, const filo_pieces *p, int max_len)
{
    int n = 0;
    while (n < p->n && n < max_len) {
        n++;
        while (n < p->n && tok->lens[p->ids[n]] > 2 && tok->tokens[p->ids[n]][0] == '#' &&
               tok->tokens[p->ids[n]][1] == '#')
            n++;
    }
    return n;
}

/* The lengths a (and b) keep to fit `room` tokens, as the tokenizers library's truncate_encodings
 * decides them from the cut lengths: longest_first on a pair gives the shorter its length when it
 * fits in half the room and the longer the rest, else splits the room in halves with the odd
 * token to the longer one (to b on a tie); only_first and only_second cut the excess from their
 * text (encode_pieces has checked that it is long enough). A room of 0 empties both. */
static void truncate_lengths(filo_truncation how, int room, int has_pair, int *na, int *nb)
{
    if (room == 0) {
        *na = *nb = 0;
        return;
    }
    if (*na + *nb <= room)
        return;
    int excess = *na + *nb - room;
    if (how == FILO_TRUNCATE_ONLY_FIRST) {
        *na -= excess;
    } else if (how == FILO_TRUNCATE_ONLY_SECOND) {
        *nb -= excess;
    } else if (!has_pair) {
        *na = room;
    } else {
        int swap = *na > *nb;
        int n1 = swap ? *nb : *na, n2 = swap ? *na : *nb;
        n2 = n1 > room ? n1 : (n1 > room - n1 ? n1 : room - n1);
        if (n1 + n2 > room) {
            n1 = room / 2;
            n2 = n1 + room % 2;
        }
        *na = swap ? n2 : n1;
        *nb = swap ? n1 : n2;
    }
}

static filo_status alloc_encoding(filo_encoding *e, int n)
{
    size_t k = n > 0 ? (size_t)n : 1;
    e->ids = malloc(sizeof *e->ids * k);
    e->type_ids = malloc(sizeof *e->type_ids * k);
    e->attention_mask = malloc(sizeof *e->attention_mask * k);
    e->begin = malloc(sizeof *e->begin * k);
    e->end = malloc(sizeof *e->end * k);
    e->sequence = malloc(sizeof *e->sequence * k);
    if (!e->ids || !e->type_ids || !e->attention_mask || !e->begin || !e->end || !e->sequence) {
        filo_encoding_free(e);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory for an encoding of %d tokens", n);
    }
    return FILO_OK;
}

static void put(filo_encoding *e, int i, int32_t id, int32_t type, int32_t mask, int32_t b, int32_t en, int8_t seq)
{
    e->ids[i] = id;
    e->type_ids[i] = type;
    e->attention_mask[i] = mask;
    e->begin[i] = b;
    e->end[i] = en;
    e->sequence[i] = seq;
}

static int put_pieces(filo_encoding *e, int at, const filo_pieces *p, int n, int8_t seq)
{
    for (int i = 0; i < n; i++)
        put(e, at + i, p->ids[i], seq, 1, p->begin[i], p->end[i], seq);
    return at + n;
}

static filo_status encode_pieces(const filo_tokenizer *tok, const filo_pieces *a, const filo_pieces *b,
                                 const filo_encode_options *o, filo_encoding *out)
{
    if (tok->sp.cls < 0 || tok->sp.sep < 0)
        return FILO_FAIL(FILO_ERR_FORMAT, "the vocabulary has no %s token", tok->sp.cls < 0 ? "[CLS]" : "[SEP]");
    int specials = b ? 3 : 2;
    int na = a->n, nb = b ? b->n : 0;
    if (o->max_len > 0 && (int64_t)na + nb + specials > o->max_len) {
        if (o->max_len < specials)
            return FILO_FAIL(FILO_ERR_SHAPE, "max_len %d cannot hold the %d special tokens of a %s", o->max_len,
                             specials, b ? "pair" : "single text");
        if (o->truncation == FILO_TRUNCATE_NONE)
            return FILO_FAIL(FILO_ERR_SHAPE, "%d tokens exceed max_len %d and truncation is off", na + nb + specials,
                             o->max_len);
        int room = o->max_len - specials;
        /* only_first (only_second) must leave the other text whole: it fails, as the library does,
         * when that text alone fills the room, and only_second when there is no second text */
        if (room > 0 && o->truncation == FILO_TRUNCATE_ONLY_SECOND && !b)
            return FILO_FAIL(FILO_ERR_SHAPE, "only_second truncation of a single text (%d tokens over max_len %d)",
                             na + specials, o->max_len);
        if (room > 0 && ((o->truncation == FILO_TRUNCATE_ONLY_FIRST && nb >= room) ||
                         (o->truncation == FILO_TRUNCATE_ONLY_SECOND && na >= room)))
            return FILO_FAIL(FILO_ERR_SHAPE,
                             "%s truncation: the %s text alone has %d tokens, no fewer than the %d that max_len %d "
                             "leaves for both texts",
                             o->truncation == FILO_TRUNCATE_ONLY_FIRST ? "only_first" : "only_second",
                             o->truncation == FILO_TRUNCATE_ONLY_FIRST ? "second" : "first",
                             o->truncation == FILO_TRUNCATE_ONLY_FIRST ? nb : na, room, o->max_len);
        na = cut_at_word(tok, a, o->max_len);
        nb = b ? cut_at_word(tok, b, o->max_len) : 0;
        truncate_lengths(o->truncation, room, b != NULL, &na, &nb);
    }
    int n_real = na + nb + specials;
    int n = o->pad_to > n_real ? o->pad_to : n_real;
    if (n > n_real && tok->sp.pad < 0)
        return FILO_FAIL(FILO_ERR_FORMAT, "padding to %d asked, but the vocabulary has no [PAD] token", o->pad_to);
    FILO_TRY(alloc_encoding(out, n));
    int at = 0;
    put(out, at++, tok->sp.cls, 0, 1, 0, 0, -1);
    at = put_pieces(out, at, a, na, 0);
    put(out, at++, tok->sp.sep, 0, 1, 0, 0, -1);
    if (b) {
        at = put_pieces(out, at, b, nb, 1);
        put(out, at++, tok->sp.sep, 1, 1, 0, 0, -1);
    }
    while (at < n)
        put(out, at++, tok->sp.pad, 0, 0, 0, 0, -1);
    out->n = n;
    out->n_real = n_real;
    out->truncated = (a->n - na) + (b ? b->n - nb : 0);
    return FILO_OK;
}

filo_status filo_tokenizer_encode(const filo_tokenizer *tok, const char *text, const char *pair,
                                  const filo_encode_options *opts, filo_encoding *out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    memset(out, 0, sizeof *out);
    if (!tok || !text)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "tokenizer or text is NULL");
    filo_encode_options o = {0, FILO_TRUNCATE_LONGEST_FIRST, 0};
    if (opts)
        o = *opts;
    if (o.max_len < 0 || o.pad_to < 0 || o.truncation < FILO_TRUNCATE_LONGEST_FIRST || o.truncation > FILO_TRUNCATE_NONE)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "encode options {max_len %d, truncation %d, pad_to %d}", o.max_len,
                         (int)o.truncation, o.pad_to);
    filo_pieces a = {0}, b = {0};
    filo_status s = filo_tokenizer_pieces(tok, text, strlen(text), &a);
    if (s != FILO_OK)
        filo_error_wrap(s, "the first text");
    else if (pair && (s = filo_tokenizer_pieces(tok, pair, strlen(pair), &b)) != FILO_OK)
        filo_error_wrap(s, "the second text (the pair)");
    if (s == FILO_OK)
        s = encode_pieces(tok, &a, pair ? &b : NULL, &o, out);
    filo_pieces_free(&a);
    filo_pieces_free(&b);
    return s;
}

/* A growing string. */
typedef struct text_buf {
    char *s;
    size_t n, cap;
} text_buf;

static int buf_add(text_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->n + n + 1 > cap)
            cap *= 2;
        char *g = realloc(b->s, cap);
        if (!g)
            return -1;
        b->s = g;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return 0;
}

/* Python's str.replace(from, to) over the whole string, into a new buffer. */
static int replace_all(text_buf *b, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    if (!strstr(b->s, from))
        return 0;
    text_buf r = {0};
    const char *p = b->s, *hit;
    int failed = 0;
    while (!failed && (hit = strstr(p, from))) {
        failed = buf_add(&r, p, (size_t)(hit - p)) || buf_add(&r, to, tl);
        p = hit + fl;
    }
    failed = failed || buf_add(&r, p, strlen(p));
    if (failed) {
        free(r.s);
        return -1;
    }
    free(b->s);
    *b = r;
    return 0;
}

static void strip_spaces(text_buf *b)
{
    size_t lead = 0;
    while (b->s[lead] == ' ')
        lead++;
    while (b->n > lead && b->s[b->n - 1] == ' ')
        b->n--;
    memmove(b->s, b->s + lead, b->n - lead);
    b->n -= lead;
    b->s[b->n] = '\0';
}

static int is_special(const filo_tokenizer *tok, int32_t id)
{
    return id == tok->sp.pad || id == tok->sp.unk || id == tok->sp.cls || id == tok->sp.sep || id == tok->sp.mask;
}

filo_status filo_tokenizer_decode(const filo_tokenizer *tok, const int32_t *ids, int n, int skip_special, char **out)
{
    if (!out)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!tok || (!ids && n > 0) || n < 0)
        return FILO_FAIL(FILO_ERR_INVALID_ARG, "tokenizer or ids is NULL, or n %d < 0", n);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok->n)
            return FILO_FAIL(FILO_ERR_INVALID_ARG, "ids[%d] = %d is not in the vocabulary [0, %d)", i, (int)ids[i],
                             (int)tok->n);
    /* " ".join(tokens).replace(" ##", "").strip(), then clean_up_tokenization's replacements */
    static const char *const cleanup[][2] = {{" .", "."},    {" ?", "?"},     {" !", "!"},     {" ,", ","},
                                             {" ' ", "'"},   {" n't", "n't"}, {" 'm", "'m"},   {" 's", "'s"},
                                             {" 've", "'ve"}, {" 're", "'re"}};
    text_buf b = {0};
    int failed = buf_add(&b, "", 0), first = 1;
    for (int i = 0; i < n && !failed; i++) {
        if (skip_special && is_special(tok, ids[i]))
            continue;
        failed = (!first && buf_add(&b, " ", 1)) || buf_add(&b, tok->tokens[ids[i]], tok->lens[ids[i]]);
        first = 0;
    }
    failed = failed || replace_all(&b, " ##", "");
    if (!failed)
        strip_spaces(&b);
    for (size_t k = 0; k < sizeof cleanup / sizeof cleanup[0] && !failed; k++)
        failed = replace_all(&b, cleanup[k][0], cleanup[k][1]);
    if (failed) {
        free(b.s);
        return FILO_FAIL(FILO_ERR_OOM, "out of host memory decoding %d ids", n);
    }
    *out = b.s;
    return FILO_OK;
}
