# The two README commands: `make quickstart` (set up + run the main job) and `make test`.
# Setup is idempotent: a local virtualenv in .venv, re-installed only when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU machines take the local CPU wheel of torch first, so pip never resolves torch itself (which would pull a
# multi-GB CUDA build). On a machine with an NVIDIA driver, pip's default (CUDA) torch is what we want.
TORCH_CPU := torch==2.13.0

.PHONY: setup quickstart test clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch; \
	else \
	  $(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_CPU); \
	fi
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

quickstart: setup
	$(BIN)/electra-bench run suites/quickstart.yaml --results runs --reference results

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) work
