"""Training configuration and result: plain dataclasses that serialise to JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from edgecnn.data.augment import DEFAULT_AUGMENT, parse_augment
from edgecnn.errors import EdgeCNNError
from edgecnn.models.checkpoint import is_checkpoint_path

SCHEMA_VERSION = 1


class OptimizerName(str, Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"
    rmsprop = "rmsprop"


class SchedulerName(str, Enum):
    cosine = "cosine"
    onecycle = "onecycle"
    none = "none"


class LossName(str, Enum):
    cross_entropy = "cross_entropy"
    mse = "mse"


#: quantization-aware fine-tuning starts from trained weights: large steps would undo them
QAT_LR_SHARE = 0.1
DEFAULT_LR = {OptimizerName.sgd: 0.05, OptimizerName.adam: 1e-3, OptimizerName.adamw: 2e-3, OptimizerName.rmsprop: 1e-3}


@dataclass
class TrainConfig:
    """Everything one training run depends on; stored in the checkpoint and metrics.json."""

    model: str
    data: str = "digits"
    output: Path = Path("runs/train")
    weights: str | None = None
    input_size: int | None = None
    epochs: int = 30
    batch_size: int = 64
    optimizer: OptimizerName = OptimizerName.adamw
    lr: float | None = None
    weight_decay: float = 1e-4
    scheduler: SchedulerName = SchedulerName.cosine
    label_smoothing: float = 0.0
    dropout: float | None = None
    freeze: str = "none"
    early_stopping: int = 0
    augment: str = DEFAULT_AUGMENT
    loss: LossName = LossName.cross_entropy
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    #: train on a seeded, class-balanced subset of this many training images (None: all of them)
    train_images: int | None = None
    workers: int = 0
    strict: bool = False
    device: str = "auto"
    amp: bool = True
    #: NHWC tensors: oneDNN's depthwise convolutions run about 2-3x faster in training that way (MobileNet,
    #: EfficientNet); plain convolutions may not gain. An explicit choice: measure it on your machine.
    channels_last: bool = False
    #: quantization-aware fine-tuning of a checkpoint (``edgecnn.optimize.qat``): its own data and split,
    #: a tenth of the default learning rate unless --lr says otherwise
    qat: bool = False

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.optimizer = OptimizerName(self.optimizer)
        self.scheduler = SchedulerName(self.scheduler)
        self.loss = LossName(self.loss)
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.dropout is None or 0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.early_stopping >= 0, f"early stopping patience must be >= 0, got {self.early_stopping}"),
            (
                self.train_images is None or self.train_images >= 1,
                f"train images must be >= 1, got {self.train_images}",
            ),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}"),
            (self.input_size is None or self.input_size >= 8, f"input size must be at least 8, got {self.input_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise EdgeCNNError(message)
        if self.freeze not in ("none", "backbone") and not (self.freeze.isdigit() and int(self.freeze) > 0):
            raise EdgeCNNError(f"freeze must be none, backbone or a number of blocks, got {self.freeze!r}")
        parse_augment(self.augment)
        if self.qat and not is_checkpoint_path(self.model):
            raise EdgeCNNError("--qat fine-tunes a trained model for int8: give a checkpoint (.pt), not a model name")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return DEFAULT_LR[self.optimizer] * (QAT_LR_SHARE if self.qat else 1)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(output=str(self.output), optimizer=self.optimizer.value, scheduler=self.scheduler.value)
        data.update(loss=self.loss.value, lr=self.learning_rate)
        return data


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float
    images_per_second: float
    data_loading_share: float


@dataclass
class TrainResult:
    checkpoint: Path
    best_epoch: int
    best_val_accuracy: float
    test_accuracy: float
    test_loss: float
    test_images: int
    seconds: float
    interrupted: bool = False
    history: list[EpochRecord] = field(default_factory=list)
    train_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["checkpoint"] = str(self.checkpoint)
        train_time = sum(r.seconds for r in self.history) or 1.0
        data["schema_version"] = SCHEMA_VERSION
        data["train_images_per_second"] = sum(r.images_per_second * r.seconds for r in self.history) / train_time
        data["data_loading_share"] = sum(r.data_loading_share * r.seconds for r in self.history) / train_time
        return data
