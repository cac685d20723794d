#!/usr/bin/env bash
# The prepared GPU session (issue 15), one call on a lent NVIDIA machine (the `device` tool's H200):
#   bash benchmarks/gpu_session.sh [--budget-s 480] [--rehearse] [any benchmarks/gpu_session.py option]
# runs, inside the wall budget (default 480 s of compute): (a) the CUDA tests, (b) the step benchmark, (c) ELECTRA-
# Small (temperature 1) and BERT-Small pre-training at equal FLOPs, (d) their fine-tunes and a random-init control
# on SST-2, CoNLL-2003, MRPC, STS-B, CoLA, RTE x 3 seeds, then the partly trained checkpoints. The steps, their
# order and the provenance record are benchmarks/gpu_session.py's docstring. --rehearse: the same on CPU, shrunk
# (tests/test_benchmarks.py runs it). Everything goes to $OUT (default results/gpu_session): provenance.json (the
# commit and the tree of the files that ran), steps.json, plan.json, logs, benchmarks/, results/ (records, table).
# Expects: python3 with torch and pytest; other packages as wheels in .whl/ (installed to /tmp/site) if missing;
# a data root in $ELECTRA_BENCH_DATA (default .devdata/: `bash benchmarks/gpu_session.sh --prepare-data` copies the
# files the suites read there, ~57 MB, never committed).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare-data" ]; then  # the files suites/gpu/table1_small*.yaml and their tasks read
  set -e
  src=${ELECTRA_BENCH_DATA:-../shared/data} dst=${2:-.devdata}
  mkdir -p "$dst/corpus/wikipedia-en-2015" "$dst/glue"
  cp "$src"/corpus/wikipedia-en-2015/enwiki-2015-0[0-5].txt.gz "$dst/corpus/wikipedia-en-2015/"
  cp -r "$src/corpus/bbc-news" "$src/corpus/reuters-21578" "$dst/corpus/"
  for task in SST-2 MRPC STS-B CoLA RTE; do mkdir -p "$dst/glue/$task" && cp "$src/glue/$task"/{train,dev}.tsv "$dst/glue/$task/"; done
  cp -r "$src/conll2003" "$src/vocab" "$dst/"
  du -sh "$dst"
  exit 0
fi
OUT=${OUT:-results/gpu_session}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export ELECTRA_BENCH_DATA=${ELECTRA_BENCH_DATA:-$PWD/.devdata} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; "$PY" -c "import torch, transformers; print(torch.__version__, \
transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"; } \
  2>&1 | tee "$OUT/environment.txt"
"$PY" benchmarks/gpu_session.py --out "$OUT" "$@"
rc=$?
ls -la "$OUT"
exit $rc
