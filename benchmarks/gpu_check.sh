#!/usr/bin/env bash
# GPU check (<= 5 minutes): install the GPU runtimes this machine can install, then run
# benchmarks/gpu_check.py on the zoo's MobileNetV2 / EfficientNet-B0 / ResNet50 and write the table.
#   benchmarks/gpu_check.sh [OUTPUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
OUTPUT="${1:-runs/gpu_check}"
PYTHON="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: no NVIDIA GPU"
# onnxruntime-gpu carries the CUDA and TensorRT providers; offline machines keep what they have.
"$PYTHON" -m pip install --quiet --timeout 10 --retries 0 onnxruntime-gpu \
  || echo "onnxruntime-gpu could not be installed here: its rows will say why"
"$PYTHON" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" || true
PYTHONPATH=. timeout 280 "$PYTHON" benchmarks/gpu_check.py --output "$OUTPUT"
