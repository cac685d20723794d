#!/usr/bin/env bash
# One prepared GPU session (issue 15) inside a strict wall budget, for a lent NVIDIA machine (the `device` tool):
#   (a) tests/test_cuda.py                                  <= 60 s
#   (b) benchmarks/pretrain_loop.py --device cuda: batch sweep and GPU options, FLOP/s, MFU, memory   <= 60 s
#   (c) pre-train ELECTRA-Small (T=1) and BERT-Small at equal FLOPs: suites/gpu/table1_small.yaml, its
#       pretrain.budget_flops sized from (b) so both fit in PRETRAIN_SHARE of what is left (gpu_plan.py)
#   (d) fine-tune: the 100% checkpoints of ELECTRA, BERT and random init on SST-2 (full train), CoNLL-2003, MRPC,
#       STS-B, CoLA, RTE, one seed at a time (seed 0 of all three first), then suites/gpu/table1_small_curve.yaml
#       (the 50% and 25% checkpoints). Records are appended as each unit finishes, so a cut-off run keeps them.
# Usage:  bash benchmarks/gpu_session.sh [--rehearse] [--budget-s SECONDS] [OUT]   (480 s, rehearsal 150 s; OUT
#         default results/gpu_session)
# --rehearse shrinks every budget (tiny model, 32 examples per task, CPU) so the whole script runs on a CPU and the
# first GPU call does not fail on a typo. Rehearsed here through (a)-(c) and part of (d) (2 cores at load ~18: far
# slower than the ~2 min aimed at); a pytest test that runs it whole is still to be added.
# Expects python3 with torch and pytest (PYTHON overrides); other packages as wheels in .whl/ (installed to
# /tmp/site); a data root in $ELECTRA_BENCH_DATA (default .devdata/: a copy of what the suites read, never committed).
set -uo pipefail
REHEARSE=0 BUDGET= OUT=results/gpu_session
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --budget-s) BUDGET=$2; shift ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    -*) echo "gpu_session.sh: unknown option $1" >&2; exit 2 ;;
    *) OUT=$1 ;;
  esac
  shift
done
[ -z "$BUDGET" ] && { [ "$REHEARSE" = 1 ] && BUDGET=150 || BUDGET=480; }
PY=${PYTHON:-python3}
START=$SECONDS
left() { echo $((BUDGET - (SECONDS - START))); }
cap() { local want=$1 rest; rest=$(left); [ "$rest" -lt "$want" ] && want=$rest; [ "$want" -lt 1 ] && want=1; echo "$want"; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export ELECTRA_BENCH_DATA=${ELECTRA_BENCH_DATA:-$PWD/.devdata} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
# The commit that ran (records carry `code_version` from git too; a dirty tree is said so here).
{ git rev-parse HEAD 2>/dev/null || echo "unknown (no git)"; git status --porcelain 2>/dev/null | sed 's/^/dirty: /'; } \
  > "$OUT/commit.txt"
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.is_available())"
} > "$OUT/environment.txt" 2>&1
cat "$OUT/commit.txt" "$OUT/environment.txt"

WORK=${WORK_DIR:-/tmp/gpu_session_work}
RUN=("$PY" -m electra_bench.cli run --no-progress --set tracking.enabled=false --set "results_dir=$OUT/results"
     --set "work_dir=$WORK")
if [ "$REHEARSE" = 1 ]; then
  DEVICE=cpu TEST_S=60 BENCH_S=40 SEEDS="0 1 2" PRETRAIN_SHARE=${PRETRAIN_SHARE:-0.1}
  BENCH=("$PY" benchmarks/pretrain_loop.py --quick --reps 1 --threads 1 --device cpu)
  BENCH_JSON=$OUT/bench/pretrain_loop.json
  RUN+=(--set model.size=tiny --set corpus.max_bytes=200000 --set corpus.max_seq_length=64
        --set corpus.heldout_blocks=16 --set pretrain.batch_size=8 --set pretrain.precision=fp32
        --set pretrain.eval_every=1000000 --set pretrain.eval_batches=1 --set finetune.precision=fp32
        --set finetune.train_examples=32 --set finetune.dev_examples=32 --set finetune.epochs=1
        --set finetune.batch_size=16 --set finetune.max_seq_length=64)
else
  DEVICE=cuda TEST_S=60 BENCH_S=60 SEEDS="0 1 2" PRETRAIN_SHARE=${PRETRAIN_SHARE:-0.5}
  BENCH=("$PY" benchmarks/pretrain_loop.py --device cuda --budget-s 45)
  BENCH_JSON=$OUT/bench/pretrain_loop_cuda.json
fi

echo "== (a) CUDA tests ($(cap $TEST_S) s)"
timeout "$(cap $TEST_S)" "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/pytest_cuda.log" \
  | tail -3

echo "== (b) pre-training loop benchmark on $DEVICE ($(cap $BENCH_S) s)"
timeout "$(cap $BENCH_S)" "${BENCH[@]}" --out "$OUT/bench" > "$OUT/bench.log" 2>&1
grep -v "^\[pretrain\]" "$OUT/bench.log" | tail -15; cat "$OUT"/bench/*.md 2>/dev/null | head -30
if [ ! -f "$BENCH_JSON" ]; then
  echo "gpu_session.sh: the benchmark wrote no $BENCH_JSON: cannot size the pre-training budget" >&2
  exit 1
fi

PER_MODEL=$("$PY" -c "print(max(1, int($(left) * $PRETRAIN_SHARE / 2)))")
mapfile -t PLAN < <("$PY" benchmarks/gpu_plan.py "$BENCH_JSON" "$PER_MODEL")
SETS=()
for s in "${PLAN[@]}"; do SETS+=(--set "$s"); done
echo "== (c) pre-training ELECTRA and BERT, ~${PER_MODEL} s each: ${PLAN[*]}"
printf '%s\n' "${PLAN[@]}" > "$OUT/pretrain_plan.txt"
timeout "$(cap $((PER_MODEL * 3)))" "${RUN[@]}" "${SETS[@]}" --set "tasks=[]" \
  --set "table.reference={}" --set "table.claims=[]" suites/gpu/table1_small.yaml \
  2>&1 | tee "$OUT/pretrain.log" | grep -v "^\[pretrain\]" | tail -5

echo "== (d) fine-tuning: 100% checkpoints and random init, seed by seed; then the curve (${SEEDS})"
for seed in $SEEDS; do
  [ "$(left)" -le 1 ] && break
  timeout "$(cap "$(left)")" "${RUN[@]}" "${SETS[@]}" --set "seeds=[$seed]" suites/gpu/table1_small.yaml \
    2>&1 | tee -a "$OUT/finetune.log" | grep -v "^\[" | tail -3
done
if [ "$(left)" -gt 1 ]; then
  timeout "$(cap "$(left)")" "${RUN[@]}" "${SETS[@]}" suites/gpu/table1_small_curve.yaml \
    2>&1 | tee -a "$OUT/finetune.log" | grep -v "^\[" | tail -3
fi
# Tables from whatever finished (records only; nothing trains here).
for suite in table1_small table1_small_curve; do
  "$PY" -m electra_bench.cli table "suites/gpu/$suite.yaml" --set "results_dir=$OUT/results" \
    --set "work_dir=$WORK" > /dev/null 2>&1
done
echo "== done in $((SECONDS - START)) s of $BUDGET; records:"
wc -l "$OUT"/results/gpu/*/records.jsonl 2>/dev/null
