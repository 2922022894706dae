"""The ``edgecnn`` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from edgecnn import __version__
from edgecnn import _interrupt as interrupt
from edgecnn.data.augment import DEFAULT_AUGMENT
from edgecnn.data.datasets import BUILT_IN
from edgecnn.errors import EdgeCNNError
from edgecnn.export.pipeline import STATUS_RULE
from edgecnn.runtime.base import VERBOSE_ENV, third_party_output_wanted
from edgecnn.runtime.targets import TARGETS
from edgecnn.train.config import LossName, OptimizerName, SchedulerName

if TYPE_CHECKING:
    from edgecnn.bench.gate import GateReport

SCHEMA_VERSION = 1
PUBLISHED_WEIGHTS_HELP = (
    "For a model name: 'imagenet' (torchvision's default set, V2 where published), 'imagenet-v1', 'imagenet-v2', "
    "a state-dict PATH or 'none' (random); default: 'imagenet' where the model publishes weights, else random."
)
DATA_NAMES = "'" + "', '".join(BUILT_IN) + "' (built in)"
TARGET_HELP = (
    "The CPU the artifacts are for: auto (this machine), "
    + ", ".join(f"{t.name} ({t.description})" for t in TARGETS.values())
    + ". x86 without VNNI gets 7-bit int8 weights in onnx and openvino (8-bit pairs saturate there); "
    "bench warns when an artifact runs on a CPU unlike its target."
)
console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def _version(value: bool) -> None:
    if value:
        console.print(f"edgecnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also show the converters' and runtimes' own log lines (TensorFlow/absl, oneDNN, NNCF, OpenVINO, "
            "XNNPACK, deprecation warnings), kept off the terminal otherwise.",
        ),
    ] = False,
) -> None:
    """Classic CNNs to edge devices: build, train, quantize, export and benchmark.

    Set EDGECNN_DEBUG=1 to see tracebacks (it implies --verbose).
    """
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # worker processes and converters imported later read it
    _show_logs(third_party_output_wanted())


class _ConsoleHandler(logging.Handler):
    """Renders log records on stderr: edgecnn's own progress lines as they are, warnings marked."""

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if record.levelno >= logging.WARNING:
            err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)
        else:
            err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def _show_logs(verbose: bool) -> None:
    """edgecnn's library modules log through ``logging``; the command line shows their INFO lines. Verbose,
    it shows every library's INFO lines too (the root logger), and warnings through the same channel."""
    handler = _ConsoleHandler()
    shown = logging.getLogger() if verbose else logging.getLogger("edgecnn")
    shown.handlers = [handler]
    shown.setLevel(logging.INFO)
    logging.getLogger("edgecnn").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(verbose)


class _ListByDefault(TyperGroup):
    """``edgecnn models [PATTERN]`` lists; ``edgecnn models info NAME`` describes one model."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


models_app = typer.Typer(
    cls=_ListByDefault,
    help="List the model zoo (`edgecnn models [PATTERN]` is `models list`), or describe one model.",
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(
    pattern: Annotated[str, typer.Argument(help="Glob (resnet*) or substring (mobilenet) of model names.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Table of models: parameters, MACs at the default resolution, input size, ImageNet top-1."""
    from edgecnn.models.summary import summarize_models

    summaries = summarize_models(pattern)
    if not summaries:
        raise EdgeCNNError(f"no model matches {pattern!r}; `edgecnn models` lists them all")
    if as_json:
        print(json.dumps({"schema_version": SCHEMA_VERSION, "models": [s.to_dict() for s in summaries]}, indent=2))
        return
    table = Table(title=f"edgecnn models ({len(summaries)})")
    table.add_column("name", no_wrap=True)
    table.add_column("family")
    for column in ("params", "MACs", "input", "ImageNet top-1"):
        table.add_column(column, justify="right")
    for s in summaries:
        table.add_row(
            s.name,
            s.family,
            f"{s.params / 1e6:.2f}M",
            _si(s.macs),
            f"{s.input_size[0]}×{s.input_size[1]}×{s.input_size[2]}",
            "–" if s.imagenet_top1 is None else f"{s.imagenet_top1:.1f}",
        )
    console.print(table)


@models_app.command("info")
def models_info(
    name: Annotated[str, typer.Argument(help="A model name from `edgecnn models`.")],
    depth: Annotated[int, typer.Option(min=1, max=6, help="How deep the layer summary goes.")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """One model: its figures, preprocessing, weights and a layer summary."""
    from edgecnn.models.summary import describe_model

    info = describe_model(name, depth)
    if as_json:
        print(json.dumps({"schema_version": SCHEMA_VERSION, **info.to_dict()}, indent=2))
        return
    s = info.summary
    console.print(f"[bold]{s.name}[/bold] — {s.description}")
    facts = {
        "family": s.family,
        "paper": s.paper,
        "parameters": f"{s.params:,}",
        "MACs": f"{s.macs:,} at {s.input_size[1]}×{s.input_size[2]}",
        "input (C×H×W)": "×".join(map(str, s.input_size)),
        "preprocessing": info.preprocessing_text,
        "ImageNet weights": info.weights_text,
        "builder arguments": ", ".join(info.arguments),
    }
    for key, value in facts.items():
        console.print(f"  {key:18s} {value}")
    table = Table(title="layers")
    for column in ("module", "type", "output", "params", "MACs"):
        table.add_column(column, justify="right" if column in ("params", "MACs") else "left")
    for row in info.layers:
        table.add_row(row.name, row.kind, "×".join(map(str, row.output_shape[1:])), f"{row.params:,}", f"{row.macs:,}")
    console.print(table)


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="A model name (`edgecnn models`) or an edgecnn checkpoint (.pt).")],
    data: Annotated[str, typer.Option(help=f"{DATA_NAMES} or a folder ROOT/CLASS/IMAGE.")] = "digits",
    weights: Annotated[
        str | None,
        typer.Option(
            help="Start from 'imagenet' (torchvision's default set), 'imagenet-v1', 'imagenet-v2' or a state-dict "
            "PATH; default: random."
        ),
    ] = None,
    input_size: Annotated[int | None, typer.Option(help="Square input resolution; default: the model's.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training split.")] = 30,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step (per process under torchrun).")] = 64,
    optimizer: Annotated[OptimizerName, typer.Option(help="Optimizer.")] = OptimizerName.adamw,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate; default depends on the optimizer.")] = None,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="The optimizer's weight decay.")] = 1e-4,
    scheduler: Annotated[SchedulerName, typer.Option(help="Learning-rate schedule, stepped per batch.")] = (
        SchedulerName.cosine
    ),
    label_smoothing: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Cross-entropy label smoothing; 0: off.")
    ] = 0.0,
    dropout: Annotated[float | None, typer.Option(help="Override the head's dropout.")] = None,
    freeze: Annotated[
        str,
        typer.Option(help="'none' (fine-tune all), 'backbone' (train the head only) or N (train the last N blocks)."),
    ] = "none",
    early_stopping: Annotated[int, typer.Option(min=0, help="Stop after N epochs without improvement; 0: off.")] = 0,
    augment: Annotated[
        str, typer.Option(help="Training augmentation: 'crop=0.8,rotate=15,flip,jitter=0.2,noise=0.03' or 'none'.")
    ] = DEFAULT_AUGMENT,
    loss: Annotated[LossName, typer.Option(help="Cross-entropy, or MSE against one-hot targets.")] = (
        LossName.cross_entropy
    ),
    seed: Annotated[int, typer.Option(help="Seeds the split, the initialisation and the batch order.")] = 0,
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Held out to pick the best epoch (and for --early-stopping).")
    ] = 0.15,
    test_fraction: Annotated[
        float, typer.Option(min=0.01, max=0.9, help="Ignored where the data set publishes its test split.")
    ] = 0.15,
    train_images: Annotated[
        int | None, typer.Option(min=1, help="Train on a seeded, class-balanced subset of N training images.")
    ] = None,
    workers: Annotated[int, typer.Option(min=0, help="Data-loading worker processes.")] = 0,
    strict: Annotated[bool, typer.Option(help="Fail on unreadable files instead of skipping them.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (mixed precision on CUDA).")] = "auto",
    amp: Annotated[bool, typer.Option(help="Mixed precision (float16) on CUDA; CPU trains in float32.")] = True,
    channels_last: Annotated[
        bool,
        typer.Option(
            help="Train in NHWC memory layout: depthwise convolutions (MobileNet, EfficientNet) train faster."
        ),
    ] = False,
    qat: Annotated[
        bool,
        typer.Option(
            "--qat",
            help="Quantization-aware fine-tuning of a checkpoint: its int8 layers train with weights and inputs "
            "rounded as int8 will round them (BatchNorm frozen), on its own data and split, at a tenth of the "
            "default learning rate; export the result as any checkpoint.",
        ),
    ] = False,
    output: Annotated[Path, typer.Option(help="Run folder: best.pt, last.pt, metrics.json, curves.png.")] = Path(
        "runs/train"
    ),
    as_json: JsonFlag = False,
) -> None:
    """Train or fine-tune a model; keeps the best checkpoint by validation accuracy.

    Launch the same command with `torchrun --nproc-per-node N` to train with DistributedDataParallel.
    """
    from edgecnn.train import TrainConfig
    from edgecnn.train import train as run_training

    config = TrainConfig(
        model=model,
        data=data,
        output=output,
        weights=weights,
        input_size=input_size,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        scheduler=scheduler,
        label_smoothing=label_smoothing,
        dropout=dropout,
        freeze=freeze,
        early_stopping=early_stopping,
        augment=augment,
        loss=loss,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        train_images=train_images,
        workers=workers,
        strict=strict,
        device=device,
        amp=amp,
        channels_last=channels_last,
        qat=qat,
    )
    result = run_training(config, progress=not as_json)
    if as_json and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.to_dict(), indent=2))
    if result.interrupted:
        raise typer.Exit(130)


@app.command(
    "export",
    help="Fold BatchNorm, export (and quantize), then verify every artifact in its own runtime.\n\n"
    "Every artifact gets a status in export.json and its sidecar. One that misses its target prints a warning; "
    f"a broken one makes the command exit 1 naming it, unless --keep-degraded. {STATUS_RULE}.",
)
def export_command(
    model: Annotated[str, typer.Argument(help="A model name or an edgecnn checkpoint (.pt) from `edgecnn train`.")],
    formats: Annotated[str, typer.Option("--formats", "--format", help="Comma-separated formats, or 'all'.")] = "all",
    int8: Annotated[bool, typer.Option("--int8", help="Also write int8 (static post-training) artifacts.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Write fp16 artifacts (formats that support it).")] = False,
    calib: Annotated[
        str | None,
        typer.Option(
            help=f"Calibration images: {DATA_NAMES}, an ImageFolder or a flat folder of images; default: a "
            "checkpoint's own data, Imagenette for ImageNet weights."
        ),
    ] = None,
    calib_size: Annotated[int, typer.Option(min=1, help="Calibration images, class-balanced.")] = 128,
    calib_method: Annotated[
        str,
        typer.Option(
            help="Activation ranges: auto (each toolchain's recommended), minmax (onnx: per-image min/max averaged; "
            "tflite: global), percentile (0.001%-99.999%), entropy (onnx only); openvino takes auto only."
        ),
    ] = "auto",
    weights: Annotated[str | None, typer.Option(help=PUBLISHED_WEIGHTS_HELP)] = None,
    input_size: Annotated[int | None, typer.Option(min=8, help="Square input resolution (model names only).")] = None,
    batch: Annotated[str, typer.Option(help="Batch dimension: a number or 'dynamic'.")] = "1",
    output: Annotated[Path, typer.Option(help="Folder for the artifacts, their sidecar JSON and export.json.")] = Path(
        "runs/export"
    ),
    keep_degraded: Annotated[
        bool,
        typer.Option(
            "--keep-degraded",
            help="Exit 0 even when an artifact's verification says it is broken (it is kept either way).",
        ),
    ] = False,
    target: Annotated[str, typer.Option(help=TARGET_HELP)] = "auto",
    sensitivity: Annotated[
        str | None,
        typer.Option(
            help="Also rank the layers by the int8 error each alone causes, simulated on the calibration images: "
            "by layer, block or kind (sensitivity.json/.md/.png beside the artifacts). Needs --int8."
        ),
    ] = None,
    float_layers: Annotated[
        list[str] | None,
        typer.Option(
            help="A layer to keep float in every int8 artifact, by its PyTorch module name (repeatable; "
            "--sensitivity ranks them), beside what each format's recipe keeps float."
        ),
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Accuracy-aware int8: an int8 artifact losing more top-1 points than this on the held-out images "
            "(or disagreeing with fp32 on more % of them, without labels) is exported again with the layers most "
            "sensitive to int8 kept float, the fewest that bring it within.",
        ),
    ] = None,
    min_agreement: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=1,
            help="Accuracy-aware int8, alone or with --max-drop: keep layers float likewise until each int8 "
            "artifact's top-1 agrees with PyTorch fp32 on at least this fraction of the held-out images (e.g. "
            "0.99, what `check` holds by default); a small drop can hide many changed answers.",
        ),
    ] = None,
    int8_correction: Annotated[
        str,
        typer.Option(
            help="Before any format quantizes, make the folded model easier to quantize: cle (cross-layer "
            "equalization: exact in fp32; pairs through ReLU6 or hard-swish are left alone), bias (bias "
            "correction: the mean shift int8 rounding causes, measured on the calibration images, taken out of "
            "each layer's bias; NNCF's own is then off), cle+bias, none (OpenVINO keeps NNCF's bias correction), "
            "raw (NNCF's off too: int8 with no correction at all, the baseline), or auto: the one whose simulated "
            "int8 is measurably closest to fp32 on the held-out images (OpenVINO keeps NNCF's bias correction).",
        ),
    ] = "auto",
    per_tensor: Annotated[
        bool,
        typer.Option(
            "--per-tensor",
            help="One int8 weight scale per layer instead of per output channel (for accelerators that "
            "take only that); --int8-correction matters most here.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    from edgecnn.export import ExportConfig, changed_top1_line, export
    from edgecnn.optimize.int8_correction import CorrectionReport

    config = ExportConfig(
        model=model,
        formats=formats,
        int8=int8,
        fp16=fp16,
        calib=calib,
        calib_size=calib_size,
        calib_method=calib_method,
        weights=weights,
        input_size=input_size,
        batch=batch,
        output=output,
        keep_degraded=keep_degraded,
        target=target,
        sensitivity=sensitivity,
        float_layers=float_layers or [],
        max_drop=max_drop,
        min_agreement=min_agreement,
        int8_correction=int8_correction,
        per_tensor=per_tensor,
    )
    report = export(config)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    reference = "" if report.reference_accuracy is None else f", PyTorch fp32 {report.reference_accuracy:.2f}%"
    images = f"{report.verification_images} {report.verification_inputs} images"
    table = Table(
        title=f"{report.model}: verified on {images}{reference}",
        caption="Δ/range: max |Δlogit| over the logits' range; agree: top-1 agreement with PyTorch fp32",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("artifact", no_wrap=True)
    for column in ("size", "time", "Δ/range", "cosine", "agree", "acc.", "status"):
        table.add_column(column, justify="right", no_wrap=True)
    for artifact in report.artifacts:
        checks = artifact.verification
        accuracy = checks.get("accuracy")
        table.add_row(
            Path(artifact.path).name,
            f"{artifact.size_bytes / 1e6:.2f}MB",
            f"{artifact.export_seconds:.1f} s",
            f"{checks['max_abs_diff_over_range']:.1e}",
            f"{checks['cosine']:.4f}",
            f"{checks['top1_agreement']:.1f}%",
            "–" if accuracy is None else f"{accuracy:.2f}%",
            artifact.status,
        )
    console.print(table)
    for artifact in report.artifacts:
        if line := changed_top1_line(Path(artifact.path).name, artifact.verification):
            console.print(line, highlight=False)
    for artifact in report.artifacts:
        if artifact.max_drop_search:
            kept = ", ".join(f"{name} {error:.3f}" for name, error in artifact.kept_float_errors.items()) or "none"
            tries = ", ".join(
                f"{t['kept_float']}: {t['loss']:.2f}/{t['agreement']:.1f}%" for t in artifact.max_drop_search
            )
            cost = artifact.float_latency
            latency = (
                f"; p50 {cost['full_int8_p50_ms']:.3g} → {cost['with_float_p50_ms']:.3g} ms ({cost['ratio']:.2f}×, "
                "interleaved, this machine)"
                if cost
                else ""
            )
            console.print(
                f"{Path(artifact.path).name}: {len(artifact.kept_float)} layer(s) kept float for "
                f"{config.accuracy_budget()} ({kept}: relative error alone); tried (layers float: loss/agreement) "
                f"{tries}{latency}",
                highlight=False,
            )
    if report.int8_correction:
        console.print(CorrectionReport(**report.int8_correction).summary(), highlight=False)
    if report.sensitivity:
        ranked = sorted(report.sensitivity["rows"], key=lambda row: row["rank"])[:5]
        most = ", ".join(f"{row['name']} ({row['relative_error']:.3f})" for row in ranked)
        console.print(f"most int8-sensitive ({report.sensitivity['grouping']}, relative error alone): {most}")
        console.print(str(output / "sensitivity.md"), highlight=False)
    console.print(f"{output / 'export.json'} ({report.seconds:.0f} s)")


@app.command("prune")
def prune_command(
    model: Annotated[
        str, typer.Argument(help="An edgecnn checkpoint (.pt; fine-tunes on its own data) or a model name.")
    ],
    ratio: Annotated[
        float, typer.Option(help="Fraction of channels (or, with --unstructured, of weights) to remove.")
    ] = 0.3,
    method: Annotated[
        str, typer.Option(help="Channel importance: l1, l2 (weight magnitude) or taylor (gradients).")
    ] = "l1",
    scope: Annotated[
        str, typer.Option(help="per-layer (the ratio in every layer) or global (least important overall).")
    ] = ("per-layer"),
    round_to: Annotated[
        int, typer.Option(min=1, help="Keep channel counts multiples of this (8: XNNPACK/VNNI int8 vectors); 1: off.")
    ] = 8,
    protect: Annotated[
        list[str] | None, typer.Option(help="A layer to keep whole (repeatable); stem and classifier always are.")
    ] = None,
    iterative: Annotated[int, typer.Option(min=1, help="Prune → fine-tune steps that reach the ratio together.")] = 2,
    finetune_epochs: Annotated[int, typer.Option(min=0, help="Fine-tuning epochs after each step; 0: none.")] = 10,
    lr: Annotated[float | None, typer.Option(help="Fine-tuning peak learning rate (default: the training's).")] = None,
    data: Annotated[
        str | None, typer.Option(help=f"{DATA_NAMES} or a folder; default: the checkpoint's training data.")
    ] = None,
    unstructured: Annotated[
        bool, typer.Option("--unstructured", help="Zero single weights instead: smaller compressed file, same latency.")
    ] = False,
    weights: Annotated[str | None, typer.Option(help=PUBLISHED_WEIGHTS_HELP)] = None,
    input_size: Annotated[int | None, typer.Option(min=8, help="Square input resolution (model names only).")] = None,
    output: Annotated[Path, typer.Option(help="Folder for pruned.pt, prune.json, prune.md and the steps.")] = Path(
        "runs/prune"
    ),
    as_json: JsonFlag = False,
) -> None:
    """Structured channel pruning (torch-pruning's dependency graph) with fine-tuning; reports before/after.

    The pruned checkpoint works everywhere a checkpoint does: export, bench, eval, check, train.
    """
    from edgecnn.optimize.prune import PruneConfig, markdown, prune

    config = PruneConfig(
        model=model,
        ratio=ratio,
        method=method,
        scope=scope,
        round_to=round_to,
        protect=protect or [],
        iterative=iterative,
        finetune_epochs=finetune_epochs,
        lr=lr,
        data=data,
        unstructured=unstructured,
        weights=weights,
        input_size=input_size,
        output=output,
    )
    report = prune(config, progress=not as_json)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    console.print(markdown(report), highlight=False, markup=False)
    console.print(str(output / "pruned.pt"), highlight=False)


ArtifactsArgument = Annotated[
    list[Path], typer.Argument(help="Artifacts (.onnx, .xml, .tflite) or edgecnn checkpoints (.pt, PyTorch eager).")
]
RuntimeOption = Annotated[
    str, typer.Option(help="auto (from the file suffix), onnxruntime, openvino, litert or pytorch.")
]
DeviceOption = Annotated[str, typer.Option(help="cpu or gpu (CUDA/TensorRT, OpenVINO GPU, PyTorch CUDA).")]


@app.command("bench")
def bench_command(
    artifacts: ArtifactsArgument,
    runtime: RuntimeOption = "auto",
    device: DeviceOption = "cpu",
    threads: Annotated[int | None, typer.Option(min=1, help="Threads per runtime (default: its own).")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Images per call.")] = 1,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls per artifact first, at least.")] = 10,
    max_warmup: Annotated[
        float, typer.Option(min=0, help="Then warm up until the median latency settles, for at most S s (0: off).")
    ] = 10.0,
    cooldown: Annotated[float, typer.Option(min=0, help="Seconds idle after loading, before the warm-up.")] = 0.0,
    runs: Annotated[int | None, typer.Option(min=1, help="Timed calls per artifact (default 100).")] = None,
    min_time: Annotated[
        float | None, typer.Option(min=0.01, help="Instead of --runs: time the rounds for at least S seconds.")
    ] = None,
    mode: Annotated[str, typer.Option(help="latency, or throughput (adds parallel requests, one per core).")] = (
        "latency"
    ),
    profile: Annotated[
        bool,
        typer.Option(
            "--profile", help="Also profile each artifact per op (after timing) and say why int8 is not faster."
        ),
    ] = False,
    precision: Annotated[
        str | None, typer.Option(help="Pin the compute precision: f32, bf16 or fp16 (OpenVINO, PyTorch).")
    ] = None,
    data: Annotated[str | None, typer.Option(help=f"Also measure accuracy on {DATA_NAMES} or an image folder.")] = None,
    remote: Annotated[
        str | None, typer.Option(help="[USER@]HOST: run on a device over your OpenSSH client (keys, ~/.ssh/config).")
    ] = None,
    remote_python: Annotated[str, typer.Option(help="Python 3 on the device (with numpy and a runtime).")] = (
        "python3"
    ),
    fleet: Annotated[
        Path | None, typer.Option(help="A file of hosts, one '[user@]host [python]' per line, run in parallel.")
    ] = None,
    ssh_config: Annotated[Path | None, typer.Option(help="An ssh_config file to use instead of ~/.ssh/config.")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds a remote benchmark may take.")] = 600,
    report: Annotated[
        Path | None, typer.Option(help="Folder for bench.json, bench.md, bench.csv and the plots.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Latency, throughput, memory (and accuracy with --data) of each artifact in its own runtime.

    Several artifacts are measured interleaved (A B C A B C …) and compared with the first.
    """
    from edgecnn.bench.benchmark import BenchConfig, bench
    from edgecnn.bench.report import notes, tables, write_report

    config = BenchConfig(
        artifacts=artifacts,
        runtime=runtime,
        device=device,
        threads=threads,
        precision=precision,
        batch=batch,
        warmup=warmup,
        max_warmup=max_warmup,
        cooldown=cooldown,
        runs=runs,
        min_time=min_time,
        mode=mode,
        profile=profile,
        data=data,
        remote=remote,
        remote_python=remote_python,
        fleet=fleet,
        ssh_config=ssh_config,
        timeout=timeout,
    )
    where = ", ".join(host.destination for host in config.hosts) or "this machine"
    with err_console.status(f"measuring {len(artifacts)} artifact(s) on {where}"):
        result = bench(config)
    written = write_report(result, report) if report else []
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for table in tables(result):
            console.print(table)
        for line in notes(result):
            console.print(f"[yellow]note:[/yellow] {line}", highlight=False)
        for path in written:
            console.print(str(path))
    if any(host.error for host in result.hosts):
        raise typer.Exit(1)


@app.command("tune")
def tune_command(
    model: Annotated[str, typer.Argument(help="A checkpoint (.pt) or a registered model name.")],
    device: Annotated[
        str, typer.Option(help="Where it will run: local (this machine) or [USER@]HOST, measured over SSH.")
    ] = "local",
    max_drop: Annotated[
        float, typer.Option(min=0, help="Top-1 points the chosen artifact may lose against the unpruned fp32 model.")
    ] = 0.5,
    prune: Annotated[
        str, typer.Option(help="Comma-separated pruning ratios to try (0: the model as it is), e.g. 0,0.3,0.5.")
    ] = "0",
    formats: Annotated[str, typer.Option(help="Comma-separated formats (onnx, openvino, tflite) or all.")] = "all",
    threads: Annotated[str, typer.Option(help="Comma-separated thread counts to try, e.g. 1,2,4.")] = "1",
    data: Annotated[
        str | None,
        typer.Option(help=f"Labelled images: {DATA_NAMES} or a folder; default: the checkpoint's training data."),
    ] = None,
    finetune_epochs: Annotated[
        int, typer.Option(min=0, help="Fine-tuning epochs after each pruning step; 0: none.")
    ] = 10,
    weights: Annotated[str | None, typer.Option(help=PUBLISHED_WEIGHTS_HELP)] = None,
    input_size: Annotated[int | None, typer.Option(min=8, help="Square input resolution (model names only).")] = None,
    target: Annotated[str, typer.Option(help=TARGET_HELP)] = "auto",
    runs: Annotated[int, typer.Option(min=1, help="Timed calls per candidate.")] = 100,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls per candidate first.")] = 10,
    remote_python: Annotated[str, typer.Option(help="Python 3 on the device (with numpy and a runtime).")] = (
        "python3"
    ),
    ssh_config: Annotated[Path | None, typer.Option(help="An ssh_config file to use instead of ~/.ssh/config.")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds each remote measurement may take.")] = 600,
    output: Annotated[
        Path, typer.Option(help="Folder for the candidates, tune.json, pareto.png and deploy/ (artifact + card).")
    ] = Path("runs/tune"),
    as_json: JsonFlag = False,
) -> None:
    """The fastest artifact for a device within an accuracy budget, with its deployment card.

    Exports every candidate (formats × fp32/int8 × pruning ratios), measures each on the device at each
    thread count (interleaved), and picks the fastest whose top-1 drop on the held-out images is within
    --max-drop. Writes deploy/ (the artifact and DEPLOYMENT.md), tune.json and pareto.png.
    """
    from edgecnn.bench.tune import TuneConfig, tune

    config = TuneConfig(
        model=model,
        device=device,
        max_drop=max_drop,
        prune=prune,
        formats=formats,
        threads=threads,
        data=data,
        finetune_epochs=finetune_epochs,
        weights=weights,
        input_size=input_size,
        target=target,
        runs=runs,
        warmup=warmup,
        remote_python=remote_python,
        ssh_config=ssh_config,
        timeout=timeout,
        output=output,
    )
    report = tune(config)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    chosen = report.chosen
    console.print(
        f"chosen: {Path(chosen.artifact).name} ({chosen.label}, {chosen.runtime}): p50 {chosen.p50_ms:.3f} ms, "
        f"top-1 {chosen.top1:.2f}% (drop {chosen.drop:.2f})",
        highlight=False,
    )
    console.print(f"why: {report.why}", highlight=False)
    for path in [*report.deployed, output / "deploy" / "DEPLOYMENT.md", output / "pareto.png"]:
        console.print(str(path), highlight=False)


@app.command("eval")
def eval_command(
    artifacts: ArtifactsArgument,
    data: Annotated[str, typer.Option(help=f"{DATA_NAMES} or an image folder (class per subfolder).")],
    runtime: RuntimeOption = "auto",
    device: DeviceOption = "cpu",
    as_json: JsonFlag = False,
) -> None:
    """Top-1 and top-5 accuracy of each artifact in its own runtime (held-out images of its training data)."""
    from edgecnn.bench.benchmark import evaluate

    with err_console.status(f"evaluating {len(artifacts)} artifact(s)"):
        results = evaluate(artifacts, data, runtime, device)
    if as_json:
        print(json.dumps({"schema_version": SCHEMA_VERSION, "results": results}, indent=2))
        return
    described = sorted({result["data"] for result in results})
    table = Table("artifact", "runtime", "top-1", "top-5", "images", box=box.SIMPLE_HEAD, caption="; ".join(described))
    for result in results:
        table.add_row(
            Path(result["artifact"]).name,
            result["runtime"],
            f"{result['top1']:.2f}%",
            f"{result['top5']:.2f}%",
            str(result["images"]),
        )
    console.print(table)


@app.command("diff")
def diff_command(
    artifacts: Annotated[
        list[Path],
        typer.Argument(help="Two or more artifacts (.onnx, .xml, .tflite) or checkpoints (.pt), any precision."),
    ],
    data: Annotated[
        str,
        typer.Option(help=f"{DATA_NAMES} or an image folder; a model's own data gives its held-out split."),
    ],
    runtime: RuntimeOption = "auto",
    device: DeviceOption = "cpu",
    layers: Annotated[
        bool,
        typer.Option(
            "--layers",
            help="Also compare every convolution and fully connected layer of each artifact with the PyTorch "
            "checkpoint's (give it among the inputs): SQNR per layer, and the first layer where the error jumps.",
        ),
    ] = False,
    layer_images: Annotated[int, typer.Option(min=1, help="Images for --layers (the first of the set).")] = 32,
    report: Annotated[
        Path | None, typer.Option(help="Write diff.json and diff.md (and layers.png with --layers) into this folder.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Where artifacts of one model disagree: every pair's top-1 agreement and median / max |Δlogit| on the
    same images, and the images whose answers differ with each side's margin (top-1 minus top-2 logit).

    Accuracy is shown where the images have labels; a folder without class folders compares only."""
    from edgecnn.bench.diff import DiffConfig, diff, write_report

    config = DiffConfig(
        artifacts=artifacts, data=data, runtime=runtime, device=device, layers=layers, layer_images=layer_images
    )
    with err_console.status("comparing") as status:
        result = diff(config, progress=lambda message: status.update(message))
    written = write_report(result, report) if report else []
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    table = Table("#", "artifact", "runtime", "computed in", "top-1", box=box.SIMPLE_HEAD, caption=result.data)
    for number, side in enumerate(result.artifacts, start=1):
        accuracy = "–" if side.accuracy is None else f"{side.accuracy:.2f}%"
        table.add_row(str(number), Path(side.path).name, side.runtime, side.precision, accuracy)
    console.print(table)
    pairs = Table(
        "pair",
        "agree",
        "median |Δ|",
        "max |Δ|",
        "differ",
        "widest",
        box=box.SIMPLE_HEAD,
        caption="|Δ|: the logits' absolute difference; widest: the disagreeing image with the largest margin "
        "(top-1 minus top-2 logit) on either side, and both margins",
    )
    for pair in result.pairs:
        widest = max(pair.disagreements, key=lambda d: max(d.margins), default=None)
        shown = f"#{widest.image}: {widest.margins[0]:.2f} / {widest.margins[1]:.2f}" if widest else ""
        pairs.add_row(
            f"{pair.first + 1}–{pair.second + 1}",
            f"{pair.agreement:.2f}%",
            f"{pair.median_abs_diff:.3g}",
            f"{pair.max_abs_diff:.3g}",
            str(len(pair.disagreements)),
            shown,
        )
    console.print(pairs)
    if result.layers:
        traced = Table(
            "artifact",
            "first quantized",
            "first divergence",
            "lowest SQNR",
            box=box.SIMPLE_HEAD,
            caption=f"each layer against PyTorch fp32 on {result.layer_images} images; per layer: --report",
        )
        for item in result.layers:
            if item.error:
                traced.add_row(Path(item.artifact).name, item.error, "", "")
                continue
            traced.add_row(
                Path(item.artifact).name,
                item.first_quantized or "–",
                item.first_divergence or "–",
                item.lowest_text(),
            )
        console.print(traced)
    for path in written:
        console.print(str(path), highlight=False)


@app.command("verify")
def verify_command(
    artifacts: ArtifactsArgument,
    data: Annotated[str, typer.Option(help=f"{DATA_NAMES} or an image folder: the images both sides run on.")],
    arch: Annotated[str, typer.Option(help="The board's architecture (aarch64).")] = "aarch64",
    cpu: Annotated[
        str,
        typer.Option(help="The core qemu emulates: cortex-a72 (Raspberry Pi 4), cortex-a76 (Pi 5), cortex-a53 (Pi 3)."),
    ] = "cortex-a72",
    interpreters: Annotated[
        list[str] | None,
        typer.Option(
            "--interpreters",
            "--interpreter",
            help="The board's interpreter as NAME==VERSION, once per format: ai-edge-litert (default 1.4.0, the newest "
            "with aarch64 Linux wheels) or tflite-runtime for .tflite, onnxruntime and openvino (default: this "
            "machine's versions).",
        ),
    ] = None,
    images: Annotated[int, typer.Option(min=1, help="Images to compare on (the first of the set).")] = 32,
    as_json: JsonFlag = False,
) -> None:
    """Run artifacts as an ARM board would, before they ship: under qemu user-mode emulation, in the board's
    own interpreter (aarch64 wheels from PyPI, Python from Debian's arm64 packages, built once into the
    cache), against the same artifacts on this machine. Says whether each loads, the runtime's words when
    it does not, and how far its outputs are from this machine's. Timings under emulation mean nothing.

    Exit code 0 when every artifact runs and matches (within 1e-4 of the logits' range for fp32, 2e-3 for int8),
    1 otherwise."""
    from edgecnn.bench.emulated import VerifyConfig, verify

    config = VerifyConfig(artifacts, data, arch=arch, cpu=cpu, interpreters=interpreters or [], images=images)
    with err_console.status("preparing the emulated board") as status:
        result = verify(config, progress=lambda message: status.update(message))
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        raise typer.Exit(result.exit_code)
    table = Table(
        title=f"emulated {result.arch} {result.cpu} against this machine, {result.images} images",
        caption=result.data,
        box=box.SIMPLE_HEAD,
    )
    table.add_column("artifact", no_wrap=True)
    table.add_column("interpreter (computed in)")
    for column in ("max |Δ|/range", "agree", "verdict"):
        table.add_column(column, justify="right", no_wrap=True)
    marks = {"ok": "[green]ok[/green]", "differs": "[red]DIFFERS[/red]", "failed": "[red]FAILED[/red]"}
    for v in result.verdicts:
        compared = v.top1_agreement is not None and v.max_abs_diff_over_range is not None
        figures = [f"{v.max_abs_diff_over_range:.1e}", f"{v.top1_agreement:.1f}%"] if compared else ["–", "–"]
        where = f"{v.interpreter} ({v.computed_in})" if v.computed_in else v.interpreter
        table.add_row(Path(v.artifact).name, where, *figures, marks[v.status])
    console.print(table)
    for v in result.verdicts:
        console.print(f"  {Path(v.artifact).name}: {v.reason}", highlight=False, markup=False)
    raise typer.Exit(result.exit_code)


@app.command("check")
def check_command(
    candidates: Annotated[
        list[Path], typer.Argument(help="Artifacts to gate (.onnx, .xml, .tflite, or a .pt checkpoint).")
    ],
    baseline: Annotated[
        Path, typer.Option(help="The reference: a checkpoint, an artifact, or a baseline.json of its answers.")
    ],
    data: Annotated[
        str, typer.Option(help=f"{DATA_NAMES} or an image folder; a model's own data gives its held-out split.")
    ],
    max_drop: Annotated[float, typer.Option(min=0, help="Fail when accuracy falls more points than this.")] = 1.0,
    min_agreement: Annotated[
        float, typer.Option(min=0, max=1, help="Fail when top-1 agreement with the baseline is under this fraction.")
    ] = 0.99,
    metric: Annotated[str, typer.Option(help="top1 or top5.")] = "top1",
    runtime: RuntimeOption = "auto",
    device: DeviceOption = "cpu",
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here (one test case per candidate).")] = None,
    summary: Annotated[
        Path | None, typer.Option(help="Write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the full result as JSON here.")] = None,
    update_baseline: Annotated[
        Path | None,
        typer.Option(help="Store the baseline's answers in this file (baseline.json) for later --baseline runs."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Accuracy-regression gate: exit 0 when every candidate passes, 1 when one regressed, 2 when one
    could not be evaluated (missing data, unreadable artifact): a broken input never passes."""
    from edgecnn._io import write_json
    from edgecnn.bench.gate import GateConfig, load_baseline, run_gate, write_outputs

    try:
        config = GateConfig(
            candidates=candidates,
            baseline=baseline,
            data=data,
            max_drop=max_drop,
            min_agreement=min_agreement,
            metric=metric,
            runtime=runtime,
            device=device,
        )
        with err_console.status(f"evaluating the baseline and {len(candidates)} candidate(s)"):
            reference = load_baseline(config)
            if update_baseline:
                write_json(update_baseline, reference.to_dict())
            result = run_gate(config, reference)
    except EdgeCNNError as exc:
        _print_error(exc)
        raise typer.Exit(2) from None
    written = write_outputs(result, junit=junit, summary=summary, json_path=report)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_gate(result)
        for path in [*written, *([update_baseline] if update_baseline else [])]:
            console.print(str(path), highlight=False)
    raise typer.Exit(result.exit_code)


@app.command("run")
def run_command(
    recipe: Annotated[Path, typer.Argument(help="A recipe YAML file (see recipes/).")],
    force: Annotated[bool, typer.Option("--force", help="Run every step again, ignoring earlier results.")] = False,
    output: Annotated[
        Path | None, typer.Option(help="Folder for the steps and the report (default: the recipe's).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a whole pipeline from one recipe: steps reuse earlier results whose inputs did not change.

    Exit code: 0, or the worst step's (a gate: 1 failed, 2 could not evaluate).
    """
    from edgecnn.bench.gate import GateError
    from edgecnn.recipe import load_recipe, run_recipe

    loaded = load_recipe(recipe)
    if output is not None:
        loaded.output = output
    total = len(loaded.steps)

    def announce(index: int, step: Any, message: str) -> None:
        if not as_json:
            err_console.print(
                f"[bold][{index + 1}/{total}] {step.name or step.kind}[/bold]: {message}", highlight=False
            )

    try:
        result = run_recipe(loaded, force=force, on_step=announce)
    except GateError as exc:  # the gate's contract: could not evaluate is exit code 2, never a pass
        _print_error(exc)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        ran = sum(record.status == "ran" for record in result.steps)
        console.print(f"{loaded.name}: {ran} step(s) ran, {total - ran} reused; exit code {result.exit_code}")
        for path in result.report:
            console.print(path, highlight=False)
    raise typer.Exit(result.exit_code)


def _print_gate(result: GateReport) -> None:
    """The verdicts at a glance; per-class changes and flipped images are in --summary and --report."""
    table = Table(
        title=f"baseline {Path(result.baseline).name} ({result.baseline_runtime}): "
        f"{result.metric} {result.baseline_accuracy:.2f}% on {result.images} images",
        caption=f"fail: drop > {result.max_drop:g} point(s) or agreement < {result.min_agreement:.1%}",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("artifact", no_wrap=True)
    for column in (result.metric, "drop", "agree", "verdict"):
        table.add_column(column, justify="right", no_wrap=True)
    marks = {"pass": "[green]pass[/green]", "fail": "[red]FAIL[/red]", "error": "[yellow]not evaluated[/yellow]"}
    for v in result.verdicts:
        figures = ["–"] * 3 if v.accuracy is None else [f"{v.accuracy:.2f}%", f"{v.drop:+.2f}", f"{v.agreement:.1%}"]
        table.add_row(Path(v.artifact).name, *figures, marks[v.status])
    console.print(table)
    for v in result.verdicts:
        for line in [*v.reasons, *([v.noise] if v.noise and v.status != "pass" else [])]:
            console.print(f"  {Path(v.artifact).name}: {line}", highlight=False, markup=False)
    if result.resolution:
        err_console.print(f"[yellow]warning:[/yellow] {result.resolution}", highlight=False)


def _si(count: int) -> str:
    """A count with a unit a person reads at a glance: 416K, 301M, 1.81G."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}" if count < 100 * scale else f"{count / scale:,.0f}{unit}"
    return str(count)


def _print_error(exc: BaseException) -> None:
    err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point: the package's own errors become one line on stderr and exit code 1; a Ctrl-C is 130,
    also one that landed where Python ignores it (see ``edgecnn._interrupt``)."""
    interrupt.install()
    try:
        try:
            app()
        finally:
            interrupt.raise_if_interrupted()
    except EdgeCNNError as exc:
        if os.environ.get("EDGECNN_DEBUG") == "1":
            raise
        _print_error(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
