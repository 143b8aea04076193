#!/bin/sh
# Smoke test of `filo bench train` and `filo bench infer`: a tiny BERT for a few steps, --json
# with every key present and sane values (model FLOPs as the config gives them, no raw
# allocation after warm-up), a model folder as --config, and clear errors for bad arguments.
# Usage: bench-smoke.sh PATH/TO/filo WORKDIR [DEVICE]
set -eu
filo="$1"
work="$2"
device="${3:-cpu}"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

fail() { echo "FAIL: $*"; exit 1; }
expect() { # expect FILE TEXT
    grep -qF -- "$2" "$1" || { echo "FAIL: expected '$2' in $1:"; cat "$1"; exit 1; }
}
# The value of a key of the one-line JSON object in FILE (numbers, null, true/false or a string
# without its quotes).
value() {
    sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" "$1"
}
# check FILE AWK-CONDITION: the condition over the named keys, e.g. 'samples_per_s > 0'.
check() {
    cond="$2"
    vars=""
    for k in samples_per_s tokens_per_s mfu step_ms_p50 step_ms_p90 peak_allocated_bytes peak_reserved_bytes \
             peak_rss_bytes raw_allocs_after_warmup model_flops_per_step measured_peak_flops_per_s seq batch; do
        vars="$vars -v $k=$(value "$1" $k)"
    done
    # shellcheck disable=SC2086
    awk $vars "BEGIN { exit !($cond) }" || { cat "$1"; fail "$1: not ($cond)"; }
}

# Matmul FLOPs of one forward of the tiny preset (2 layers, hidden 128, FFN 512, 2 labels):
# per layer QKV, QK^T, PV, output, FFN; then pooler and classifier (bench/bert_flops.c).
flops() { # flops BATCH SEQ
    awk -v b="$1" -v s="$2" 'BEGIN { h = 128; f = 512; t = b * s;
        layer = 2*t*h*3*h + 2*b*s*s*h + 2*b*s*s*h + 2*t*h*h + 2*t*h*f*2;
        printf "%.17g", 2*layer + 2*b*h*h + 2*b*h*2 }'
}

common="--device $device --config tiny --seq 16 --batch 3 --steps 3 --warmup 2"
for mode in train infer; do
    # shellcheck disable=SC2086
    "$filo" bench $mode $common --json >$mode.json 2>$mode.err || { cat $mode.err; fail "bench $mode --json"; }
    cat $mode.json
    [ "$(wc -l <$mode.json)" -eq 1 ] || fail "$mode: --json printed more than one line"
    for k in samples_per_s tokens_per_s mfu step_ms_p50 step_ms_p90 peak_allocated_bytes peak_reserved_bytes \
             peak_rss_bytes raw_allocs_after_warmup device model_flops_per_step; do
        expect $mode.json "\"$k\":"
    done
    [ "$(value $mode.json device)" = "$device" ] || fail "$mode: device $(value $mode.json device), not $device"
    [ "$(value $mode.json benchmark)" = "$mode" ] || fail "$mode: benchmark field"
    check $mode.json 'raw_allocs_after_warmup == 0'
    check $mode.json 'seq == 16 && batch == 3'
    check $mode.json 'samples_per_s > 0 && step_ms_p50 > 0 && step_ms_p90 >= step_ms_p50'
    check $mode.json 'tokens_per_s > 0.999 * 16 * samples_per_s && tokens_per_s < 1.001 * 16 * samples_per_s'
    check $mode.json 'samples_per_s < 1.001 * 3000 / step_ms_p50 && samples_per_s > 0.999 * 3000 / step_ms_p50'
    check $mode.json 'peak_allocated_bytes > 0 && peak_reserved_bytes >= peak_allocated_bytes && peak_rss_bytes > 0'
    check $mode.json 'mfu > 0 && measured_peak_flops_per_s > 0'
    [ "$device" = cpu ] && check $mode.json 'mfu < 1'
    [ "$device" = cpu ] && expect $mode.json '"mfu_datasheet":null'
done
want=$(flops 3 16)
check train.json "model_flops_per_step > 0.99999 * 3 * $want && model_flops_per_step < 1.00001 * 3 * $want"
check infer.json "model_flops_per_step > 0.99999 * $want && model_flops_per_step < 1.00001 * $want"

# The text report, bf16 autocast.
# shellcheck disable=SC2086
"$filo" bench train $common --bf16 >bf16.txt 2>&1 || { cat bf16.txt; fail "bench train --bf16"; }
cat bf16.txt
expect bf16.txt "bf16 autocast on $device"
expect bf16.txt "raw allocations after warm-up: 0"
expect bf16.txt "of the measured bf16 GEMM peak"

# A model folder's config.json as --config.
mkdir model
cat >model/config.json <<'EOF'
{"vocab_size": 101, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
 "intermediate_size": 96, "max_position_embeddings": 40, "id2label": {"0": "a", "1": "b", "2": "c"}}
EOF
"$filo" bench infer --device "$device" --config model --seq 40 --batch 2 --steps 2 --warmup 1 --json >dir.json ||
    fail "--config DIR"
expect dir.json '"layers":2,"hidden":64,"heads":2,"intermediate":96,"vocab":101'

# Bad arguments: exit status 2 and a message that names the problem.
bad() { # bad EXPECTED-TEXT ARGS...
    text="$1"
    shift
    if "$filo" "$@" >bad.out 2>&1; then fail "accepted: $*"; fi
    expect bad.out "$text"
}
bad "--seq wants an integer from 1 to" bench train --config tiny --seq 0
bad "--batch wants an integer from 1 to" bench infer --config tiny --batch abc
bad "--steps needs a value" bench train --config tiny --steps
bad "over the model's 512 positions" bench train --config tiny --seq 513
bad "over the model's 40 positions" bench infer --config model --seq 41
bad "neither a preset (tiny, mini, small, medium, base) nor a model folder" bench train --config nosuch
bad "unknown argument '--fast'" bench infer --fast
bad "--device cuda:99" bench train --device cuda:99
bad "unknown benchmark 'speed'" bench speed
"$filo" bench train --help >help.out || fail "--help"
expect help.out "usage: filo bench train"
echo "bench smoke: all passed"
