/* The vocabulary table: tokens in id order and an open-addressing hash index over them, so that
 * WordPiece's many candidate lookups per word cost one hash and usually one comparison. */
#include "vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u

static uint32_t fnv_bytes(uint32_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * FNV_PRIME;
    return h;
}

static uint32_t hash_piece(int prefix, const char *s, size_t len)
{
    return fnv_bytes(prefix ? fnv_bytes(FNV_OFFSET, "##", 2) : FNV_OFFSET, s, len);
}

filo_tokenizer_options filo_tokenizer_options_default(void)
{
    filo_tokenizer_options o = {1, -1, 1, 100};
    return o;
}

filo_status vocab_check_options(const filo_tokenizer_options *opts, filo_tokenizer_options *out)
{
    filo_tokenizer_options o = opts ? *opts : filo_tokenizer_options_default();
    if ((o.lowercase != 0 && o.lowercase != 1) || o.strip_accents < -1 || o.strip_accents > 1 ||
        (o.split_cjk != 0 && o.split_cjk != 1) || o.max_chars_per_word < 1)
        return FILO_FAIL(FILO_ERR_INVALID_ARG,
                         "options {lowercase %d, strip_accents %d, split_cjk %d, max_chars_per_word %d}: want "
                         "lowercase 0/1, strip_accents -1/0/1, split_cjk 0/1, max_chars_per_word >= 1",
                         o.lowercase, o.strip_accents, o.split_cjk, o.max_chars_per_word);
    *out = o;
    return FILO_OK;
}

int vocab_list_push(vocab_list *l, const char *token, size_t len)
{
    if (l->n == l->cap) {
        int32_t cap = l->cap ? l->cap * 2 : 1024;
        char **t = realloc(l->tokens, sizeof *t * (size_t)cap);
        if (!t)
            return -1;
        l->tokens = t;
        l->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, token, len);
    copy[len] = '\0';
    l->tokens[l->n++] = copy;
    return 0;
}

void vocab_list_free(vocab_list *l)
{
    for (int32_t i = 0; i < l->n; i++)
        free(l->tokens[i]);
    free(l->tokens);
    memset(l, 0, sizeof *l);
}

int32_t vocab_lookup(const filo_tokenizer *tok, int prefix, const char *s, size_t len)
{
    uint32_t h = hash_piece(prefix, s, len);
    size_t full = len + (prefix ? 2 : 0);
    for (uint32_t i = h & tok->mask;; i = (i + 1) & tok->mask) {
        int32_t id = tok->slots[i];
        if (id < 0)
            return -1;
        const char *t = tok->tokens[id];
        if (tok->hashes[id] == h && tok->lens[id] == full && (!prefix || (t[0] == '#' && t[1] == '#')) &&
            memcmp(t + (prefix ? 2 : 0), s, len) == 0)
            return id;
    }
}

/* "line 3" (vocab.txt, from 1), "entry 2" (a JSON array, from 0), "id 2" (tokenizer.json). */
static const char *name_id(const char *unit, int32_t id, char *buf, size_t size)
{
    snprintf(buf, size, "%s %d", unit, (int)id + (strcmp(unit, "line") == 0));
    return buf;
}

filo_status vocab_build(vocab_list *l, const filo_tokenizer_options *opts, const char *unk_token, const char *what,
                        const char *unit, filo_tokenizer **out)
{
    *out = NULL;
    filo_tokenizer_options o;
    filo_status s = vocab_check_options(opts, &o);
    if (s != FILO_OK) {
        vocab_list_free(l);
        return s;
    }
    if (l->n == 0) {
        vocab_list_free(l);
        return FILO_FAIL(FILO_ERR_FORMAT, "%s: empty vocabulary", what);
    }
    filo_tokenizer *tok = calloc(1, sizeof *tok);
    uint32_t slots = 1;
    while (slots < 2u * (uint32_t)l->n)
        slots <<= 1;
    if (tok) {
        tok->lens = malloc(sizeof *tok->lens * (size_t)l->n);
        tok->hashes = malloc(sizeof *tok->hashes * (size_t)l->n);
        tok->slots = malloc(sizeof *tok->slots * slots);
    }
    if (!tok || !tok->lens || !tok->hashes || !tok->slots) {
        filo_tokenizer_free(tok);
        vocab_list_free(l);
        return FILO_FAIL(FILO_ERR_OOM, "%s: out of host memory for %d tokens", what, (int)l->n);
    }
    tok->opts = o;
    tok->strip = o.strip_accents < 0 ? o.lowercase : o.strip_accents;
    tok->n = l->n;
    tok->tokens = l->tokens;
    memset(l, 0, sizeof *l);
    tok->mask = slots - 1;
    memset(tok->slots, 0xFF, sizeof *tok->slots * slots);
    for (int32_t id = 0; id < tok->n; id++) {
        const char *t = tok->tokens[id];
        size_t len = strlen(t);
        int cont = len >= 2 && t[0] == '#' && t[1] == '#';
        char where[32], first[32];
        int32_t dup = vocab_lookup(tok, 0, t, len);
        if (dup >= 0) {
            filo_status e = FILO_FAIL(FILO_ERR_FORMAT, "%s: %s: duplicate token '%s' (first at %s)", what,
                                      name_id(unit, id, where, sizeof where), t,
                                      name_id(unit, dup, first, sizeof first));
            filo_tokenizer_free(tok);
            return e;
        }
        tok->lens[id] = (uint32_t)len;
        tok->hashes[id] = hash_piece(0, t, len);
        uint32_t i = tok->hashes[id] & tok->mask;
        while (tok->slots[i] >= 0)
            i = (i + 1) & tok->mask;
        tok->slots[i] = id;
        if (cont && len - 2 > tok->max_cont_piece)
            tok->max_cont_piece = (uint32_t)(len - 2);
        if (!cont && len > tok->max_word_piece)
            tok->max_word_piece = (uint32_t)len;
    }
    tok->sp.pad = filo_tokenizer_id(tok, "[PAD]");
    tok->sp.unk = filo_tokenizer_id(tok, unk_token);
    tok->sp.cls = filo_tokenizer_id(tok, "[CLS]");
    tok->sp.sep = filo_tokenizer_id(tok, "[SEP]");
    tok->sp.mask = filo_tokenizer_id(tok, "[MASK]");
    if (tok->sp.unk < 0) {
        filo_status e = FILO_FAIL(FILO_ERR_FORMAT, "%s: no unknown-word token '%s' in the %d tokens", what, unk_token,
                                  (int)tok->n);
        filo_tokenizer_free(tok);
        return e;
    }
    const int32_t specials[VOCAB_MAX_NEVER_SPLIT] = {tok->sp.pad, tok->sp.unk, tok->sp.cls, tok->sp.sep, tok->sp.mask};
    for (int i = 0; i < VOCAB_MAX_NEVER_SPLIT; i++)
        if (specials[i] >= 0)
            tok->never_split[tok->n_never_split++] = specials[i];
    *out = tok;
    return FILO_OK;
}

void filo_tokenizer_free(filo_tokenizer *tok)
{
    if (!tok)
        return;
    for (int32_t i = 0; tok->tokens && i < tok->n; i++)
        free(tok->tokens[i]);
    free(tok->tokens);
    free(tok->lens);
    free(tok->hashes);
    free(tok->slots);
    free(tok);
}

int32_t filo_tokenizer_vocab_size(const filo_tokenizer *tok) { return tok ? tok->n : 0; }

const filo_tokenizer_options *filo_tokenizer_get_options(const filo_tokenizer *tok)
{
    return tok ? &tok->opts : NULL;
}

const char *filo_tokenizer_token(const filo_tokenizer *tok, int32_t id)
{
    return tok && id >= 0 && id < tok->n ? tok->tokens[id] : NULL;
}

int32_t filo_tokenizer_id(const filo_tokenizer *tok, const char *token)
{
    return tok && token ? vocab_lookup(tok, 0, token, strlen(token)) : -1;
}

filo_special_ids filo_tokenizer_specials(const filo_tokenizer *tok)
{
    filo_special_ids none = {-1, -1, -1, -1, -1};
    return tok ? tok->sp : none;
}
