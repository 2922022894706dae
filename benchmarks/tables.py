"""The docs' benchmark tables, generated from ``benchmarks/results/*.json`` so a figure can't drift from its run.

A table sits in a Markdown file between ``<!-- table: NAME -->`` and ``<!-- /table -->``, where NAME is a
results file's stem; everything between the markers is this script's, headed by the line that says where
the figures come from (command, commit, date, machine). ``tests/test_docs.py`` fails when a block differs
from what its results file gives.

    .venv/bin/python benchmarks/tables.py            # rewrite the blocks in README.md and docs/*.md
    .venv/bin/python benchmarks/tables.py --check    # exit 1 and name the stale blocks
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
#: what every results file records besides its figures
PROVENANCE = ("commit", "date", "command", "machine")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
#: the smallest int8 drop (points, 10,000 images) whose halving can be told apart: int8_accuracy's paired 95%
#: intervals reach ±0.07 to ±0.36 point around the drop, so a plain drop below this is inside its own interval
RESOLVED_DROP = 0.2
#: int8 on Fashion-MNIST's cells: within this many points of fp32 and agreeing on this % of the test images
TARGET_DROP = 0.5
TARGET_AGREEMENT = 99.0

Row = dict[str, Any]
Renderer = Callable[[dict[str, Any]], list[str]]


def machine_text(machine: dict[str, Any]) -> str:
    """'Intel Xeon, AVX-512 VNNI + AMX int8, 2 cores': the CPU facts that decide int8 results."""
    flags = set(machine.get("cpu_flags") or ())
    int8 = [flag for flag in INT8_FLAGS if flag in flags]
    if not int8 and "avx2" in flags:
        int8 = ["avx2 without VNNI"]
    described = ", ".join(int8) or "no int8 dot product"
    return f"{machine.get('cpu_model', 'unknown CPU')} ({described}), {machine.get('cores')} cores"


def load_results(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def results_link(name: str, document: Path) -> str:
    """The path of results file ``name`` as ``document`` links it."""
    return os.path.relpath(RESULTS / f"{name}.json", document.parent)


def provenance_line(name: str, results: dict[str, Any], document: Path) -> str:
    link = results_link(name, document)
    return (
        f"*`{results['command']}` at commit {results['commit']}, {results['date'][:10]}, on "
        f"{machine_text(results['machine'])}; figures from [`benchmarks/results/{name}.json`]({link}).*"
    )


def table(header: list[str], rows: Iterator[list[Any]] | list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def train(results: dict[str, Any]) -> list[str]:
    header = ["model", "input", "epochs × batch", "layout", "test top-1", "target", "wall time", "train img/s"]
    return table(
        [*header, "data loading"],
        (
            [
                r["model"],
                f"{r['input_size']}×{r['input_size']}",
                f"{r['epochs']} × {r['batch_size']}",
                "NHWC" if r.get("channels_last") else "NCHW",
                f"{r['test_accuracy']:.2f}% ({r['test_images']:,} images)",
                f"≥ {r['target_accuracy']:g}% {mark(r['meets_target'])}",
                f"{r['seconds']:,.0f} s",
                f"{r['train_images_per_second']:,.0f}",
                f"{r['data_loading_share']:.1%}",
            ]
            for r in results["rows"]
        ),
    )


def int8_accuracy(results: dict[str, Any]) -> list[str]:
    header = ["model", "runtime", "fp32", "int8", "drop (95% interval)", "agreement", "median max \\|Δlogit\\|"]
    header += ["changed top-1", "target"]
    return table(
        header,
        (
            [
                r["model"],
                r["format"],
                f"{r['fp32_accuracy']:.2f}%",
                f"{r['int8_accuracy']:.2f}%",
                f"{r['drop_points']:+.2f} ({r['drop_ci95'][0]:+.2f} … {r['drop_ci95'][1]:+.2f})",
                f"{r['top1_agreement']:.2f}%",
                f"{r['median_max_abs_logit_diff']:.3f}",
                r["changed_top1"],
                mark(r["drop_points"] <= 0.5 and r["top1_agreement"] >= 99.0),
            ]
            for r in results["rows"]
        ),
    )


def real_int8(results: dict[str, Any]) -> list[str]:
    def cell(r: Row, side: str) -> str:
        agreement, cosine = r[f"{side}_top1_agreement"], r[f"{side}_cosine"]
        return f"{agreement:.1f}% ({cosine:.3f}, {r[f'{side}_median_max_abs_logit_diff']:.2f})"

    return table(
        ["format", "edgecnn int8", "stock int8", "edgecnn ≥ stock"],
        (
            [
                r["format"],
                cell(r, "edgecnn"),
                cell(r, "stock"),
                mark(r["edgecnn_top1_agreement"] >= r["stock_top1_agreement"]),
            ]
            for r in results["rows"]
        ),
    )


def int8_correction(results: dict[str, Any]) -> list[str]:
    """Per weight granularity and format: agreement (cosine) without and with each correction."""
    corrections = list(dict.fromkeys(r["correction"] for r in results["rows"]))
    cells = {(r["granularity"], r["format"], r["correction"]): r for r in results["rows"]}
    keys = list(dict.fromkeys((r["granularity"], r["format"]) for r in results["rows"]))

    def cell(r: Row) -> str:
        return f"{r['top1_agreement']:.1f}% ({r['cosine']:.3f})"

    def halved(granularity: str, fmt: str) -> str:
        plain = 100 - cells[(granularity, fmt, "none")]["top1_agreement"]
        best = min(100 - cells[(granularity, fmt, c)]["top1_agreement"] for c in corrections if c != "none")
        return mark(best <= plain / 2)

    return table(
        ["weights", "format", *corrections, "disagreement halved"],
        ([g, f, *(cell(cells[(g, f, c)]) for c in corrections), halved(g, f)] for g, f in keys),
    )


def int8_fixes(results: dict[str, Any]) -> list[str]:
    """Per model and format: int8 top-1 drop (agreement) of each fix against the original fp32; "not run"
    where a run ended before a variant (its results file says which command)."""
    variants = list(dict.fromkeys(r["variant"] for r in results["rows"]))
    cells = {(r["model"], r["format"], r["variant"]): r for r in results["rows"]}
    keys = list(dict.fromkeys((r["model"], r["format"]) for r in results["rows"]))

    def cell(model: str, fmt: str, variant: str) -> str:
        if (r := cells.get((model, fmt, variant))) is None:
            return "– (not run)"
        cost = r["float_latency"]
        latency = f" at {cost['ratio']:.2f}× p50" if cost else ""
        kept = f", {len(r['kept_float'])} float{latency}" if r["kept_float"] else ""
        return f"{r['drop_vs_original_fp32']:+.2f} ({r['top1_agreement']:.2f}%{kept})"

    baseline = "raw" if "raw" in variants else "plain"  # no correction at all, where it was run

    def halved(model: str, fmt: str) -> str:
        before = cells[(model, fmt, baseline)]["drop_vs_original_fp32"]
        if before < RESOLVED_DROP:
            return "– (nothing to halve)"
        fixes = [r["drop_vs_original_fp32"] for v in variants if v != baseline and (r := cells.get((model, fmt, v)))]
        return mark(bool(fixes) and min(fixes) <= before / 2)

    def target(model: str, fmt: str) -> list[str]:
        """The measured target of --max-drop 0.5: drop and agreement both held."""
        if "max-drop" not in variants:
            return []
        if (r := cells.get((model, fmt, "max-drop"))) is None:
            return ["–"]
        return [mark(r["drop_points"] <= TARGET_DROP and r["top1_agreement"] >= TARGET_AGREEMENT)]

    held = [f"max-drop: ≤ {TARGET_DROP:g} point, ≥ {TARGET_AGREEMENT:g}%"] if "max-drop" in variants else []
    per_tensor = {r["model"] for r in results["rows"] if r.get("weights") == "per-tensor"}
    names = {m: f"{m}, per-tensor" if m in per_tensor else m for m, _ in keys}
    return table(
        ["model", "format", *variants, "drop halved" if baseline == "plain" else "raw drop halved", *held],
        ([names[m], f, *(cell(m, f, v) for v in variants), halved(m, f), *target(m, f)] for m, f in keys),
    )


def accuracy_control(results: dict[str, Any]) -> list[str]:
    """edgecnn's --max-drop and NNCF's accuracy control on one OpenVINO IR: agreement, float layers, cost."""
    full = next(r for r in results["rows"] if r["variant"] == "full int8")["p50_ms"]
    budget = 100 - results["budget_disagreement_pct"]

    def held(r: Row) -> str:
        return "–" if r["search_seconds"] is None else mark(r["top1_agreement"] >= budget)

    return table(
        ["IR", "agreement", f"≥ {budget:g}%", "weights float", "search", "p50 (95% interval)", "vs full int8"],
        (
            [
                r["variant"],
                f"{r['top1_agreement']:.2f}%",
                held(r),
                f"{r['float_weight_layers']} of {r['layers']}",
                "–" if r["search_seconds"] is None else f"{r['search_seconds']:.0f} s",
                f"{r['p50_ms']:.3f} ms ({r['p50_ci_ms'][0]:.3f}–{r['p50_ci_ms'][1]:.3f})",
                f"{r['p50_ms'] / full:.2f}×",
            ]
            for r in results["rows"]
        ),
    )


def int8_latency(results: dict[str, Any]) -> list[str]:
    header = ["model", "runtime", "edgecnn int8", "by hand int8", "ratio", "edgecnn fp32", "PyTorch eager fp32"]
    return table(
        header,
        (
            [
                r["model"],
                r["runtime"],
                f"{r['edgecnn_int8_p50_ms']:.2f} ms",
                f"{r['by_hand_int8_p50_ms']:.2f} ms",
                f"{r['ratio']:.3f}× {mark(r['meets_target'])}",
                f"{r['edgecnn_fp32_p50_ms']:.2f} ms",
                f"{r['pytorch_eager_fp32_p50_ms']:.2f} ms",
            ]
            for r in results["rows"]
        ),
    )


def export_time(results: dict[str, Any]) -> list[str]:
    conversions = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in results["conversion_seconds"].items())
    return table(
        ["median wall time", "runs", "peak memory", "target", "conversion times in the first run"],
        [
            [
                f"{results['seconds']:.1f} s",
                ", ".join(f"{s:.1f}" for s in results["runs_seconds"]) + " s",
                f"{results['peak_rss_mb']:,} MB",
                f"≤ 60 s {mark(results['meets_target'])}",
                conversions,
            ]
        ],
    )


def onnx_calibration(results: dict[str, Any]) -> list[str]:
    return table(
        ["calibration", "int8 step", "peak memory"],
        ([r["way"], f"{r['seconds']:.1f} s", f"{r['peak_rss_mb']:,} MB"] for r in results["rows"]),
    )


def support_matrix(results: dict[str, Any]) -> list[str]:
    formats = list(dict.fromkeys(r["format"] for r in results["rows"]))
    cells: dict[str, dict[tuple[str, str], Row]] = {}
    for r in results["rows"]:
        cells.setdefault(r["model"], {})[r["format"], r["precision"]] = r

    def text(r: Row | None) -> str:
        if r is None:
            return "–"
        return f"✓ {r['export_seconds']:.0f} s, {r['size_mb']:.1f} MB" if r["passed"] else "✗"

    header = ["model", *(f"{f} {p}" for f in formats for p in ("fp32", "int8"))]
    passed = sum(r["passed"] for r in results["rows"])
    lines = table(
        header,
        ([model, *(text(row.get((f, p))) for f in formats for p in ("fp32", "int8"))] for model, row in cells.items()),
    )
    size = results["input_size"]
    return [f"{passed} of {len(results['rows'])} cells pass, {len(cells)} models at {size}×{size}.", "", *lines]


def fidelity(results: dict[str, Any]) -> list[str]:
    rows = results["rows"]

    def check(what: str, ours: str, theirs: str, ratio: float, target: str, ok: bool) -> list[str]:
        return [what, ours, theirs, f"{ratio:.3f}", f"{target} {mark(ok)}"]

    lines = []
    for precision in ("int8", "fp32"):
        openvino, litert = rows[f"openvino_{precision}"], rows[f"litert_{precision}"]
        ours, theirs = openvino["edgecnn_p50_ms"], openvino["benchmark_app_median_ms"]
        ratio = ours / theirs
        lines.append(
            check(
                f"OpenVINO {precision} vs `benchmark_app`",
                f"{ours:.2f} ms",
                f"{theirs:.2f} ms",
                ratio,
                "±5%",
                abs(ratio - 1) <= 0.05,
            )
        )
        ours, theirs = litert["edgecnn_p50_ms"], litert["litert_benchmark"]["latency"]["median_ms"]
        ratio = ours / theirs
        lines.append(
            check(
                f"LiteRT {precision} vs `litert-benchmark`",
                f"{ours:.2f} ms",
                f"{theirs:.2f} ms",
                ratio,
                "±5%",
                abs(ratio - 1) <= 0.05,
            )
        )
    overhead = rows["overhead_onnxruntime_int8"]
    ours, theirs = overhead["edgecnn_p50_ms"], overhead["bare_p50_ms"]
    within = ours / theirs <= 1.02 or overhead["difference_us"] <= 20
    lines.append(
        check(
            "harness vs a bare loop, onnxruntime int8",
            f"{ours:.2f} ms",
            f"{theirs:.2f} ms",
            ours / theirs,
            "≤ 2% or 20 µs",
            within,
        )
    )
    remote = rows["remote_litert_int8"]
    ours, theirs = statistics.median(remote["remote_p50_ms"]), statistics.median(remote["local_p50_ms"])
    ratio = remote["ratio"]
    lines.append(
        check(
            "through SSH on 127.0.0.1 vs started directly",
            f"{ours:.1f} ms",
            f"{theirs:.1f} ms",
            ratio,
            "±10%",
            abs(ratio - 1) <= 0.1,
        )
    )
    return [
        *table(["check (p50)", "edgecnn", "reference", "ratio", "target"], lines),
        "",
        f"SSH overhead per benchmark: {remote['overhead_seconds']:+.2f} s (target ≤ 2 s).",
    ]


def prune_tradeoff(results: dict[str, Any]) -> list[str]:
    header = ["model", "pruned", "runtime", "precision", "top-1", "MACs", "params", "size", "p50", "speed-up"]
    return table(
        header,
        (
            [
                r["model"],
                r["pruned"],
                r["runtime"],
                r["precision"],
                f"{r['accuracy']:.2f}%",
                f"{r['macs'] / 1e6:.1f}M",
                f"{r['params'] / 1e6:.2f}M",
                f"{r['size_mb']:.2f} MB",
                f"{r['p50_ms']:.3f} ms",
                f"{r['speedup']:.2f}×",
            ]
            for r in results["rows"]
        ),
    )


def layer_errors(results: dict[str, Any]) -> list[str]:
    agreement = results["top1_agreement_with_pytorch"]
    return table(
        ["int8 artifact", "layers", "top-1 agreement", "first quantized", "first divergence", "lowest", "last layer"],
        (
            [
                r["artifact"],
                r["layers"],
                f"{agreement[r['artifact']]:.2f}%",
                r["first_quantized"] or "–",
                r["first_divergence"] or "–",
                f"{r['lowest_sqnr_db']:.1f} dB",
                f"{r['last_layer_sqnr_db']:.1f} dB",
            ]
            for r in results["summary"]
        ),
    )


def data_loading(results: dict[str, Any]) -> list[str]:
    return table(
        ["data set", "images", "median", "min … max", "target"],
        (
            [
                r["source"],
                f"{r['images']:,}",
                f"{r['median_seconds']:.2f} s",
                f"{r['min_seconds']:.2f} … {r['max_seconds']:.2f} s",
                "–" if r["target_seconds"] is None else f"≤ {r['target_seconds']:g} s {mark(r['meets_target'])}",
            ]
            for r in results["rows"]
        ),
    )


def tune_digits(results: dict[str, Any]) -> list[str]:
    def cell(r: Row, text: str) -> str:
        return f"**{text}**" if r["verdict"] == "chosen" else text

    return [
        f"`{results['tune_command']}`: the fastest within {results['max_drop']:g} point of "
        f"{results['reference_top1']:.2f}% — {results['why']}.",
        "",
        *table(
            ["candidate", "runtime (computed in)", "p50 ms", "p90 ms", "top-1", "drop", "verdict"],
            (
                [
                    cell(r, r["label"]),
                    f"{r['runtime']} ({r['computed_in']})",
                    cell(r, f"{r['p50_ms']:.3f}"),
                    f"{r['p90_ms']:.3f}",
                    f"{r['top1']:.2f}%",
                    f"{r['drop']:.2f}",
                    cell(r, r["verdict"]),
                ]
                for r in sorted(results["candidates"], key=lambda r: r["p50_ms"])
            ),
        ),
    ]


RENDERERS: dict[str, Renderer] = {
    "train_digits": train,
    "train_fashion": train,
    "int8_accuracy": int8_accuracy,
    "real_int8": real_int8,
    "int8_correction": int8_correction,
    "int8_fixes": int8_fixes,
    "int8_fixes_agreement": int8_fixes,
    "int8_fixes_v3_large": int8_fixes,
    "int8_fixes_v3_large_qat2": int8_fixes,
    "int8_fixes_v3_large_epyc": int8_fixes,
    "int8_fixes_onnx_activations": int8_fixes,
    "int8_fixes_agreement_small_lite0": int8_fixes,
    "int8_fixes_v2_resnet18_lenet5": int8_fixes,
    "int8_fixes_v2_per_tensor": int8_fixes,
    "int8_fixes_v3_large_per_tensor": int8_fixes,
    "accuracy_control": accuracy_control,
    "int8_latency": int8_latency,
    "export_time": export_time,
    "onnx_calibration": onnx_calibration,
    "support_matrix": support_matrix,
    "fidelity": fidelity,
    "prune_tradeoff": prune_tradeoff,
    "layer_errors": layer_errors,
    "data_loading": data_loading,
    "tune_digits": tune_digits,
}


def _fashion_cells(results: dict[str, Any]) -> str:
    held = sum(r["drop_points"] <= TARGET_DROP and r["top1_agreement"] >= TARGET_AGREEMENT for r in results["rows"])
    return (
        f"{held} of {len(results['rows'])} model × runtime cells within {TARGET_DROP:g} point and "
        f"{TARGET_AGREEMENT:g}% agreement"
    )


def _real_int8(results: dict[str, Any]) -> str:
    return ", ".join(
        f"{r['format']} {r['edgecnn_top1_agreement']:.1f}% (stock {r['stock_top1_agreement']:.1f}%)"
        for r in results["rows"]
    )


def _correction(results: dict[str, Any]) -> str:
    rows = [r for r in results["rows"] if r["granularity"] == "per-tensor"]
    plain = {r["format"]: r["top1_agreement"] for r in rows if r["correction"] == "none"}
    best = {f: max(r["top1_agreement"] for r in rows if r["format"] == f and r["correction"] != "none") for f in plain}
    return ", ".join(f"{f} {plain[f]:.1f}% → {best[f]:.1f}%" for f in plain)


def _latency_ratio(results: dict[str, Any]) -> str:
    rows = results["rows"]
    worst = max(rows, key=lambda r: r["ratio"])
    held = sum(r["meets_target"] for r in rows)
    return f"{held} of {len(rows)} model × runtime cells within 1.05× (slowest {worst['ratio']:.3f}×)"


def _support(results: dict[str, Any]) -> str:
    rows = results["rows"]
    models = len({r["model"] for r in rows})
    return f"{sum(r['passed'] for r in rows)} of {len(rows)} cells ({models} models × 3 formats × fp32/int8)"


def _export_time(results: dict[str, Any]) -> str:
    return f"{results['seconds']:.1f} s, {results['peak_rss_mb']:,} MB peak (target 60 s)"


def _tune(results: dict[str, Any]) -> str:
    chosen = results["chosen"]
    return (
        f"{chosen['label']}: p50 {chosen['p50_ms']:.3f} ms, drop {chosen['drop']:.2f} point, "
        f"of {len(results['candidates'])} candidates"
    )


def _fashion_training(results: dict[str, Any]) -> str:
    return ", ".join(f"{r['model']} {r['test_accuracy']:.2f}%" for r in results["rows"][:2])


#: the README's summary: (what, results file, figure, the page that explains it)
SUMMARY: tuple[tuple[str, str, Callable[[dict[str, Any]], str], str], ...] = (
    ("int8 top-1 agreement with fp32, ImageNet EfficientNet-Lite1", "real_int8", _real_int8, "docs/int8.md"),
    (
        "per-tensor int8 of Lite1 with bias correction (agreement with fp32)",
        "int8_correction",
        _correction,
        "docs/diagnose.md",
    ),
    ("int8 on Fashion-MNIST's 10,000 test images", "int8_accuracy", _fashion_cells, "docs/int8.md"),
    ("int8 latency against each runtime's own int8 path", "int8_latency", _latency_ratio, "docs/int8.md"),
    ("zoo models (one per family) verified in every format", "support_matrix", _support, "docs/export.md"),
    ("`edgecnn export` of MobileNetV2 at 224, six artifacts verified", "export_time", _export_time, "docs/int8.md"),
    ("trained from scratch on Fashion-MNIST, test top-1", "train_fashion", _fashion_training, "docs/training.md"),
    ("`edgecnn tune`: the demo's MobileNetV2 on this machine, ≤ 0.5 point", "tune_digits", _tune, "docs/tune.md"),
)
SUMMARY_BLOCK = "summary"


def summary(document: Path) -> str:
    rows = []
    for what, name, figure, page in SUMMARY:
        results = load_results(name)
        link = os.path.relpath(ROOT / page, document.parent)
        measured = f"[{results['commit']}]({results_link(name, document)}), "
        rows.append([f"[{what}]({link})", figure(results), measured + machine_text(results["machine"])])
    return "\n".join(table(["result", "measured", "commit, CPU"], rows)) + "\n"


def render(name: str, document: Path) -> str:
    """The block for results file ``name`` in ``document``: where it was measured, then its table."""
    if name == SUMMARY_BLOCK:
        return summary(document)
    results = load_results(name)
    return "\n".join([provenance_line(name, results, document), "", *RENDERERS[name](results)]) + "\n"


def refreshed(document: Path) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name"), document) + m.group(4), document.read_text())


def stale_blocks(documents: tuple[Path, ...] = DOCUMENTS) -> list[str]:
    """'docs/x.md: NAME' for each block that differs from what its results file gives."""
    stale = []
    for document in documents:
        for match in BLOCK.finditer(document.read_text()):
            if match.group("body") != render(match.group("name"), document):
                where = document.relative_to(ROOT) if document.is_relative_to(ROOT) else document
                stale.append(f"{where}: {match.group('name')}")
    return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report stale blocks instead of rewriting them")
    args = parser.parse_args()
    if args.check:
        stale = stale_blocks()
        for line in stale:
            print(f"stale: {line} (run benchmarks/tables.py)", file=sys.stderr)
        sys.exit(1 if stale else 0)
    for document in DOCUMENTS:
        text = refreshed(document)
        if text != document.read_text():
            document.write_text(text)
            print(f"updated {document.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
