"""Benchmark results for people (a rich table, Markdown, plots) and machines (JSON, CSV)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from edgecnn._io import atomic_path, write_json
from edgecnn.bench.benchmark import BenchReport, HostResult

COLUMNS = (
    # header, how to read it from one result, format
    ("artifact", lambda r: Path(r["artifact"]).name, "{}"),
    ("runtime", lambda r: r["runtime"], "{}"),
    ("prec.", lambda r: r["effective_precision"], "{}"),
    ("p50", lambda r: r["latency"]["p50_ms"], "{:.3g}"),
    ("p90", lambda r: r["latency"]["p90_ms"], "{:.3g}"),
    ("p99", lambda r: r["latency"]["p99_ms"], "{:.3g}"),
    ("img/s", lambda r: (r.get("parallel") or {}).get("throughput_ips", r["throughput_ips"]), "{:.0f}"),
    ("+RSS MB", lambda r: r["rss_growth_mb"], "{:.0f}"),
    ("MB", lambda r: r["size_bytes"] / 1e6, "{:.1f}"),
    ("top-1", lambda r: (r.get("accuracy") or {}).get("top1"), "{:.1f}%"),
)
#: the terminal table leaves out what the Markdown, CSV and JSON keep, to fit 80 columns (the suffix names the runtime)
TERMINAL_LEAVES_OUT = ("runtime", "p90", "+RSS MB", "MB")
LEGEND = (
    "p50/p90/p99: latency percentiles of one call in ms; ×1st: p50 over the first artifact's, measured "
    "interleaved; img/s: single stream (parallel requests in throughput mode); MB: artifact size; "
    "+RSS: resident memory the artifact added when loaded and first run"
)
CAPTION = (
    "p50/p99: latency of one call in ms; ×1st: p50 over the first artifact's, measured interleaved; "
    "img/s: single stream (parallel requests in throughput mode). p90, size and memory: --json, --report"
)


def headers(terminal: bool = False) -> list[str]:
    names = [header for header, _, _ in COLUMNS]
    names = [*names[:4], "×1st", *names[4:]]
    return [name for name in names if not (terminal and name in TERMINAL_LEAVES_OUT)]


def _rows(host: HostResult, terminal: bool = False) -> list[list[str]]:
    rows = []
    first = host.results[0]["latency"]["p50_ms"] if host.results else None
    for result in host.results:
        cells = {}
        for header, read, style in COLUMNS:
            value = read(result)
            cells[header] = "–" if value is None else style.format(value)
        cells["×1st"] = f"{result['latency']['p50_ms'] / first:.2f}×"
        rows.append([cells[name] for name in headers(terminal)])
    return rows


def environment_line(host: HostResult) -> str:
    env = host.environment
    board = env.get("board") or env.get("cpu_model")
    state = ", ".join(
        f"{label} {env[key]}"
        for key, label in (("governor", "governor"), ("temperature_c", "°C"), ("throttled", "throttled"))
        if env.get(key) is not None
    )
    return f"{host.host}: {board} ({env.get('machine')}, {env.get('cores')} cores, threads {env.get('threads')})" + (
        f", {state}" if state else ""
    )


def tables(report: BenchReport) -> list[Table]:
    """One table per host, then (for a fleet) the p50 of every artifact side by side."""
    result = []
    for host in report.hosts:
        title = f"[red]{host.host}: {host.error}" if host.error else environment_line(host)
        table = Table(title=title, caption=CAPTION, box=box.SIMPLE_HEAD, pad_edge=False)
        for index, header in enumerate(headers(terminal=True)):
            table.add_column(header, overflow="fold", no_wrap=index > 0, justify="left" if index < 2 else "right")
        for row in _rows(host, terminal=True):
            table.add_row(*row)
        result.append(table)
    measured = [h for h in report.hosts if not h.error]
    if len(report.hosts) > 1 and measured:
        fleet = Table("artifact", *(f"{h.host} p50 ms" for h in measured), title="fleet", box=box.SIMPLE_HEAD)
        for index, result_row in enumerate(measured[0].results):
            fleet.add_row(
                Path(result_row["artifact"]).name, *(f"{h.results[index]['latency']['p50_ms']:.3f}" for h in measured)
            )
        result.append(fleet)
    return result


def notes(report: BenchReport) -> list[str]:
    """Where an optimisation did not pay: the runners' own notes, and int8 slower than its fp32 sibling."""
    lines = []
    for host in report.hosts:
        by_model: dict[tuple[Any, str], dict[str, float]] = {}
        for result in host.results:
            lines += [f"{host.host}: {Path(result['artifact']).name}: {note}" for note in result["notes"]]
            key = (result.get("model"), result["runtime"])
            by_model.setdefault(key, {})[result.get("artifact_precision") or ""] = result["latency"]["p50_ms"]
        for (model, runtime), p50 in by_model.items():
            if "int8" in p50 and "fp32" in p50 and p50["int8"] >= p50["fp32"]:
                lines.append(
                    f"{host.host}: {model} int8 is not faster than fp32 in {runtime} "
                    f"({p50['int8']:.3f} vs {p50['fp32']:.3f} ms): this CPU gains nothing from int8 here"
                )
    return lines


def markdown(report: BenchReport) -> str:
    parts = ["# edgecnn benchmark", ""]
    method = report.method
    parts.append(
        f"Method: {method['order']}; {method['timer']}; warm-up {method['warmup']}, "
        f"{'runs ' + str(method['runs']) if method['runs'] else 'min time ' + str(method['min_time_s']) + ' s'}, "
        f"batch {method['batch']}, threads {method['threads'] or 'runtime default'}, precision {method['precision']}."
    )
    for host in report.hosts:
        parts += ["", f"## {host.host}", ""]
        if host.error:
            parts.append(f"Not measured: {host.error}")
            continue
        parts += [environment_line(host), ""]
        parts.append(LEGEND + ".")
        parts.append("")
        parts.append("| " + " | ".join(headers()) + " |")
        parts.append("|" + "---|" * len(headers()))
        parts += ["| " + " | ".join(row) + " |" for row in _rows(host)]
    found = notes(report)
    if found:
        parts += ["", "## Notes", "", *(f"- {line}" for line in found)]
    return "\n".join(parts) + "\n"


def write_report(report: BenchReport, folder: Path) -> list[Path]:
    """bench.json, bench.md, bench.csv and the plots, each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "bench.json", folder / "bench.md", folder / "bench.csv"]
    write_json(written[0], report.to_dict())
    with atomic_path(written[1]) as temporary:
        temporary.write_text(markdown(report), encoding="utf-8")
    with atomic_path(written[2]) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["host", *headers()])
        for host in report.hosts:
            writer.writerows([host.host, *row] for row in _rows(host))
    return written + _plots(report, folder)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower latency and higher accuracy."""
    return [
        i
        for i, (latency, accuracy) in enumerate(points)
        if not any(
            (other_latency <= latency and other_accuracy >= accuracy)
            and (other_latency < latency or other_accuracy > accuracy)
            for other_latency, other_accuracy in points
        )
    ]


def _plots(report: BenchReport, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    measured = [h for h in report.hosts if h.results]
    if not measured:
        return written
    figure, axes = plt.subplots(figsize=(8, 0.5 + 0.45 * sum(len(h.results) for h in measured)))
    samples, labels = [], []
    for host in measured:
        for result in host.results:
            samples.append(result.get("samples_ms") or [result["latency"]["p50_ms"]])
            name = Path(result["artifact"]).name
            labels.append(f"{host.host}: {name}" if len(measured) > 1 else name)
    axes.boxplot(samples, orientation="horizontal", showfliers=True)
    axes.set_yticks(range(1, len(labels) + 1), labels)
    axes.set_xscale("log")
    axes.set_xlabel("latency per call (ms, log scale)")
    axes.set_title("latency distributions")
    figure.tight_layout()
    written.append(_save(figure, folder / "latency_distribution.png"))
    plt.close(figure)
    for host in measured:
        scored = [r for r in host.results if r.get("accuracy")]
        if not scored:
            continue
        points = [(r["latency"]["p50_ms"], r["accuracy"]["top1"]) for r in scored]
        front = sorted(pareto_front(points), key=lambda i: points[i][0])
        figure, axes = plt.subplots(figsize=(7, 5))
        axes.scatter(*zip(*points, strict=True), color="tab:blue")
        axes.plot(*zip(*(points[i] for i in front), strict=True), color="tab:red", marker="o", label="Pareto front")
        by_latency = sorted(range(len(points)), key=lambda i: points[i][0])
        for rank, index in enumerate(by_latency):
            result, point = scored[index], points[index]
            # neighbours in latency step upwards in turn, so equal accuracies do not print over each other
            offset = (4, 6 + 11 * (rank % 6))
            axes.annotate(
                Path(result["artifact"]).name,
                point,
                fontsize=7,
                xytext=offset,
                textcoords="offset points",
                arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5},
            )
        axes.set_xscale("log")
        axes.set_xlabel("p50 latency (ms, log scale)")
        axes.set_ylabel("top-1 accuracy (%)")
        axes.set_title(f"latency vs accuracy: {host.host}")
        axes.legend()
        figure.tight_layout()
        suffix = "" if len(measured) == 1 else f"_{host.host.replace('@', '_')}"
        written.append(_save(figure, folder / f"latency_vs_accuracy{suffix}.png"))
        plt.close(figure)
    return written


def _save(figure: Any, path: Path) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    return path
