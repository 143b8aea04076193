#!/bin/sh
# Smoke test of `filo finetune` and `filo predict` on tiny synthetic data with a tiny vocabulary:
# every task trains a few steps and predicts, the output folder loads back, and bad input gives
# an error naming the file and line.
# Usage: finetune-smoke.sh PATH/TO/filo WORKDIR [DEVICE]
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

# The vocabulary: specials, then words and a few continuation pieces.
{
    printf '%s\n' "[PAD]" "[unused0]" "[UNK]" "[CLS]" "[SEP]" "[MASK]"
    for w in good great fine nice bad awful poor sad the movie was a plot is food and very not \
             what who where ada paris london went to in lived , . ? ! ; do
        echo "$w"
    done
    printf '%s\n' "##s" "##ly" "##ed"
} >vocab.txt

# Sentiment: a positive word makes "pos", a negative one "neg"; every sentence frame appears with
# both, so only the sentiment word tells them apart.
pos="good great fine nice"
neg="bad awful poor sad"
printf 'text\tlabel\n' >train.tsv
printf 'text\tlabel\n' >eval.tsv
for round in 1 2 3; do
    for p in $pos; do
        for n in $neg; do
            for w in "$p pos" "$n neg"; do
                set -- $w
                printf 'the movie was very %s\t%s\nthe plot is %s\t%s\n' "$1" "$2" "$1" "$2" >>train.tsv
                printf 'the food was %s and %s\t%s\nwhat a %s movie\t%s\n' "$1" "$1" "$2" "$1" "$2" >>train.tsv
                [ "$round" -eq 1 ] && printf 'a %s plot\t%s\n' "$1" "$2" >>eval.tsv
            done
        done
    done
done

common="--device $device --vocab vocab.txt --config tiny --max-len 32 --batch 16 --seed 3 --log-every 5"
# shellcheck disable=SC2086
"$filo" finetune $common --train train.tsv --eval eval.tsv --out model --epochs 3 --lr 2e-3 \
    >classify.log 2>&1 || { cat classify.log; fail "classify"; }
cat classify.log
expect classify.log "train.tsv: 384 rows -> 384 examples"
expect classify.log "eval accuracy:"
for f in config.json model.safetensors vocab.txt tokenizer_config.json metrics.jsonl training.png; do
    [ -s "model/$f" ] || fail "model/$f missing"
done
expect model/config.json '"BertForSequenceClassification"'
expect model/config.json '"neg"'
expect model/metrics.jsonl '"eval_loss"'
expect model/metrics.jsonl '"accuracy"'
acc=$(sed -n 's/^eval accuracy: \([0-9.]*\)%$/\1/p' classify.log)
awk -v a="$acc" 'BEGIN { exit !(a >= 90) }' || fail "eval accuracy $acc% < 90% on a keyword task"

printf '%s\n' "the movie was great" "what a sad plot" |
    "$filo" predict --model model --input - --device "$device" >pred.jsonl || fail "predict"
cat pred.jsonl
[ "$(wc -l <pred.jsonl)" -eq 2 ] || fail "predict wrote $(wc -l <pred.jsonl) lines for 2 inputs"
expect pred.jsonl '{"label":"pos","probs":{"neg":'
expect pred.jsonl '"logits":{"neg":'
sed -n 2p pred.jsonl | grep -qF '"label":"neg"' || fail "second prediction"
"$filo" predict --model model --input eval.tsv --output pred2.jsonl --device "$device" || fail "predict tsv"
[ "$(wc -l <pred2.jsonl)" -eq 32 ] || fail "predict on eval.tsv"

# Multi-label and regression on the same texts.
printf 'text\tlabel\n' >multi.tsv
printf 'text\tlabel\n' >reg.tsv
for p in $pos; do
    for n in $neg; do
        printf 'the movie was %s\tpositive,movie\nthe food is %s\tnegative,food\n' "$p" "$n" >>multi.tsv
        printf 'the movie was %s\t1.0\nthe food is %s\t-1.0\n' "$p" "$n" >>reg.tsv
    done
done
# shellcheck disable=SC2086
"$filo" finetune $common --task multilabel --train multi.tsv --eval multi.tsv --out multi --epochs 2 --bf16 \
    >multi.log 2>&1 || { cat multi.log; fail "multilabel"; }
expect multi.log "macro_f1"
expect multi.log "bf16 autocast"
expect multi/config.json '"multi_label_classification"'
echo "the movie was good" | "$filo" predict --model multi --input - --device "$device" >multi.jsonl
expect multi.jsonl '"label":['
# shellcheck disable=SC2086
"$filo" finetune $common --task regress --train reg.tsv --eval reg.tsv --out reg --epochs 2 --grad-accum 2 \
    >reg.log 2>&1 || { cat reg.log; fail "regress"; }
expect reg.log "pearson"
expect reg.log "batch 16 x 2 accumulated"
expect reg/config.json '"regression"'

# Token classification (JSONL with word lists) and question answering (SQuAD-style answers).
: >ner.jsonl
: >qa.jsonl
for k in 1 2 3 4 5 6 7 8; do
    echo '{"tokens": ["ada", "went", "to", "paris", "."], "tags": ["B-PER", "O", "O", "B-LOC", "O"]}' >>ner.jsonl
    echo '{"tokens": ["who", "lived", "in", "london", "?"], "tags": ["O", "O", "O", "B-LOC", "O"]}' >>ner.jsonl
    echo '{"question": "where did ada go?", "context": "ada went to paris.", "answers": {"text": ["paris"], "answer_start": [12]}}' >>qa.jsonl
    echo '{"question": "who lived in london?", "context": "ada lived in london.", "answers": "ada"}' >>qa.jsonl
done
# shellcheck disable=SC2086
"$filo" finetune $common --task ner --train ner.jsonl --eval ner.jsonl --out ner --epochs 2 \
    >ner.log 2>&1 || { cat ner.log; fail "ner"; }
expect ner.log "precision"
expect ner/config.json '"BertForTokenClassification"'
echo "ada went to london ." | "$filo" predict --model ner --input - --device "$device" >ner.out
expect ner.out '"tokens":["ada","went","to","london","."],"labels":['
# shellcheck disable=SC2086
"$filo" finetune $common --task qa --train qa.jsonl --eval qa.jsonl --out qa --epochs 2 \
    >qa.log 2>&1 || { cat qa.log; fail "qa"; }
expect qa.log "exact_match"
expect qa/config.json '"BertForQuestionAnswering"'
"$filo" predict --model qa --input qa.jsonl --device "$device" >qa.out
expect qa.out '"answer":'

# Bad input: an error with file:line, or a count with --skip-bad; never a crash.
cp train.tsv bad.tsv
printf 'a line without a label\n' >>bad.tsv
# shellcheck disable=SC2086
if "$filo" finetune $common --train bad.tsv --out bad --epochs 1 >bad.log 2>&1; then fail "bad line accepted"; fi
expect bad.log "bad.tsv:386"
# shellcheck disable=SC2086
"$filo" finetune $common --train bad.tsv --out bad --epochs 1 --max-steps 1 --skip-bad >skip.log 2>&1 ||
    { cat skip.log; fail "--skip-bad"; }
expect skip.log "1 malformed lines skipped"
printf 'text\tlabel\nthe movie was good\tmeh\n' >unseen.tsv
# shellcheck disable=SC2086
if "$filo" finetune $common --train train.tsv --eval unseen.tsv --out bad --epochs 1 >unseen.log 2>&1; then
    fail "unseen eval label accepted"
fi
expect unseen.log "unseen.tsv:2"
expect unseen.log "'meh' was not seen in the training data"
: >empty.tsv
# shellcheck disable=SC2086
if "$filo" finetune $common --train empty.tsv --out bad >empty.log 2>&1; then fail "empty file accepted"; fi
expect empty.log "empty.tsv"
# shellcheck disable=SC2086
if "$filo" finetune $common --train train.tsv --out bad --max-len 4096 >long.log 2>&1; then fail "max-len"; fi
expect long.log "over the model's 512 positions"
# A batch that does not fit (the allocator capped at 64 MiB): a message that suggests a smaller batch.
awk 'BEGIN { srand(1); split("good great bad awful the movie was", w, " ");
             print "text\tlabel";
             for (i = 0; i < 64; i++) { s = ""; for (k = 0; k < 600; k++) s = s w[int(rand() * 7) + 1] " ";
                                        print s "\t" (i % 2 ? "pos" : "neg") } }' >long.tsv
# shellcheck disable=SC2086
if FILO_ALLOC_CONF=max_reserved_mb:64 "$filo" finetune $common --train long.tsv --out oom --max-len 512 --batch 64 \
    --max-steps 1 >oom.log 2>&1; then
    fail "64 x 512 tokens fit in 64 MiB?"
fi
expect oom.log "out of memory in the forward pass of a batch of 64 x 512 tokens"
expect oom.log "try a smaller --batch"
if "$filo" finetune --train train.tsv --out bad >usage.log 2>&1; then fail "no model"; fi
expect usage.log "--model or --config"
if "$filo" predict --model nowhere --input - </dev/null >nomodel.log 2>&1; then fail "missing model"; fi
expect nomodel.log "nowhere/config.json"
echo "finetune smoke: all passed"
