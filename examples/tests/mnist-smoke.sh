#!/bin/sh
# Smoke test of the MNIST example without the download: a synthetic set of 4 images per digit
# (a digit-dependent bar pattern), two short epochs with a checkpoint, a resumed third epoch, and
# the errors for a missing folder and for malformed files.
# Usage: mnist-smoke.sh PATH/TO/mnist WORKDIR [DEVICE]   (DEVICE: cpu by default, or cuda:0)
set -eu
prog="$1"
work="$2"
device="${3:-cpu}"
rm -rf "$work"
mkdir -p "$work/data"

# Image i of digit d: pixel (r, c) is 1 on row band d*2..d*2+4, shifted by i, else 0.
for d in 0 1 2 3 4 5 6 7 8 9; do
    awk -v d="$d" 'BEGIN {
        printf "{\"data\": ["
        first = 1
        for (i = 0; i < 4; i++)
            for (p = 0; p < 784; p++) {
                r = int(p / 28); c = p % 28
                v = (r >= 2 * d + i && r < 2 * d + i + 4 && c > 3 && c < 24) ? 1 : 0
                printf "%s%s", (first ? "" : ","), v
                first = 0
            }
        printf "]}\n"
    }' >"$work/data/$d.json"
done

expect() { # expect FILE TEXT: fail unless FILE contains TEXT
    grep -qF -- "$2" "$1" || { echo "FAIL: expected '$2' in:"; cat "$1"; exit 1; }
}

common="--device $device --data $work/data --batch 8 --max-steps 2 --save $work/ckpt"
# shellcheck disable=SC2086
"$prog" $common --epochs 2 >"$work/run1.log" 2>&1 ||
    { cat "$work/run1.log"; exit 1; }
cat "$work/run1.log"
expect "$work/run1.log" "30 training and 10 test images"
expect "$work/run1.log" "epoch  2/2"
expect "$work/run1.log" "device $device"
expect "$work/run1.log" "img/s"
expect "$work/run1.log" "final test accuracy"
[ -f "$work/ckpt/trainer.json" ] || { echo "FAIL: no checkpoint written"; exit 1; }

# shellcheck disable=SC2086
"$prog" $common --epochs 3 --resume >"$work/run2.log" 2>&1 ||
    { cat "$work/run2.log"; exit 1; }
cat "$work/run2.log"
expect "$work/run2.log" "resumed from $work/ckpt: epoch 2 done, step 4"
expect "$work/run2.log" "epoch  3/3"
if grep -q "epoch  1/3" "$work/run2.log"; then echo "FAIL: the resumed run repeated epoch 1"; exit 1; fi
# A checkpoint that already has every epoch is only evaluated.
# shellcheck disable=SC2086
"$prog" $common --epochs 3 --resume >"$work/run3.log" 2>&1 || { cat "$work/run3.log"; exit 1; }
expect "$work/run3.log" "resumed from $work/ckpt: epoch 3 done, step 6"
grep -F "final test accuracy" "$work/run2.log" | cut -d, -f1 >"$work/acc2"
grep -F "final test accuracy" "$work/run3.log" | cut -d, -f1 >"$work/acc3"
cmp -s "$work/acc2" "$work/acc3" || { echo "FAIL: the evaluated checkpoint differs"; cat "$work/run3.log"; exit 1; }

# Errors: each must fail with a message naming the problem, not crash.
fails_with() { # fails_with TEXT ARGS...: the program must exit 1 and print TEXT
    text="$1"
    shift
    if "$prog" "$@" >"$work/err.log" 2>&1; then echo "FAIL: '$*' succeeded"; exit 1; fi
    expect "$work/err.log" "$text"
}
fails_with "run scripts/fetch-mnist" --data "$work/nowhere"
mkdir -p "$work/bad"
cp "$work"/data/*.json "$work/bad/"
printf '{"data": [0, 0.5,' >"$work/bad/3.json"
fails_with "3.json is not valid JSON" --data "$work/bad"
printf '{"data": [0, 0.5, 1]}' >"$work/bad/3.json"
fails_with "not a positive multiple of 784" --data "$work/bad"
printf '{"pixels": []}' >"$work/bad/3.json"
fails_with "\"data\" array" --data "$work/bad"
rm "$work/bad/3.json"
fails_with "cannot read $work/bad/3.json" --data "$work/bad"
fails_with "--batch wants an integer" --data "$work/data" --batch 0
fails_with "--resume needs --save" --data "$work/data" --resume
echo "mnist smoke test passed"
