# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A bare `torch` pulls a multi-GB CUDA build here; 2.13.0 resolves to the local CPU build.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo gate test lint format clean system-packages

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

# What the tests need from Debian, installed when missing: a real OpenSSH server (the remote-benchmark
# tests start one on 127.0.0.1), Fashion-MNIST's 70,000 images (the gate and the data tests), qemu's
# user-mode emulators (int8 artifacts run on an emulated CPU of another kind) and apt's arm64 package
# lists (`edgecnn verify --arch aarch64` unpacks an arm64 Python from them; nothing arm64 is installed).
SYSTEM_PACKAGES := openssh-server dataset-fashion-mnist qemu-user-static
system-packages:
	@test -x /usr/sbin/sshd -a -d /usr/share/datasets/fashion-mnist -a -x /usr/bin/qemu-x86_64-static \
		-a -n "$$(dpkg --print-foreign-architectures | grep -x arm64)" || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO dpkg --add-architecture arm64 && $$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); }

# The project's own CI gate: ResNet18 trained on Fashion-MNIST, int8 in three formats, gated on the
# 10,000 test images at <= 0.5 point and >= 99% agreement, from scratch (--force: no result of older code
# reused), so a regression in any converter or in edgecnn's quantization fails the build.
gate: $(STAMP) system-packages
	$(BIN)/edgecnn run recipes/fashion_mnist_gate.yaml --output runs/ci-gate --force

test: lint system-packages
	EDGECNN_REQUIRE_BACKENDS=1 $(BIN)/python -m pytest
	$(MAKE) gate

clean:
	rm -rf $(VENV) .venv-device .pytest_cache .ruff_cache *.egg-info
