#!/bin/sh
# Smoke test of the character language model on a few hundred bytes: a few LSTM and GRU steps
# with reports, a mid-training sample and a final one, and the errors for bad inputs.
# Usage: char_lm-smoke.sh PATH/TO/char_lm WORKDIR [DEVICE]   (DEVICE: cpu by default, or cuda:0)
set -eu
prog="$1"
work="$2"
device="${3:-cpu}"
rm -rf "$work"
mkdir -p "$work"
for i in 1 2 3 4 5 6 7 8; do
    printf 'the cat sat on the mat. a dog ran to the log. ' >>"$work/tiny.txt"
done

expect() {
    grep -qF -- "$2" "$1" || { echo "FAIL: expected '$2' in:"; cat "$1"; exit 1; }
}
small="--device $device --text $work/tiny.txt --batch 4 --seq-len 16 --embed 8 --hidden 24 --log-every 3"
for cell in lstm gru; do
    # shellcheck disable=SC2086
    "$prog" $small --cell $cell --steps 6 --sample-every 3 --sample-len 30 --temperature 0.7 \
        >"$work/$cell.log" 2>&1 || { cat "$work/$cell.log"; exit 1; }
    cat "$work/$cell.log"
    expect "$work/$cell.log" "368 bytes"
    expect "$work/$cell.log" "step     6/6"
    expect "$work/$cell.log" "device $device"
    expect "$work/$cell.log" "bits/char"
    expect "$work/$cell.log" "held-out"
    expect "$work/$cell.log" "--- sample at step 3"
    expect "$work/$cell.log" "--- sample (temperature 0.7, seed 1) ---"
done
# The same seed gives the same run, sample included.
# shellcheck disable=SC2086
"$prog" $small --cell lstm --steps 6 --sample-every 3 --sample-len 30 --temperature 0.7 >"$work/again.log" 2>&1
grep -v 'chars/s\|trained' "$work/lstm.log" >"$work/a" && grep -v 'chars/s\|trained' "$work/again.log" >"$work/b"
cmp -s "$work/a" "$work/b" || { echo "FAIL: two runs with one seed differ"; diff "$work/a" "$work/b"; exit 1; }

fails_with() {
    text="$1"
    shift
    if "$prog" "$@" >"$work/err.log" 2>&1; then echo "FAIL: '$*' succeeded"; exit 1; fi
    expect "$work/err.log" "$text"
}
fails_with "cannot read --text $work/missing.txt" --text "$work/missing.txt"
fails_with "need at least" --text "$work/tiny.txt" --batch 64 --seq-len 64
fails_with "--cell wants lstm or gru" --text "$work/tiny.txt" --cell rnn
fails_with "--temperature wants a number" --text "$work/tiny.txt" --temperature -1
echo "char_lm smoke test passed"
