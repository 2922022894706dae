# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A bare `torch` pulls a multi-GB CUDA build here; 2.13.0 resolves to the local CPU build.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo gate test lint format clean ssh-server

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev,all]"
	touch $@

# The main job on the built-in digits, offline, as one recipe: MobileNetV2 trained at 32x32, its fp32
# and int8 artifacts in three formats, each verified in its own runtime on the held-out images, all of
# them benchmarked side by side (1 thread), then the accuracy gate. Report: runs/demo/report.html.
demo: $(STAMP)
	$(BIN)/edgecnn run recipes/digits_mobilenet_v2_int8.yaml

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

# The project's own CI gate: the demo recipe from scratch (--force: no result of older code reused),
# so a regression in any converter or in edgecnn's quantization fails the build.
gate: $(STAMP)
	$(BIN)/edgecnn run recipes/digits_mobilenet_v2_int8.yaml --output runs/ci-gate --force

test: lint ssh-server
	$(BIN)/python -m pytest
	$(MAKE) gate

clean:
	rm -rf $(VENV) .venv-device .pytest_cache .ruff_cache *.egg-info
