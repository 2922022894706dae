"""Models for benchmarks whose figures do not depend on trained weights (latency, export time)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgecnn.data.datasets import open_source, preprocess_images
from edgecnn.models import create_model, get_model_meta
from edgecnn.models.checkpoint import save_checkpoint


def random_with_real_statistics(name: str, folder: Path, images: int = 64) -> Path:
    """A checkpoint of ``name`` with random weights (seed 0) and BatchNorm statistics averaged over real
    digits images at the model's input size.

    With the initial statistics (mean 0, variance 1) every folded bias is zero and activations grow
    unchecked through the depth: NNCF's bias correction then has nothing to do (the export looks faster
    than it is), and int8 ranges are nothing like a trained model's (MobileNetV2's int8 logits came out
    all zero in OpenVINO and LiteRT, which the export rightly calls broken).
    """
    torch.manual_seed(0)
    model = create_model(name)
    batch = preprocess_images(open_source("digits"), range(images), get_model_meta(model).preprocessing)
    for norm in model.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the batches
    model.train()
    with torch.no_grad():
        for chunk in torch.from_numpy(batch).split(16):
            model(chunk)
    return save_checkpoint(folder / f"{name}.pt", model.eval())
