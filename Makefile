# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A bare `torch` pulls a multi-GB CUDA build here; 2.13.0 resolves to the local CPU build.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format clean ssh-server

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev,all]"
	touch $@

# The main job on the built-in digits, offline: the zoo, MobileNetV2 trained at 32x32, then its
# fp32 and int8 artifacts, each verified in its own runtime on the held-out images, then all of them
# benchmarked side by side (1 thread) with their accuracy, a report and a latency-vs-accuracy plot.
demo: $(STAMP)
	$(BIN)/edgecnn models mobilenet
	$(BIN)/edgecnn train mobilenet_v2 --data digits --input-size 32 --output runs/demo
	$(BIN)/edgecnn export runs/demo/best.pt --int8 --output runs/demo/export
	$(BIN)/edgecnn bench runs/demo/best.pt runs/demo/export/*.onnx runs/demo/export/*.xml \
		runs/demo/export/*.tflite --threads 1 --data digits --report runs/demo/bench

lint: $(STAMP)
	$(BIN)/ruff check edgecnn tests benchmarks
	$(BIN)/ruff format --check edgecnn tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format edgecnn tests benchmarks
	$(BIN)/ruff check --fix edgecnn tests benchmarks

# The remote-benchmark tests start a real OpenSSH server on 127.0.0.1; install it when it is missing.
ssh-server:
	@test -x /usr/sbin/sshd || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server; fi; }

test: lint ssh-server
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .venv-device .pytest_cache .ruff_cache *.egg-info
