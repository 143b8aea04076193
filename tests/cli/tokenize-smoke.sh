#!/bin/sh
# Smoke test of `filo tokenize` on a small vocabulary written here: ids of single lines, cased,
# specials in text, --max-len, --pair, and the errors (missing or malformed vocabulary, invalid
# UTF-8 naming the line, a --pair line without a tab, bad arguments).
# Usage: tokenize-smoke.sh PATH/TO/filo WORKDIR
set -eu
filo="$1"
work="$2"
rm -rf "$work"
mkdir -p "$work"
printf '%s\n' '[PAD]' '[UNK]' '[CLS]' '[SEP]' '[MASK]' the fox run '##ning' , '!' 'café' cafe >"$work/vocab.txt"

check() { # check NAME EXPECTED-FILE ARGS... (stdin: the input lines)
    name="$1"
    want="$2"
    shift 2
    "$filo" tokenize "$@" >"$work/$name.out" 2>"$work/$name.err" || { echo "FAIL: $name exited $?"; cat "$work/$name.err"; exit 1; }
    diff -u "$want" "$work/$name.out" || { echo "FAIL: $name output differs"; exit 1; }
}

printf 'The fox, running!\nCaf\303\251\n\nthe [MASK] fox\nthe\tfox\001\n' >"$work/in.txt"
printf '2 5 6 9 7 8 10 3\n2 12 3\n2 3\n2 5 4 6 3\n2 5 6 3\n' >"$work/want.txt"
check uncased "$work/want.txt" --vocab "$work/vocab.txt" <"$work/in.txt"

printf 'caf\303\251 Caf\303\251 the\n' >"$work/cased.in"
printf '2 11 1 5 3\n' >"$work/cased.want"
check cased "$work/cased.want" --vocab "$work/vocab.txt" --cased <"$work/cased.in"

printf 'the fox run\nthe\n' >"$work/max.in"
printf '2 5 6 3\n2 5 3\n' >"$work/max.want"
check max-len "$work/max.want" --vocab "$work/vocab.txt" --max-len 4 <"$work/max.in"

printf 'the fox\trun\n\t\nthe fox the\trunning\n' >"$work/pair.in"
printf '2 5 6 3 7 3\n2 3 3\n2 5 6 5 3 7 8 3\n' >"$work/pair.want"
check pair "$work/pair.want" --vocab "$work/vocab.txt" --pair <"$work/pair.in"
printf '2 5 3 7 3\n' >"$work/pair5.want"
printf 'the fox the\trunning\n' | check pair5 "$work/pair5.want" --vocab "$work/vocab.txt" --pair --max-len 5

expect_fail() { # expect_fail STATUS TEXT ARGS... (stdin: the input)
    status="$1"
    text="$2"
    shift 2
    set +e
    "$filo" tokenize "$@" >"$work/fail.out" 2>"$work/fail.err"
    got=$?
    set -e
    [ "$got" -eq "$status" ] || { echo "FAIL: '$*' exited $got, not $status"; cat "$work/fail.err"; exit 1; }
    grep -qF -- "$text" "$work/fail.err" || { echo "FAIL: expected '$text' in:"; cat "$work/fail.err"; exit 1; }
}
echo fox | expect_fail 1 "cannot open $work/nowhere.txt" --vocab "$work/nowhere.txt"
printf '[UNK]\nfox\nfox\n' >"$work/dup.txt"
echo fox | expect_fail 1 "dup.txt: line 3: duplicate token 'fox' (first at line 2)" --vocab "$work/dup.txt"
printf '["[UNK]", 3' >"$work/bad.json"
echo fox | expect_fail 1 "bad.json:1: not valid JSON" --vocab "$work/bad.json"
printf 'fox\nthe \377fox\n' | expect_fail 1 "line 2: " --vocab "$work/vocab.txt"
printf 'fox\nthe \377fox\n' | expect_fail 1 "invalid UTF-8 at byte 4" --vocab "$work/vocab.txt"
printf 'fox\tthe\nno tab here\n' | expect_fail 1 "line 2 has no tab" --vocab "$work/vocab.txt" --pair
echo fox | expect_fail 2 "--max-len needs an integer" --vocab "$work/vocab.txt" --max-len 1
echo fox | expect_fail 2 "--vocab FILE is required"
echo fox | expect_fail 2 "unknown or incomplete argument '--frobnicate'" --vocab "$work/vocab.txt" --frobnicate
echo "tokenize smoke test passed"
