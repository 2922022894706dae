"""The training loop: transfer learning, seeded splits, best-checkpoint selection, DDP under torchrun."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from edgecnn._io import write_json
from edgecnn.data.augment import build_augmentation
from edgecnn.data.datasets import ImageDataset, ImageSource, Split, balanced_sample, make_split, open_source
from edgecnn.data.preprocessing import Preprocessing
from edgecnn.errors import EdgeCNNError
from edgecnn.models._registry import ModelSpec, get_model_meta, get_model_spec
from edgecnn.models.checkpoint import load_checkpoint, resolve_model, save_checkpoint
from edgecnn.models.complexity import check_input_size
from edgecnn.optimize.qat import FakeQuantized
from edgecnn.train.config import EpochRecord, LossName, OptimizerName, SchedulerName, TrainConfig, TrainResult

log = logging.getLogger(__name__)
console = Console(stderr=True)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun launch (world size 1 when launched plainly)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world_size)

    def broadcast(self, value: float) -> float:
        """Rank 0's ``value`` on every rank, so all ranks take the same decisions."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgeCNNError("--device cuda was asked for, but PyTorch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def build_model(config: TrainConfig, source: ImageSource) -> tuple[nn.Module, ModelSpec]:
    """The model to train, with a head for the source's classes, and its registry entry."""
    if not source.labelled:
        raise EdgeCNNError(f"{source.name} has no class folders: training needs ROOT/CLASS/IMAGE.jpg")
    resolved = resolve_model(
        config.model, config.weights, fallback="none", num_classes=len(source.classes), dropout=config.dropout
    )
    model = resolved.model
    preprocessing = get_model_meta(model).preprocessing
    if config.input_size is not None:
        preprocessing = preprocessing.with_input_size(config.input_size)
    if source.crop_ratio is not None:
        preprocessing = replace(preprocessing, resize=math.ceil(preprocessing.crop / source.crop_ratio))
    meta = get_model_meta(model)
    meta.preprocessing = preprocessing
    meta.class_names = list(source.classes)
    source.check_min_size(preprocessing.crop)
    check_input_size(model, preprocessing.input_shape)
    return model, get_model_spec(get_model_meta(model).name)


def backbone_blocks(model: nn.Module, spec: ModelSpec) -> list[tuple[str, nn.Module]]:
    """The backbone's blocks in forward order, without the head and optional heads.

    Plain ``Sequential`` containers are opened up: a stage of blocks counts block by block.
    """
    blocks: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if full == spec.classifier or f"{full}.".startswith(spec.optional_prefixes):
                continue
            if type(child) is nn.Sequential:
                visit(f"{full}.", child)
            elif any(True for _ in child.parameters()):
                blocks.append((full, child))

    visit("", model)
    return blocks


def apply_freeze(model: nn.Module, freeze: str, spec: ModelSpec) -> None:
    """``none``: train all; ``backbone``: only the head (feature extraction); ``N``: the last N blocks + head."""
    if freeze == "none":
        return
    model.requires_grad_(False)
    model.get_submodule(spec.classifier).requires_grad_(True)
    if freeze != "backbone":
        blocks = backbone_blocks(model, spec)
        count = int(freeze)
        if count > len(blocks):
            raise EdgeCNNError(f"--freeze {count}: the model has only {len(blocks)} backbone blocks")
        for _, block in blocks[-count:]:
            block.requires_grad_(True)


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Frozen batch norms keep their running statistics: a frozen backbone stays exactly as loaded."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()


def make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    lr, wd = config.learning_rate, config.weight_decay
    if config.optimizer is OptimizerName.sgd:
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    if config.optimizer is OptimizerName.adam:
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if config.optimizer is OptimizerName.rmsprop:
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, momentum=0.9, eps=0.0316, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Stepped once per batch."""
    if config.scheduler is SchedulerName.cosine:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if config.scheduler is SchedulerName.onecycle:
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=steps)
    return None


def loss_function(config: TrainConfig, num_classes: int) -> nn.Module:
    if config.loss is LossName.mse:
        return OneHotMSE(num_classes)
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


class OneHotMSE(nn.Module):
    """Mean squared error between the logits and one-hot targets (regression-style training)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(logits, nn.functional.one_hot(target, self.num_classes).to(logits.dtype))


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, preprocessing: Preprocessing, criterion: nn.Module, device: torch.device
) -> tuple[float, float]:
    """Mean loss and top-1 accuracy (%) over ``loader``, in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images, labels = preprocessing.normalize(images.to(device)), labels.to(device)
        logits = model(images)
        total_loss += float(criterion(logits, labels)) * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    model.train(was_training)
    return total_loss / max(seen, 1), 100.0 * correct / max(seen, 1)


def _loader(
    dataset: ImageDataset, config: TrainConfig, shuffle: bool, sampler: DistributedSampler | None = None
) -> DataLoader:
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=config.workers,
        generator=generator,
        drop_last=shuffle and len(dataset) > config.batch_size,
        persistent_workers=config.workers > 0,
    )


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Progress]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.1f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not enabled, transient=True) as progress:
        yield progress


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train ``config.model`` on ``config.data``; writes best.pt, last.pt, metrics.json and curves.png."""
    device = pick_device(config.device)
    world = Distributed.from_env(device)
    seed_everything(config.seed)
    show = progress and world.is_main
    started = time.perf_counter()

    source = open_source(config.data, strict=config.strict)
    model, spec = build_model(config, source)
    meta = get_model_meta(model)
    preprocessing = meta.preprocessing
    split = (
        _qat_split(config, source)
        if config.qat
        else make_split(source, config.val_fraction, config.test_fraction, config.seed)
    )
    if config.train_images is not None:
        subset = balanced_sample(source.labels, split.train, config.train_images, seed=config.seed)
        split = replace(split, train=tuple(sorted(subset)))
    datasets = {name: ImageDataset(source, split.subset(name), preprocessing) for name in ("train", "val", "test")}
    if not datasets["val"].indices:
        raise EdgeCNNError("the validation split is empty: raise --val-fraction or add images")
    sampler = (
        DistributedSampler(datasets["train"], world.world_size, world.rank, seed=config.seed)
        if world.world_size > 1
        else None
    )
    train_loader = _loader(datasets["train"], config, shuffle=True, sampler=sampler)
    val_loader, test_loader = (_loader(datasets[n], config, shuffle=False) for n in ("val", "test"))

    apply_freeze(model, config.freeze, spec)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, trainable)
    scheduler = make_scheduler(config, optimizer, config.epochs * len(train_loader))
    criterion = loss_function(config, len(source.classes))
    augmentation = build_augmentation(config.augment, preprocessing.crop, preprocessing.in_chans).to(device)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    network = nn.parallel.DistributedDataParallel(model) if world.world_size > 1 else model

    output = config.output
    sections = {"data": _data_section(source, split), "training": config.to_dict()}
    history: list[EpochRecord] = []
    best_accuracy, best_epoch, stale, interrupted = -1.0, 0, 0, False
    if world.is_main:
        output.mkdir(parents=True, exist_ok=True)
        log.info(
            f"training {meta.name} on {source.name}: {len(datasets['train'])} train / {len(datasets['val'])} val / "
            f"{len(datasets['test'])} test images, {len(source.classes)} classes, input {preprocessing.input_shape}, "
            f"{sum(p.numel() for p in trainable):,} trainable parameters, {device}"
            + (f" × {world.world_size} processes" if world.world_size > 1 else "")
        )
    simulation = FakeQuantized(model) if config.qat else contextlib.nullcontext()
    try:
        with _progress(show) as bar, simulation:
            for epoch in range(1, config.epochs + 1):
                if sampler is not None:
                    sampler.set_epoch(epoch)
                record = _train_epoch(
                    network,
                    model,
                    train_loader,
                    preprocessing,
                    augmentation,
                    criterion,
                    optimizer,
                    scheduler,
                    scaler,
                    use_amp,
                    device,
                    memory_format,
                    bar,
                    f"epoch {epoch}/{config.epochs}",
                )
                val_loss, val_accuracy = evaluate(model, val_loader, preprocessing, criterion, device)
                val_accuracy = world.broadcast(val_accuracy)
                record = replace(record, epoch=epoch, val_loss=val_loss, val_accuracy=val_accuracy)
                history.append(record)
                improved = val_accuracy > best_accuracy
                if improved:
                    best_accuracy, best_epoch, stale = val_accuracy, epoch, 0
                else:
                    stale += 1
                if world.is_main:
                    metrics = {"epoch": epoch, "val_accuracy": val_accuracy, "best_epoch": best_epoch}
                    save_checkpoint(output / "last.pt", model, **sections, metrics=metrics)
                    if improved:
                        save_checkpoint(output / "best.pt", model, **sections, metrics=metrics)
                    log.info(_epoch_line(record, config.epochs, improved))
                if config.early_stopping and stale >= config.early_stopping:
                    if world.is_main:
                        log.info(f"early stopping: no better validation accuracy for {stale} epochs")
                    break
    except KeyboardInterrupt:
        interrupted = True
        if world.is_main:
            log.warning(f"interrupted; keeping the last complete checkpoints in {output}")
        if not history:
            raise

    best = load_checkpoint(output / "best.pt") if world.is_main else None
    result = TrainResult(
        output / "best.pt",
        best_epoch,
        best_accuracy,
        math.nan,
        math.nan,
        len(datasets["test"]),
        0.0,
        interrupted,
        history,
        len(datasets["train"]),
    )
    if best is not None:
        best_model = best.model.to(device)
        result.test_loss, result.test_accuracy = evaluate(best_model, test_loader, preprocessing, criterion, device)
        result.seconds = time.perf_counter() - started
        metrics = {
            "epoch": best_epoch,
            "val_accuracy": best_accuracy,
            "test_accuracy": result.test_accuracy,
            "test_images": result.test_images,
        }
        save_checkpoint(output / "best.pt", best.model, **sections, metrics=metrics)
        write_json(output / "metrics.json", {**result.to_dict(), **sections})
        from edgecnn.train.plot import plot_curves

        plot_curves(history, output / "curves.png", title=f"{meta.name} on {source.name}")
        log.info(
            f"best epoch {best_epoch}: val {best_accuracy:.2f}%, test {result.test_accuracy:.2f}% "
            f"on {result.test_images} held-out images → {output / 'best.pt'}"
        )
    if world.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _train_epoch(
    network: nn.Module,
    model: nn.Module,
    loader: DataLoader,
    preprocessing: Preprocessing,
    augmentation: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    use_amp: bool,
    device: torch.device,
    memory_format: torch.memory_format,
    bar: Progress,
    description: str,
) -> EpochRecord:
    network.train()
    keep_frozen_norms_in_eval(model)
    augmentation.train()
    task = bar.add_task(description, total=len(loader), loss=0.0, acc=0.0)
    total_loss, correct, seen, waiting = 0.0, 0, 0, 0.0
    started = time.perf_counter()
    fetched = started
    for images, labels in loader:
        waiting += time.perf_counter() - fetched
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.no_grad():
            images = preprocessing.normalize(augmentation(images)).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = network(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        bar.update(task, advance=1, loss=total_loss / seen, acc=100.0 * correct / seen)
        fetched = time.perf_counter()
    bar.remove_task(task)
    seconds = time.perf_counter() - started
    return EpochRecord(
        epoch=0,
        train_loss=total_loss / max(seen, 1),
        train_accuracy=100.0 * correct / max(seen, 1),
        val_loss=math.nan,
        val_accuracy=math.nan,
        lr=optimizer.param_groups[0]["lr"],
        seconds=seconds,
        images_per_second=seen / seconds if seconds else 0.0,
        data_loading_share=waiting / seconds if seconds else 0.0,
    )


def _epoch_line(record: EpochRecord, epochs: int, improved: bool) -> str:
    return (
        f"epoch {record.epoch:>3}/{epochs}  train loss {record.train_loss:.4f} acc {record.train_accuracy:5.1f}%  "
        f"val loss {record.val_loss:.4f} acc {record.val_accuracy:5.1f}%  lr {record.lr:.2e}  "
        f"{record.images_per_second:,.0f} img/s  data {100 * record.data_loading_share:.0f}%"
        + ("  ★ best" if improved else "")
    )


def _qat_split(config: TrainConfig, source: ImageSource) -> Split:
    """The checkpoint's own split: its validation and test images must stay what they were."""
    trained_on = load_checkpoint(config.model).metadata.get("data")
    if not trained_on or trained_on["fingerprint"] != source.fingerprint():
        name = trained_on["source"] if trained_on else "no recorded data"
        raise EdgeCNNError(f"--qat fine-tunes on the data the checkpoint trained on ({name}): pass --data {name}")
    return Split.from_dict(trained_on["split"])


def _data_section(source: ImageSource, split: Split) -> dict[str, object]:
    return {
        "source": source.name,
        "fingerprint": source.fingerprint(),
        "classes": list(source.classes),
        "split": split.to_dict(),
    }
