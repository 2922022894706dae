"""Benchmark results for people (a rich table, Markdown, plots) and machines (JSON, CSV)."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table

from edgecnn._io import atomic_path, write_json
from edgecnn.bench.benchmark import BenchReport, HostResult
from edgecnn.bench.measure import BLOCKS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

COLUMNS = (
    # header, how to read it from one result, format
    ("artifact", lambda r: Path(r["artifact"]).name, "{}"),
    ("runtime", lambda r: r["runtime"], "{}"),
    ("prec.", lambda r: r["effective_precision"], "{}"),
    ("p50", lambda r: r["latency"]["p50_ms"], "{:.3g}"),
    ("±95%", lambda r: p50_spread_pct(r), "{:.1f}%"),
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
    "p50/p90/p99: latency percentiles of one call in ms; ±95%: how far the 95% bootstrap interval of p50 "
    "reaches from it; ×1st: p50 over the first artifact's, measured "
    "interleaved; img/s: single stream (parallel requests in throughput mode); MB: artifact size; "
    "+RSS: resident memory the artifact added when loaded and first run"
)
CAPTION = (
    "p50/p99: latency of one call in ms; ±95%: p50's 95% interval; ×1st: p50 over the first artifact's, "
    "measured interleaved; img/s: single stream (parallel requests in throughput mode). "
    "p90, size and memory: --json, --report"
)


def headers(terminal: bool = False) -> list[str]:
    names = [header for header, _, _ in COLUMNS]
    names = [*names[:5], "×1st", *names[5:]]
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


#: notes: a rise in °C during the timed calls, and a spread in % (of p50's interval, of the blocks' medians)
TEMPERATURE_RISE_C, LOOSE_PCT = 5.0, 5.0
PERFORMANCE_FIX = (
    "`sudo cpupower frequency-set -g performance` (or `echo performance | sudo tee "
    "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor`) pins it until reboot"
)


def p50_spread_pct(result: dict[str, Any]) -> float | None:
    """How far p50's 95% interval reaches from it, in % of p50; None for a result from before intervals."""
    stats = result["latency"]
    if not stats.get("p50_ci_ms"):
        return None
    low, high = stats["p50_ci_ms"]
    return max(stats["p50_ms"] - low, high - stats["p50_ms"]) / stats["p50_ms"] * 100


def condition_notes(environment: dict[str, Any]) -> list[str]:
    """What makes a host's figures less trustworthy: a clock left to a governor, throttling, heat, a warm-up
    that did not settle. Silent about whatever the OS does not report (no cpufreq in a VM, no vcgencmd)."""
    before, after = environment.get("state_before") or {}, environment.get("state_after") or {}
    lines = []
    governor = before.get("governor")
    if governor and governor != "performance":
        lines.append(
            f"CPU governor {governor}, not performance: the clock follows the load and latency with it; "
            + PERFORMANCE_FIX
        )
    was = before.get("throttling", [])
    throttled = [flag for flag in dict.fromkeys([*was, *after.get("throttling", [])]) if flag.endswith(" now")]
    throttled += [
        flag.replace(" since boot", " during the run")
        for flag in after.get("throttling", [])
        if flag.endswith(" since boot") and flag not in was
    ]
    if throttled:
        lines.append(
            f"the firmware slowed the board: {', '.join(throttled)} (vcgencmd get_throttled "
            f"{before.get('throttled')} → {after.get('throttled')}); check its power supply and cooling"
        )
    warmed, hot = before.get("temperature_c"), after.get("temperature_c")
    if warmed is not None and hot is not None and hot - warmed > TEMPERATURE_RISE_C:
        lines.append(
            f"the CPU warmed from {warmed:g} to {hot:g} °C during the timed calls: later calls may be slower "
            "(a heatsink or fan keeps it cooler; --cooldown lets it cool before a run)"
        )
    warmup = environment.get("warmup") or {}
    if warmup.get("stable") is False:
        lines.append(
            f"the latency had not settled after {warmup['calls']} warm-up calls per artifact "
            f"({warmup['seconds']:.1f} s): raise --max-warmup"
        )
    return lines


def spread_notes(result: dict[str, Any]) -> list[str]:
    """A p50 that is loose: a wide bootstrap interval (too few calls), or blocks of the run that disagree."""
    lines = []
    spread, stats = p50_spread_pct(result), result["latency"]
    if spread is not None and spread > LOOSE_PCT:
        low, high = stats["p50_ci_ms"]
        lines.append(
            f"p50 is known to ±{spread:.0f}% only (95% interval {low:.3g}–{high:.3g} ms): more --runs narrow it"
        )
    cv = stats.get("run_to_run_cv_pct")
    if cv is not None and cv > LOOSE_PCT:
        lines.append(
            f"the median of {BLOCKS} consecutive blocks of the run varied by {cv:.0f}% (CV): the machine drifted or "
            "was busy"
        )
    return lines


def notes(report: BenchReport) -> list[str]:
    """Where a figure is not to be trusted (conditions, spread), the runners' own notes, and where an
    optimisation did not pay: why int8 is slower than its fp32 sibling (``bench``'s diagnosis, a line a finding)."""
    lines = []
    for host in report.hosts:
        lines += [f"{host.host}: {line}" for line in condition_notes(host.environment)]
        for result in host.results:
            said = [*result["notes"], *spread_notes(result), *diagnosis_notes(result)]
            lines += [f"{host.host}: {Path(result['artifact']).name}: {note}" for note in said]
    return lines


def diagnosis_notes(result: dict[str, Any]) -> list[str]:
    """Why an int8 result is not faster than its fp32 sibling: the diagnosis ``bench`` attached, if any."""
    diagnosis = result.get("diagnosis")
    if not diagnosis:
        return []
    slower = (
        f"int8 is not faster than fp32 in {result['runtime']} "
        f"({result['latency']['p50_ms']:.3f} vs {diagnosis['fp32_p50_ms']:.3f} ms)"
    )
    return [f"{slower}: {found['cause']} ({found['evidence']}); fix: {found['fix']}" for found in diagnosis["findings"]]


def profile_lines(result: dict[str, Any]) -> list[str]:
    """A result's profile in a few Markdown lines: where the time went, and the slowest ops."""
    profile = result["profile"]
    summary = profile["summary"]
    shares = [
        f"{label} {summary[key]:.0%}"
        for key, label in (("qdq_share", "Q/DQ"), ("float_share", "float ops"))
        if summary[key] is not None
    ]
    if summary["total_ms"] is not None:
        shares.insert(0, f"{summary['total_ms']:.3g} ms per inference over {profile['runs']} runs")
    if summary["partitions"] is not None:
        shares.append(f"{summary['partitions']} XNNPACK partition(s), {summary['outside_ops']} ops outside")
    lines = [f"- `{Path(result['artifact']).name}` ({profile['source']}): {'; '.join(shares) or 'no ops'}"]
    lines += [f"  - {op['op_type']} `{op['name']}`: {op['ms']:.3g} ms ({op['share']:.0%})" for op in summary["top_ops"]]
    return lines


def markdown(report: BenchReport) -> str:
    parts = ["# edgecnn benchmark", ""]
    method = report.method
    parts.append(
        f"Method: {method['order']}; {method['timer']}; cool-down {method['cooldown_s']:g} s; "
        f"warm-up {method['warmup']} calls, then until {method['warmup_until']} "
        f"(at most {method['max_warmup_s']:g} s), "
        f"{'runs ' + str(method['runs']) if method['runs'] else 'min time ' + str(method['min_time_s']) + ' s'}, "
        f"batch {method['batch']}, threads {method['threads'] or 'runtime default'}, precision {method['precision']}. "
        f"Intervals: {method['intervals']}; run-to-run variation: {method['run_to_run']}."
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
        profiled = [result for result in host.results if result.get("profile")]
        if profiled and method["profile"]:  # LiteRT's free plan is in every result; shown when asked for
            parts += ["", "### Profiles", "", *(line for result in profiled for line in profile_lines(result))]
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


#: the PNGs' resolution; figures are laid out at it too, so what a test measures is what is saved
DPI = 120
#: font size (points) of the numbers beside the points and of the key
LABEL_SIZE, KEY_SIZE = 8, 8
#: half the size (points) of a point's marker: labels keep clear of every marker
MARKER_RADIUS = 4.0


def _plots(report: BenchReport, folder: Path) -> list[Path]:
    """Every host's latency distributions in one figure, and latency vs accuracy per host that has accuracy."""
    measured = [h for h in report.hosts if h.results]
    if not measured:
        return []
    written = [save_figure(latency_distribution_figure(measured), folder / "latency_distribution.png")]
    for host in measured:
        figure = latency_accuracy_figure(host)
        if figure is not None:
            suffix = "" if len(measured) == 1 else f"_{host.host.replace('@', '_')}"
            written.append(save_figure(figure, folder / f"latency_vs_accuracy{suffix}.png"))
    return written


def row_labels(results: list[dict[str, Any]]) -> list[str]:
    """The "model · runtime · precision" of each result, so a row says what ran without decoding a file name.

    The artifact's file name replaces the model where the model alone would leave two rows alike (two exports
    of one model for one runtime and precision), and models from other tools carry no name but their file's.
    The precision is what the runtime really computed, as in the table ("int8+fp32": OpenVINO ran some layers
    in fp32), after the artifact's own and an arrow where it is not that (an fp16 IR that OpenVINO runs in
    fp32 is not an fp16 measurement).
    """

    def label(result: dict[str, Any], name: str) -> str:
        stored, computed = result.get("artifact_precision"), result["effective_precision"]
        precision = computed if not stored or computed.startswith(stored) else f"{stored}→{computed}"
        return f"{name} · {result['runtime']} · {precision}"

    by_model = [label(r, r.get("model") or Path(r["artifact"]).name) for r in results]
    return [
        text if by_model.count(text) == 1 else label(result, Path(result["artifact"]).name)
        for text, result in zip(by_model, results, strict=True)
    ]


def _runtime_colours(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One colour per runtime, in order of appearance, shared by both plots so a runtime reads the same in each."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    runtimes = list(dict.fromkeys(r["runtime"] for r in results))
    return {runtime: palette[index % len(palette)] for index, runtime in enumerate(runtimes)}


def _marker(result: dict[str, Any]) -> str:
    """Triangles for int8 artifacts, circles for float ones: the precision is seen without reading the key."""
    return "^" if "int8" in (result.get("artifact_precision") or result["effective_precision"]) else "o"


def _milliseconds(value: float) -> str:
    """Three significant digits with trailing zeros kept (0.0972, 0.907, 1.00, 12.3), so a column aligns."""
    return f"{value:.{max(0, 2 - math.floor(math.log10(value)))}f}"


#: tick steps within a decade, sparsest first: the first that puts MIN_TICKS in view is used
LOG_SUBS = ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0))
MIN_TICKS, MAX_TICKS = 4, 8


def log_ticks(low: float, high: float) -> list[float]:
    """Major ticks for a log axis from low to high, at steps a person reads (1, 2, 5 …) chosen by the span.

    Matplotlib's default labels the minor ticks in scientific notation once the span is under a decade or
    so ("2×10⁻¹ 3×10⁻¹ …"), and those collide; here the span picks one set of steps and only those are
    labelled. Under half a decade, where a log axis is nearly linear and steps within a decade would leave
    one end bare, evenly spaced round values are used instead.
    """
    from matplotlib.ticker import MaxNLocator

    if high / low >= math.sqrt(10):
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        for subs in LOG_SUBS:
            ticks = [step * 10.0**decade for decade in decades for step in subs if low <= step * 10.0**decade <= high]
            if len(ticks) >= MIN_TICKS:
                return ticks[:: math.ceil(len(ticks) / MAX_TICKS)]
    return [
        float(t)
        for t in MaxNLocator(nbins=MAX_TICKS - 1, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
        if low <= t <= high
    ]


def _log_x_axis(axes: Axes) -> None:
    """A log x axis with plain tick labels ("0.2", "1.5", "10") at log_ticks, tilted only if they would touch."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    axes.set_xscale("log")
    axes.xaxis.set_major_locator(FixedLocator(log_ticks(*axes.get_xlim())))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.6g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.figure.draw_without_rendering()
    boxes = [label.get_window_extent() for label in axes.get_xticklabels() if label.get_text()]
    if any(_overlaps(_extents(a), _extents(b), pad=2.0) for a, b in itertools.pairwise(boxes)):
        axes.tick_params(axis="x", labelrotation=35)
        for label in axes.get_xticklabels():
            label.set_horizontalalignment("right")
        axes.figure.draw_without_rendering()  # the layout makes room for the tilted labels


def new_figure(width: float, height: float) -> Figure:
    """A figure with its own Agg canvas: no pyplot, so no global state and nothing left open between plots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def latency_distribution_figure(hosts: list[HostResult]) -> Figure:
    """One box per result, in the table's order from the top, each row named by model, runtime and precision."""
    rows = [result for host in hosts for result in host.results]
    labels = [
        f"{host.host}: {label}" if len(hosts) > 1 else label for host in hosts for label in row_labels(host.results)
    ]
    colours = _runtime_colours(rows)
    figure = new_figure(9, 1.3 + 0.38 * len(rows))
    axes = figure.add_subplot()
    boxes = axes.boxplot(
        [result.get("samples_ms") or [result["latency"]["p50_ms"]] for result in rows],
        orientation="horizontal",
        patch_artist=True,
        widths=0.6,
        medianprops={"color": "black"},
        flierprops={"markersize": 3, "markeredgecolor": "0.4"},
    )
    for patch, result in zip(boxes["boxes"], rows, strict=True):
        patch.set_facecolor((*colours[result["runtime"]], 0.45))
    axes.set_yticks(range(1, len(labels) + 1), labels)
    axes.invert_yaxis()
    axes.set_xlabel("latency per call (ms, log scale); box: middle half, line: median, circles: outliers")
    axes.set_title("latency distributions")
    _log_x_axis(axes)
    return figure


def latency_accuracy_figure(host: HostResult) -> Figure | None:
    """p50 latency against top-1 accuracy for one host's scored results, None when none was scored.

    Names do not fit beside points that lie close together (one model in several runtimes often differs by
    a few percent in latency and not at all in accuracy), so each point carries its number, placed by
    place_labels where it touches nothing, and a key beside the axes says what each number is, with its
    p50 and top-1, in bold where the result is on the Pareto front.
    """
    from matplotlib.lines import Line2D

    scored = [r for r in host.results if r.get("accuracy")]
    if not scored:
        return None
    points = [(r["latency"]["p50_ms"], r["accuracy"]["top1"]) for r in scored]
    front = sorted(pareto_front(points), key=lambda i: points[i][0])
    colours = _runtime_colours(scored)
    figure = new_figure(6.5, max(4.5, 1.4 + 0.19 * len(points)))
    axes = figure.add_subplot()
    axes.plot(*zip(*(points[i] for i in front), strict=True), color="0.3", lw=1, ls="--", zorder=1)
    handles = []
    for result, point in zip(scored, points, strict=True):
        style = {"color": colours[result["runtime"]], "marker": _marker(result), "markersize": 2 * MARKER_RADIUS}
        axes.plot(*point, linestyle="none", markeredgecolor="white", markeredgewidth=0.5, zorder=2, **style)
        handles.append(Line2D([], [], linestyle="none", **style))
    labels = row_labels(scored)
    width = max(map(len, labels))
    key = [
        f"{number:>2} {label:<{width}}  {_milliseconds(p50):>6} ms  {top1:5.1f}%"
        for number, (label, (p50, top1)) in enumerate(zip(labels, points, strict=True), 1)
    ]
    handles.append(Line2D([], [], color="0.3", lw=1, ls="--"))
    key.append("Pareto front (bold: on it)")
    legend = figure.legend(
        handles,
        key,
        loc="outside right upper",
        prop={"family": "monospace", "size": KEY_SIZE},
        frameon=False,
        handletextpad=0.4,
        title="p50 latency, top-1",
        title_fontproperties={"size": KEY_SIZE},
        alignment="right",
    )
    for index in front:
        legend.get_texts()[index].set_fontweight("bold")
    axes.margins(x=0.08, y=0.12)
    # one latency or one accuracy only: a span around it, not matplotlib's decade or ±5 points (to 103%)
    latencies, accuracies = [p50 for p50, _ in points], [top1 for _, top1 in points]
    if min(latencies) == max(latencies):
        axes.set_xlim(latencies[0] / 1.5, latencies[0] * 1.5)
    if min(accuracies) == max(accuracies):
        axes.set_ylim(accuracies[0] - 1, accuracies[0] + 1)
    axes.set_xlabel("p50 latency per call (ms, log scale)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_title(f"latency vs accuracy: {host.host}")
    # the key takes what it needs and the axes keep their width; then the layout is frozen, since labels
    # are placed in pixels of this layout
    figure.draw_without_rendering()
    figure.set_figwidth(6.5 + legend.get_window_extent().width / DPI)
    _log_x_axis(axes)
    figure.set_layout_engine("none")
    _number_points(axes, points, [colours[result["runtime"]] for result in scored])
    return figure


def _number_points(axes: Axes, points: list[tuple[float, float]], colours: list[Any]) -> None:
    """Each point's number beside it, in its colour, where it overlaps no other number or marker, with a leader
    line if it had to go further; the colour tells which of two close points a number belongs to."""
    renderer = axes.figure.canvas.get_renderer()
    texts = [
        axes.text(*point, str(number), fontsize=LABEL_SIZE, ha="center", va="center", color=colour, gid="point-label")
        for number, (point, colour) in enumerate(zip(points, colours, strict=True), 1)
    ]
    sizes = [(box.width, box.height) for box in (text.get_window_extent(renderer) for text in texts)]
    anchors = [tuple(axes.transData.transform(point)) for point in points]
    radius = MARKER_RADIUS * DPI / 72
    markers = [(x - radius, y - radius, x + radius, y + radius) for x, y in anchors]
    gap = 2 * DPI / 72
    area = _extents(axes.get_window_extent())
    area = (area[0] + gap, area[1] + gap, area[2] - gap, area[3] - gap)
    to_data = axes.transData.inverted()
    for text, anchor, spot in zip(texts, anchors, place_labels(anchors, sizes, area, markers, gap), strict=True):
        text.set_position(to_data.transform(((spot[0] + spot[2]) / 2, (spot[1] + spot[3]) / 2)))
        end = (min(max(anchor[0], spot[0]), spot[2]), min(max(anchor[1], spot[1]), spot[3]))
        if math.dist(anchor, end) > radius + 2 * gap:
            axes.plot(*zip(*to_data.transform([anchor, end]), strict=True), color="0.6", lw=0.6, zorder=1)


Box = tuple[float, float, float, float]
"""x0, y0, x1, y1 in display pixels."""


def _extents(bbox: Bbox) -> Box:
    return (bbox.x0, bbox.y0, bbox.x1, bbox.y1)


def _overlaps(a: Box, b: Box, pad: float = 0.0) -> bool:
    return a[0] - pad < b[2] and b[0] - pad < a[2] and a[1] - pad < b[3] and b[1] - pad < a[3]


#: directions (degrees) a label is tried in around its point, right first, then turning up and down alike
DIRECTIONS = sorted((22.5 * step for step in range(16)), key=lambda angle: (min(angle, 360 - angle), angle > 180))


def place_labels(
    anchors: list[tuple[float, float]], sizes: list[tuple[float, float]], area: Box, obstacles: list[Box], gap: float
) -> list[Box]:
    """Boxes for labels of the given sizes beside their anchors (display units), none overlapping another.

    Each label in turn takes the first spot, on rings of growing radius around its anchor (DIRECTIONS on
    each), that lies inside area and overlaps no obstacle and no label placed before it; a label in a crowd
    so ends up further out rather than on top of another. Greedy and deterministic: the same results give
    the same plot. Where no spot is free at all, the one that overlaps fewest boxes is taken.
    """
    taken = list(obstacles)
    reach = math.dist(area[:2], area[2:])
    for (x, y), (width, height) in zip(anchors, sizes, strict=True):
        best, fewest = (x - width / 2, y - height / 2, x + width / 2, y + height / 2), math.inf
        radius = gap
        while fewest and radius < reach:
            for angle in map(math.radians, DIRECTIONS):
                cx = x + math.cos(angle) * (radius + width / 2)
                cy = y + math.sin(angle) * (radius + height / 2)
                box = (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2)
                if not (area[0] <= box[0] and box[2] <= area[2] and area[1] <= box[1] and box[3] <= area[3]):
                    continue
                hits = sum(_overlaps(box, other, pad=gap / 2) for other in taken)
                if hits < fewest:
                    best, fewest = box, hits
                    if not hits:
                        break
            radius += max(gap, height / 2)
        taken.append(best)
    return taken[len(obstacles) :]


def save_figure(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=DPI, format="png")
    return path
