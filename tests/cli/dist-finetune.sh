#!/bin/sh
# Data-parallel `filo finetune`: two ranks with --batch 4 must end with the parameters one process
# reaches with --batch 8 (the same global batches, averaged gradients, identical steps), within
# 1e-5 in f32, dropout off. Launched by mpirun (when the build has MPI) and by --nproc-per-node
# (TCP), with gradient accumulation, a last batch smaller than the world (one rank trains on a
# stand-in example with weight 0) and token classification (the loss weighted by labelled
# tokens). Then the failures: ranks whose models differ, and a rank killed while training, must
# end every rank with a clear error in bounded time, never a hang.
# Usage: dist-finetune.sh PATH/TO/filo PATH/TO/safetensors-diff WORKDIR DEVICE [MPIEXEC]
#   DEVICE cpu runs everything; cuda:0 (the emulated NCCL path) the --nproc-per-node equivalence.
#   MPIEXEC empty: the build has no MPI, the mpirun cases are skipped.
set -eu
filo="$1"
diff_tool="$2"
work="$3"
device="$4"
mpiexec="${5:-}"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

fail() { echo "FAIL: $*"; exit 1; }
expect() { # expect FILE TEXT
    grep -qF -- "$2" "$1" || { echo "FAIL: expected '$2' in $1:"; cat "$1"; exit 1; }
}
# Two CPU ranks on a small machine: one thread each, as the single process uses, so all runs
# do the same arithmetic in the same order where they can.
FILO_NUM_THREADS=1
OMP_NUM_THREADS=1
export FILO_NUM_THREADS OMP_NUM_THREADS

printf '%s\n' "[PAD]" "[unused0]" "[UNK]" "[CLS]" "[SEP]" "[MASK]" good great bad awful the movie was a plot \
    is very not ada paris london went to in lived . >vocab.txt
# 33 examples: with a global batch of 8, four full batches and one of a single example.
printf 'text\tlabel\n' >train.tsv
for w in good great bad awful; do
    case $w in good | great) l=pos ;; *) l=neg ;; esac
    for frame in "the movie was very %s" "the plot is %s" "a %s movie" "the plot was not very %s" "%s" \
                 "a very %s plot" "the movie was a %s plot" "very very %s"; do
        # shellcheck disable=SC2059
        printf "$frame\t%s\n" "$w" "$l" >>train.tsv
    done
done
printf 'the movie\tneg\n' >>train.tsv
{ head -5 train.tsv; sed -n 18,21p train.tsv; } >eval.tsv
for i in 1 2 3 4 5; do
    echo '{"tokens": ["ada", "went", "to", "paris", "."], "tags": ["B-PER", "O", "O", "B-LOC", "O"]}'
    echo '{"tokens": ["ada", "lived", "in", "london"], "tags": ["B-PER", "O", "O", "B-LOC"]}'
    echo '{"tokens": ["london", "."], "tags": ["B-LOC", "O"]}'
done >ner.jsonl

common="--device $device --vocab vocab.txt --config tiny --max-len 16 --seed 5 --lr 1e-3 --dropout 0 --log-every 1"
same() { # same NAME_A NAME_B: their saved parameters agree within 1e-5
    "$diff_tool" "$1/model.safetensors" "$2/model.safetensors" --tol 1e-5 >"diff-$1-$2.log" ||
        { cat "diff-$1-$2.log"; fail "$1 and $2 differ"; }
    cat "diff-$1-$2.log"
}
run() { # run NAME ARGS...: filo finetune ARGS --out NAME, its output in NAME.log
    name="$1"
    shift
    # shellcheck disable=SC2086
    timeout 300 "$@" >"$name.log" 2>&1 || { cat "$name.log"; fail "$name"; }
}

# shellcheck disable=SC2086
run single "$filo" finetune $common --train train.tsv --eval eval.tsv --epochs 2 --batch 8 --out single
expect single.log "trained 10 steps"
# shellcheck disable=SC2086
run tcp "$filo" finetune $common --train train.tsv --eval eval.tsv --epochs 2 --batch 4 --nproc-per-node 2 --out tcp
cat tcp.log
expect tcp.log "data parallel: 2 ranks, collectives over tcp"
expect tcp.log "batch 4 x 2 ranks x 1 accumulated"
expect tcp.log "trained 10 steps"
expect tcp.log "eval accuracy:"
for f in config.json model.safetensors vocab.txt metrics.jsonl; do
    [ -s "tcp/$f" ] || fail "tcp/$f missing"
done
[ "$(grep -c '"loss"' tcp/metrics.jsonl)" -eq 10 ] || fail "rank 0 should log 10 steps once each"
same single tcp
# Rank 0 logs the global batch's loss: the same numbers as the single process.
l1=$(sed -n 's/.*"step":3,.*"loss":\([^,]*\),.*/\1/p' single/metrics.jsonl)
l2=$(sed -n 's/.*"step":3,.*"loss":\([^,]*\),.*/\1/p' tcp/metrics.jsonl)
awk -v a="$l1" -v b="$l2" 'BEGIN { d = a - b; exit !(a != "" && d < 1e-5 && d > -1e-5) }' ||
    fail "step 3 loss: one process $l1, two ranks $l2"

if [ "$device" != cpu ]; then
    echo "dist finetune ($device): all passed"
    exit 0
fi

# Gradient accumulation: no all-reduce on the first micro-batch, one on the second.
# shellcheck disable=SC2086
run accum1 "$filo" finetune $common --train train.tsv --epochs 1 --batch 8 --grad-accum 2 --out accum1
# shellcheck disable=SC2086
run accum2 "$filo" finetune $common --train train.tsv --epochs 1 --batch 4 --grad-accum 2 --nproc-per-node 2 \
    --out accum2
expect accum2.log "trained 3 steps"
same accum1 accum2
# The comparison can tell runs apart: other training, other parameters.
if "$diff_tool" single/model.safetensors accum1/model.safetensors >diff-other.log; then
    cat diff-other.log
    fail "safetensors-diff finds no difference between different runs"
fi
# Token classification: each rank's loss weighted by its labelled tokens.
# shellcheck disable=SC2086
run ner1 "$filo" finetune $common --task ner --train ner.jsonl --epochs 1 --batch 6 --out ner1
# shellcheck disable=SC2086
run ner2 "$filo" finetune $common --task ner --train ner.jsonl --epochs 1 --batch 3 --nproc-per-node 2 --out ner2
same ner1 ner2
# bf16 autocast trains across ranks (its rounding depends on the batch shapes: not compared).
# shellcheck disable=SC2086
run bf16 "$filo" finetune $common --train train.tsv --max-steps 2 --batch 4 --bf16 --nproc-per-node 2 --out bf16
expect bf16.log "bf16 autocast"

# Inside a launch, --nproc-per-node is refused.
# shellcheck disable=SC2086
if RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 "$filo" finetune $common --train train.tsv \
    --nproc-per-node 2 --out nested >nested.log 2>&1; then
    fail "--nproc-per-node inside a launch"
fi
expect nested.log "--nproc-per-node inside a distributed launch"

# A rank killed during training: the launcher names it, the other rank fails with a message,
# all within bounded time.
# shellcheck disable=SC2086
"$filo" finetune $common --train train.tsv --epochs 500 --batch 4 --nproc-per-node 2 --dist-timeout 60 \
    --out killed >killed.log 2>&1 &
launcher=$!
rank1=""
i=0
while [ $i -lt 600 ] && [ -z "$rank1" ]; do
    if [ -s killed/metrics.jsonl ]; then
        for d in /proc/[0-9]*; do
            [ "$(cut -d' ' -f4 "$d/stat" 2>/dev/null)" = "$launcher" ] || continue
            tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qx RANK=1 && rank1=${d#/proc/}
        done
    fi
    [ -n "$rank1" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$rank1" ] || { kill "$launcher"; cat killed.log; fail "rank 1 never started training"; }
kill -9 "$rank1"
t0=$(date +%s)
while kill -0 "$launcher" 2>/dev/null && [ $(($(date +%s) - t0)) -lt 60 ]; do
    sleep 0.2
done
if kill -0 "$launcher" 2>/dev/null; then
    kill "$launcher"
    cat killed.log
    fail "the launcher still runs 60 s after rank 1 was killed"
fi
if wait "$launcher"; then cat killed.log; fail "a killed rank, and the launcher exits 0"; fi
cat killed.log
expect killed.log "rank 1 was killed by signal 9"
expect killed.log "filo: rank 0:"

if [ -z "$mpiexec" ]; then
    echo "dist finetune: no MPI in this build: the mpirun cases are skipped"
    echo "dist finetune: all passed"
    exit 0
fi
mpirun="$mpiexec --allow-run-as-root --oversubscribe -x FILO_NUM_THREADS -x OMP_NUM_THREADS"
# shellcheck disable=SC2086
run mpi $mpirun -np 2 "$filo" finetune $common --train train.tsv --eval eval.tsv --epochs 2 --batch 4 --out mpi
expect mpi.log "data parallel: 2 ranks, collectives over mpi"
same single mpi
# Ranks whose models differ (MPMD: a tiny and a mini BERT): every rank stops with an error that
# names the first parameter that differs.
mini=$(echo "$common" | sed 's/--config tiny/--config mini/')
# shellcheck disable=SC2086
if timeout 120 $mpirun -np 1 "$filo" finetune $common --train train.tsv --batch 4 --out mpmd : \
    -np 1 "$filo" finetune $mini --train train.tsv --batch 4 --out mpmd >mpmd.log 2>&1; then
    cat mpmd.log
    fail "a tiny and a mini BERT trained together"
fi
cat mpmd.log
[ "$(grep -c . mpmd.log)" -gt 0 ] || fail "no message"
grep -q "the ranks' models" mpmd.log || fail "no message about the models"
grep -q "embeddings" mpmd.log || fail "the message does not name the first differing parameter"
echo "dist finetune: all passed"
