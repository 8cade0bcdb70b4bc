#!/usr/bin/env bash
# IMDb at full scale on one GPU, through the CLI (issue #6, "GPU scale"): SentencePiece LM forward and backward
# with the `paper` sizes on all train+unsup texts (10% of train held out for validation, test never read),
# a classifier per direction on the 22,500 remaining training reviews, and evaluate on all 25,000 test reviews
# (each direction and their ensemble), then two generated samples.
#
#   bash scripts/gpu_imdb.sh DATA WORK [LM_EPOCHS] [LM_BS]
#
# DATA is IMDb as one table (text, label, split: train/test/unsup), made where the mirror is with
#   ULMFIT_MIRROR=../shared/data python scripts/export_corpus.py imdb .gpu/imdb.parquet
# Results, commands and timings: docs/bench/imdb.md.
# The two directions train side by side on the one GPU (an AWD-LSTM with bs 128 leaves most of an H100 idle).
# Every step writes its log to WORK/*.log; WORK/done holds the exit status when all steps are over.
set -uo pipefail
DATA=$1; W=$2; E=${3:-2}; BS=${4:-128}; P=${PRESET:-paper}  # PRESET=tiny: a CPU smoke test
mkdir -p "$W"
ulmfit() { python3 -m ulmfit "$@"; }
LM=(--preset "$P" --set tokenizer=sentencepiece --set sp_vocab_size=${SP_VOCAB:-15000} --epochs "$E" --bs "$BS" --seed 0)
wait_for() {  # wait until the log $1 has a line matching $2 (the shared token store is built), or the job died
  until grep -q "$2" "$1" 2>/dev/null; do kill -0 "$3" 2>/dev/null || return 1; sleep 2; done
}
step() { echo "$(date +%T) $*" >> "$W/steps.log"; }

step "lm forward + backward, $E epochs, bs $BS"
ulmfit pretrain "$DATA" --out "$W/lm-fwd" "${LM[@]}" > "$W/lm-fwd.log" 2>&1 & f=$!
wait_for "$W/lm-fwd.log" "^language model" $f  # the backward run then reuses the cached store
ulmfit pretrain "$DATA" --out "$W/lm-bwd" --backwards "${LM[@]}" > "$W/lm-bwd.log" 2>&1 & b=$!
wait $f; rf=$?; wait $b; rb=$?
step "lm done: fwd $rf bwd $rb"
[ $rf -eq 0 ] && [ $rb -eq 0 ] || { echo 1 > "$W/done"; exit 1; }

step "classifiers"
ulmfit classify "$DATA" --lm "$W/lm-fwd/model-best" --out "$W/clas-fwd" --preset "$P" --seed 0 \
  > "$W/clas-fwd.log" 2>&1 & f=$!
wait_for "$W/clas-fwd.log" "^data:" $f
ulmfit classify "$DATA" --lm "$W/lm-bwd/model-best" --out "$W/clas-bwd" --preset "$P" --seed 0 --backwards \
  > "$W/clas-bwd.log" 2>&1 & b=$!
wait $f; rf=$?; wait $b; rb=$?
step "classifiers done: fwd $rf bwd $rb"

step "evaluate on the full test split"
ulmfit evaluate "$W/clas-fwd/model-best" "$W/clas-bwd/model-best" "$DATA" --split test --out "$W/eval.json" \
  > "$W/eval.log" 2>&1; re=$?
ulmfit generate "$W/lm-fwd/model-best" "I liked this movie because" --words 40 --samples 3 --seed 0 \
  > "$W/generate.log" 2>&1
step "all done: evaluate $re"
echo $(( rf + rb + re )) > "$W/done"
