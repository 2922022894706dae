# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A bare `torch` pulls a multi-GB CUDA build here; 2.13.0 resolves to the local CPU build.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev,all]"
	touch $@

# The main job on the built-in digits, offline: the zoo, MobileNetV2 trained at 32x32, then its
# fp32 and int8 artifacts, each verified in its own runtime on the held-out images.
demo: $(STAMP)
	$(BIN)/edgecnn models mobilenet
	$(BIN)/edgecnn train mobilenet_v2 --data digits --input-size 32 --output runs/demo
	$(BIN)/edgecnn export runs/demo/best.pt --int8 --output runs/demo/export

lint: $(STAMP)
	$(BIN)/ruff check edgecnn tests benchmarks
	$(BIN)/ruff format --check edgecnn tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format edgecnn tests benchmarks
	$(BIN)/ruff check --fix edgecnn tests benchmarks

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
