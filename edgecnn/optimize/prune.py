"""Pruning, the stage between BN folding and quantization, judged by what it does on the device.

Structured pruning removes whole channels with torch-pruning's dependency graph, so every layer that
reads a removed channel shrinks with it — residual additions, depthwise convolutions, squeeze-excite,
Inception concatenations, the classifier's input — and a dense runtime does less work. The stem (first
convolution) and the classifier are protected by default. Unstructured pruning zeroes the smallest
weights: fewer non-zeros and a smaller *compressed* file, but a dense runtime does the same work, and
the report says so.

Fine-tuning goes through the training stage (the checkpoint's own data, augmentation and split), after
each step of an iterative prune → fine-tune schedule. The result is a normal checkpoint: the changed
channel counts are in its metadata, so it rebuilds without unpickling code and every later command
(export, bench, eval, check) takes it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecnn import __version__
from edgecnn._io import atomic_path, write_json
from edgecnn.errors import EdgeCNNError
from edgecnn.models._registry import get_model_meta, get_model_spec
from edgecnn.models.checkpoint import Checkpoint, load_checkpoint, resolve_model, save_checkpoint
from edgecnn.models.complexity import count_macs, count_params
from edgecnn.models.layers import head_layer, layer_dims

SCHEMA_VERSION = 1
METHODS = ("l1", "l2", "taylor")
SCOPES = ("per-layer", "global")
TAYLOR_BATCHES = 8  # of the training split, for the gradients Taylor importance needs
log = logging.getLogger(__name__)


class PruneError(EdgeCNNError):
    pass


@dataclass
class PruneConfig:
    model: str  # a checkpoint (its data is used for fine-tuning) or a registered name
    ratio: float = 0.3  # of the channels (structured) or of the weights (unstructured)
    method: str = "l1"
    scope: str = "per-layer"
    round_to: int | None = 8  # keep channel counts multiples of this (the int8 kernels' vector width); 1, None: off
    protect: list[str] = field(default_factory=list)  # more layers to keep whole, beside stem and classifier
    iterative: int = 2  # prune → fine-tune steps that reach the ratio together
    finetune_epochs: int = 10  # after each step; 0: none
    lr: float | None = None  # fine-tuning peak learning rate; default: the training's
    data: str | None = None  # default: the checkpoint's training data
    unstructured: bool = False
    weights: str | None = None  # model names only
    input_size: int | None = None  # model names only
    output: Path = Path("runs/prune")

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.protect = list(self.protect)
        if self.round_to == 1:  # rounds nothing: off, the same whether a recipe or --round-to says 1 or null
            self.round_to = None
        checks = [
            (0 < self.ratio < 1, f"ratio must be between 0 and 1 (exclusive), got {self.ratio}"),
            (self.method in METHODS, f"unknown method {self.method!r}; valid: {', '.join(METHODS)}"),
            (self.scope in SCOPES, f"unknown scope {self.scope!r}; valid: {', '.join(SCOPES)}"),
            (self.round_to is None or self.round_to >= 1, f"round-to must be at least 1, got {self.round_to}"),
            (self.iterative >= 1, f"iterative steps must be at least 1, got {self.iterative}"),
            (self.finetune_epochs >= 0, f"fine-tune epochs must be ≥ 0, got {self.finetune_epochs}"),
            (not (self.unstructured and self.method == "taylor"), "unstructured pruning is by magnitude: l1 or l2"),
        ]
        for ok, message in checks:
            if not ok:
                raise PruneError(message)


@dataclass
class Figures:
    """One model's size and accuracy; latency is measured side by side in ``latency_p50_ms``."""

    checkpoint: str
    params: int
    nonzero_params: int
    macs: int
    size_bytes: int
    compressed_bytes: int  # zlib level 6 of the checkpoint: what zeros save in a download
    accuracy: float | None
    latency_p50_ms: float | None = None  # PyTorch eager, 1 thread, interleaved with the other model


@dataclass
class PruneReport:
    model: str
    mode: str  # structured | unstructured
    method: str
    scope: str
    ratio: float
    round_to: int | None
    protected: list[str]
    iterative: int
    finetune_epochs: int
    data: str | None
    before: Figures
    after: Figures
    layers_changed: int
    seconds: float
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "edgecnn_version": __version__, **dataclasses.asdict(self)}


def _load(config: PruneConfig) -> Checkpoint:
    resolved = resolve_model(config.model, config.weights, config.input_size)
    if resolved.path is not None:
        return resolved
    path = save_checkpoint(config.output / "original.pt", resolved.model)
    return Checkpoint(path, resolved.model, {})


def protected_layers(model: nn.Module, extra: list[str]) -> list[str]:
    """Stem, head (the layer that outputs the classes) and the user's names; an unknown name is an error
    with the closest ones."""
    spec = get_model_spec(get_model_meta(model).name)
    names = dict(model.named_modules())
    for name in extra:
        if name not in names:
            close = difflib.get_close_matches(name, list(names), n=3)
            hint = (
                f"; did you mean {', '.join(close)}?" if close else "; `edgecnn models info MODEL --depth 6` lists them"
            )
            raise PruneError(f"no layer named {name!r} in {get_model_meta(model).name}{hint}")
    return [spec.first_conv, head_layer(model, spec.classifier), *extra]


def prune_channels(
    model: nn.Module,
    example: torch.Tensor,
    ratio: float,
    method: str = "l1",
    scope: str = "per-layer",
    round_to: int | None = 8,
    protect: list[str] | None = None,
    gradients: Callable[[nn.Module], None] | None = None,
) -> None:
    """Remove ``ratio`` of the channels (of each layer, or of the network for ``global``), in place.

    ``gradients`` fills ``.grad`` for Taylor importance (loss on training images, backward).
    """
    tp = _torch_pruning()
    importance = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
    }[method]()
    name = type(model).__name__
    try:
        ignored = [model.get_submodule(layer) for layer in protect or []]
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=importance,
            pruning_ratio=ratio,
            global_pruning=scope == "global",
            round_to=round_to,
            ignored_layers=ignored,
        )
        if method == "taylor":
            if gradients is None:
                raise PruneError("Taylor importance needs training images for its gradients")
            model.zero_grad()
            gradients(model)
        pruner.step()
        model.zero_grad()
        with torch.no_grad():
            model.eval()(example)
    except PruneError:
        raise
    except Exception as exc:  # torch-pruning and the model's own forward raise their own types
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise PruneError(f"cannot prune {name} by channels ({type(exc).__name__}): {reason}") from exc


def prune_unstructured(model: nn.Module, sparsity: float, protect: list[str] | None = None) -> None:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights across all convolutions and linear
    layers (global), in place. Shapes stay: this saves non-zeros, not dense compute. (L1 and L2 rank
    single weights alike, so ``--method`` makes no difference here.)"""
    from torch.nn.utils import prune as torch_prune

    protected = set(protect or [])
    targets = [
        (module, "weight")
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear) and name not in protected
    ]
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    for module, parameter in targets:
        torch_prune.remove(module, parameter)


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise PruneError("structured pruning needs torch-pruning: pip install 'edgecnn[prune]'") from None
    return torch_pruning


def prune(config: PruneConfig, progress: bool = True) -> PruneReport:
    """Prune (and fine-tune) ``config.model``; writes pruned.pt, prune.json and prune.md to the output."""
    started = time.perf_counter()
    config.output.mkdir(parents=True, exist_ok=True)
    source = _load(config)
    model = source.model.eval()
    meta = get_model_meta(model)
    protected = protected_layers(model, config.protect)
    training = source.metadata.get("training") or {}
    data = config.data or training.get("data")
    if config.finetune_epochs and data is None:
        raise PruneError("fine-tuning needs images: pass --data digits|DIR, or --finetune-epochs 0")
    if config.method == "taylor" and data is None:
        raise PruneError("Taylor importance needs training images: pass --data digits|DIR")
    example = torch.zeros(1, *meta.preprocessing.input_shape)
    before_dims = layer_dims(model)
    current = Checkpoint(source.path, copy.deepcopy(model), source.metadata)  # the source stays whole for "before"
    for step in range(1, config.iterative + 1):
        # each step prunes the model as it is now; together they reach the ratio of the original
        done, target = config.ratio * (step - 1) / config.iterative, config.ratio * step / config.iterative
        if progress:
            what = "weights" if config.unstructured else "channels"
            log.info(f"step {step}/{config.iterative}: removing {target:.0%} of the {what} in all")
        if config.unstructured:
            prune_unstructured(current.model, target, protected)
        else:
            gradients = _taylor_gradients(current, data, config) if config.method == "taylor" else None
            relative = 1 - (1 - target) / (1 - done)
            prune_channels(
                current.model, example, relative, config.method, config.scope, config.round_to, protected, gradients
            )
        current = _save(
            current, before_dims, _extras(current.metadata, config), config.output / f"step{step}" / "pruned.pt"
        )
        if config.finetune_epochs:
            current = _finetune(current, data, training, config, config.output / f"step{step}", progress)
    if config.unstructured and config.finetune_epochs:  # fine-tuning refills zeros: prune once more, at the end
        prune_unstructured(current.model, config.ratio, protected)
    final = save_checkpoint(config.output / "pruned.pt", current.model, **_extras(current.metadata, config))
    report = _report(config, source, load_checkpoint(final), data, before_dims, time.perf_counter() - started)
    write_json(config.output / "prune.json", report.to_dict())
    with atomic_path(config.output / "prune.md") as temporary:
        temporary.write_text(markdown(report), encoding="utf-8")
    return report


def _extras(metadata: dict[str, Any], config: PruneConfig) -> dict[str, Any]:
    """A checkpoint's sections (data split, training) plus how the model was pruned."""
    kept = {key: value for key, value in metadata.items() if key not in ("schema_version", "edgecnn_version", "model")}
    pruning = {
        "mode": "unstructured" if config.unstructured else "structured",
        "method": config.method,
        "scope": config.scope,
        "ratio": config.ratio,
        "round_to": config.round_to,
        "iterative": config.iterative,
        "finetune_epochs": config.finetune_epochs,
        "source": str(config.model),
    }
    return {**kept, "pruning": pruning}


def record_layer_shapes(model: nn.Module, before: dict[str, list[int]]) -> None:
    """Note the channel counts that changed since ``before`` (``layer_dims``) in the model's metadata,
    where a checkpoint keeps them to rebuild the pruned architecture."""
    meta = get_model_meta(model)
    changed = {name: dims for name, dims in layer_dims(model).items() if before.get(name) != dims}
    meta.layer_shapes = {**(meta.layer_shapes or {}), **changed} or None


def _save(current: Checkpoint, before_dims: dict[str, list[int]], extras: dict[str, Any], path: Path) -> Checkpoint:
    record_layer_shapes(current.model, before_dims)
    return Checkpoint(save_checkpoint(path, current.model, **extras), current.model, current.metadata)


def _finetune(
    current: Checkpoint, data: str, training: dict[str, Any], config: PruneConfig, folder: Path, progress: bool
) -> Checkpoint:
    """Fine-tune through the training stage: same data, augmentation, split and optimizer as training."""
    from edgecnn.train import TrainConfig, train

    same = (
        "augment",
        "val_fraction",
        "test_fraction",
        "train_images",
        "seed",
        "batch_size",
        "optimizer",
        "weight_decay",
        "loss",
    )
    settings = {key: training[key] for key in same if key in training}
    lr = config.lr or training.get("lr")
    result = train(
        TrainConfig(str(current.path), data=data, epochs=config.finetune_epochs, lr=lr, output=folder, **settings),
        progress=progress,
    )
    if result.interrupted:
        raise KeyboardInterrupt
    return load_checkpoint(result.checkpoint)


def _taylor_gradients(current: Checkpoint, data: str, config: PruneConfig) -> Callable[[nn.Module], None]:
    """Cross-entropy on a few batches of the training split, back-propagated (gradients accumulate)."""
    from edgecnn.data.datasets import ImageDataset, open_source, split_for

    source = open_source(data)
    if not source.labelled:
        raise PruneError(f"{source.name} has no class folders: Taylor importance needs labels (ROOT/CLASS/IMAGE.jpg)")
    split = split_for(source, current.metadata.get("data"))
    dataset = ImageDataset(source, split.train, get_model_meta(current.model).preprocessing)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)
    )

    def accumulate(model: nn.Module) -> None:
        model.eval()
        for index, (images, labels) in enumerate(loader):
            if index == TAYLOR_BATCHES:
                break
            nn.functional.cross_entropy(model(images), labels).backward()

    return accumulate


def _figures(checkpoint: Checkpoint, data: str | None) -> Figures:
    model = checkpoint.model
    shape = get_model_meta(model).preprocessing.input_shape
    raw = checkpoint.path.read_bytes()
    accuracy = None
    if data is not None:
        from edgecnn.bench.benchmark import evaluate

        accuracy = evaluate([checkpoint.path], data)[0]["top1"]
    return Figures(
        checkpoint=str(checkpoint.path),
        params=count_params(model),
        nonzero_params=int(sum(int(p.count_nonzero()) for p in model.parameters())),
        macs=count_macs(model, shape),
        size_bytes=len(raw),
        compressed_bytes=len(zlib.compress(raw, 6)),
        accuracy=accuracy,
    )


def _report(
    config: PruneConfig, source: Checkpoint, pruned: Checkpoint, data: str | None, before_dims: dict, seconds: float
) -> PruneReport:
    from edgecnn.bench.benchmark import BenchConfig, bench

    before, after = _figures(source, data), _figures(pruned, data)
    measured = bench(BenchConfig([source.path, pruned.path], threads=1, warmup=5, runs=50)).hosts[0].results
    before.latency_p50_ms, after.latency_p50_ms = (result["latency"]["p50_ms"] for result in measured)
    notes = []
    if config.unstructured:
        notes.append(
            "unstructured: the weights keep their shapes, so a dense runtime does the same work; "
            "the gain is in non-zeros and the compressed size"
        )
    changed = sum(before_dims.get(name) != dims for name, dims in layer_dims(pruned.model).items())
    return PruneReport(
        model=get_model_meta(pruned.model).name,
        mode="unstructured" if config.unstructured else "structured",
        method=config.method,
        scope=config.scope,
        ratio=config.ratio,
        round_to=None if config.unstructured else config.round_to,
        protected=protected_layers(pruned.model, config.protect),
        iterative=config.iterative,
        finetune_epochs=config.finetune_epochs,
        data=data,
        before=before,
        after=after,
        layers_changed=changed,
        seconds=seconds,
        notes=notes,
    )


def markdown(report: PruneReport) -> str:
    """Before and after, side by side, with the ratios that say whether it paid."""
    b, a = report.before, report.after
    rows = [
        ("parameters", f"{b.params:,}", f"{a.params:,}", a.params / b.params),
        ("non-zero parameters", f"{b.nonzero_params:,}", f"{a.nonzero_params:,}", a.nonzero_params / b.nonzero_params),
        ("MACs", f"{b.macs:,}", f"{a.macs:,}", a.macs / b.macs),
        (
            "checkpoint size",
            f"{b.size_bytes / 1e6:.2f} MB",
            f"{a.size_bytes / 1e6:.2f} MB",
            a.size_bytes / b.size_bytes,
        ),
        (
            "compressed size",
            f"{b.compressed_bytes / 1e6:.2f} MB",
            f"{a.compressed_bytes / 1e6:.2f} MB",
            a.compressed_bytes / b.compressed_bytes,
        ),
    ]
    if b.latency_p50_ms and a.latency_p50_ms:
        rows.append(
            (
                "PyTorch p50 (1 thread)",
                f"{b.latency_p50_ms:.3g} ms",
                f"{a.latency_p50_ms:.3g} ms",
                a.latency_p50_ms / b.latency_p50_ms,
            )
        )
    lines = [
        f"# {report.model}: {report.mode} pruning, {report.ratio:.0%} ({report.method}, {report.scope})",
        "",
        f"Protected: {', '.join(report.protected)}. Round to: {report.round_to or '–'}. "
        f"Steps: {report.iterative}, each followed by {report.finetune_epochs} fine-tuning epochs "
        f"on {report.data or '–'}. "
        f"Layers changed: {report.layers_changed}. Took {report.seconds:.0f} s.",
        "",
        "| | before | after | after / before |",
        "|---|---|---|---|",
        *(f"| {name} | {x} | {y} | {ratio:.2f} |" for name, x, y, ratio in rows),
    ]
    if b.accuracy is not None and a.accuracy is not None:
        lines.append(
            f"| top-1 (held-out) | {b.accuracy:.2f}% | {a.accuracy:.2f}% | {a.accuracy - b.accuracy:+.2f} points |"
        )
    lines += ["", *(f"Note: {note}" for note in report.notes)]
    lines.append(
        "Latency in each runtime (ONNX Runtime, OpenVINO, LiteRT; fp32 and int8): export both checkpoints "
        "and `edgecnn bench` them side by side, or `benchmarks/prune_tradeoff.py`."
    )
    return "\n".join(lines) + "\n"
