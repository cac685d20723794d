#!/usr/bin/env bash
# The GPU checks, as one prepared script for a lent NVIDIA machine (the `device` tool's H200):
#   1. tests/test_cuda.py: CUDA = CPU numerics, bf16 training steps learn, a suite runs with device auto -> cuda;
#   2. benchmarks/pretrain_step.py on CUDA: ELECTRA-Small step, fp32 / TF32 / bf16 vs the transformers reference;
#   3. suites/gpu/budget_curve.yaml: where pre-training starts to beat random init (~33x the CPU budget).
# Expects: python3 with torch (CUDA) and pytest; the other packages as wheels in .whl/ (installed to /tmp/site);
# a data root in $ELECTRA_BENCH_DATA (default .devdata/, a copy of the files the suite reads, never committed).
# Everything it reports goes to $OUT (default results/gpu_session): logs, the benchmark, the suite's records.
set -uo pipefail
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
{ nvidia-smi -L; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"; } \
  2>&1 | tee "$OUT/environment.txt"
echo "== 1. CUDA tests"
timeout "${TEST_S:-150}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/pytest_cuda.log" | tail -5
echo "== 2. pre-training step benchmark on CUDA"
timeout "${BENCH_S:-120}" python3 benchmarks/pretrain_step.py --device cuda --out "$OUT" 2>&1 | tail -25
echo "== 3. budget curve suite"
timeout "${SUITE_S:-330}" python3 -m electra_bench.cli run suites/gpu/budget_curve.yaml --no-progress \
  --set tracking.enabled=false --set results_dir=/tmp/res --set work_dir=/tmp/work 2>&1 | tee "$OUT/budget_curve.log" \
  | grep -v "^\[pretrain\]" | tail -60
cp /tmp/res/gpu/budget_curve/records.jsonl "$OUT/budget_curve_records.jsonl" 2>/dev/null
ls -la "$OUT"
