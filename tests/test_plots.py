"""The benchmark plots read at a glance: nothing written on them overlaps, and every row says what ran."""

import itertools
from typing import Any

import pytest

from edgecnn.bench.benchmark import HostResult
from edgecnn.bench.report import latency_accuracy_figure, latency_distribution_figure, log_ticks, row_labels

SUFFIX = {"onnxruntime": "onnx", "openvino": "xml", "litert": "tflite"}


def close_results(step: float = 0.03) -> list[dict[str, Any]]:
    """The worst case: 3 models × 3 runtimes × fp32/int8, step ms apart and within 0.2 points of accuracy,
    equal accuracies side by side (OpenVINO reporting what it computed, as on a CPU without int8 everywhere)."""
    results = []
    for m, model in enumerate(["mobilenet_v2", "efficientnet_lite0", "resnet18"]):
        for r, runtime in enumerate(SUFFIX):
            for p, precision in enumerate(["fp32", "int8"]):
                p50 = 0.9 + step * (6 * m + 2 * r + p)
                effective = "int8+fp32" if (runtime, precision) == ("openvino", "int8") else precision
                results.append(
                    {
                        "artifact": f"/runs/export/{model}_{precision}.{SUFFIX[runtime]}",
                        "model": model,
                        "runtime": runtime,
                        "artifact_precision": precision,
                        "effective_precision": effective,
                        "latency": {"p50_ms": p50},
                        "samples_ms": [p50 * (1 + 0.01 * (i % 7)) for i in range(30)],
                        "accuracy": {"top1": 97.8 - 0.1 * p - 0.05 * m},
                    }
                )
    return results


def tick_labels(axis: Any) -> list[Any]:
    """The tick labels drawn, major and minor: those of ticks in view that have text."""
    low, high = sorted(axis.get_view_interval())
    return [
        label
        for locations, labels in [
            (axis.get_majorticklocs(), axis.get_majorticklabels()),
            (axis.get_minorticklocs(), axis.get_minorticklabels()),
        ]
        for location, label in zip(locations, labels, strict=True)
        if low <= location <= high and label.get_text()
    ]


def extents(text: Any) -> tuple[float, float, float, float]:
    box = text.get_window_extent()
    return (box.x0, box.y0, box.x1, box.y1)


def overlapping(texts: list[Any]) -> list[tuple[str, str]]:
    """Pairs of texts whose drawn boxes overlap; boxes that only touch do not count."""
    pairs = []
    for a, b in itertools.combinations(texts, 2):
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = extents(a), extents(b)
        if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1:
            pairs.append((a.get_text(), b.get_text()))
    return pairs


@pytest.mark.parametrize(("count", "step"), [(1, 0.03), (18, 0.03), (18, 0.001)])
def test_latency_accuracy_labels_overlap_nothing(count, step):
    results = close_results(step)[:count]
    figure = latency_accuracy_figure(HostResult("pi@raspberrypi.local", results=results))
    figure.canvas.draw()
    (axes,) = figure.axes
    numbers = [text for text in axes.texts if text.get_gid() == "point-label"]
    assert sorted(int(text.get_text()) for text in numbers) == list(range(1, count + 1))
    (key,) = figure.legends
    texts = [
        *numbers,
        axes.title,
        axes.xaxis.label,
        axes.yaxis.label,
        *tick_labels(axes.xaxis),
        *tick_labels(axes.yaxis),
        key.get_title(),
        *key.get_texts(),
    ]
    assert overlapping(texts) == []
    frame = axes.get_window_extent()
    for number in map(extents, numbers):  # inside the axes, so clear of the title and the tick labels too
        assert frame.x0 <= number[0] and number[2] <= frame.x1 and frame.y0 <= number[1] and number[3] <= frame.y1
    assert len(tick_labels(axes.xaxis)) >= 3
    assert all(label.get_text().replace(".", "").isdigit() for label in tick_labels(axes.xaxis))  # "1.2", no 10⁰
    # the key says what each number is, the first row on the Pareto front in bold
    assert key.get_texts()[0].get_text().startswith(" 1 mobilenet_v2 · onnxruntime · fp32")
    assert key.get_texts()[0].get_fontweight() == "bold"


def test_latency_distribution_rows_name_model_runtime_and_precision():
    results = close_results()
    figure = latency_distribution_figure([HostResult("local", results=results)])
    figure.canvas.draw()
    (axes,) = figure.axes
    rows = sorted(tick_labels(axes.yaxis), key=lambda label: -label.get_window_extent().y0)  # from the top
    assert len(rows) == len(results)
    for row, result in zip(rows, results, strict=True):  # in the table's order
        name, runtime, precision = row.get_text().split(" · ")
        assert (name, runtime, precision) == (result["model"], result["runtime"], result["effective_precision"])
    assert overlapping([*rows, axes.title, axes.xaxis.label, *tick_labels(axes.xaxis)]) == []


def test_row_labels_tell_apart_what_the_model_alone_does_not():
    def result(artifact: str, precision: str, effective: str, model: str | None = "m") -> dict[str, Any]:
        return {
            "artifact": artifact,
            "model": model,
            "runtime": "openvino",
            "artifact_precision": precision,
            "effective_precision": effective,
        }

    assert row_labels(
        [
            result("m_fp16.xml", "fp16", "fp32"),  # stored fp16, computed fp32
            result("m_fp32.xml", "fp32", "fp32"),
            result("m_fp32_pruned.xml", "fp32", "fp32"),
            result("other_tool.xml", "fp32", "fp32", model=None),
        ]
    ) == [
        "m · openvino · fp16→fp32",
        "m_fp32.xml · openvino · fp32",
        "m_fp32_pruned.xml · openvino · fp32",
        "other_tool.xml · openvino · fp32",
    ]


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.18, 2.6, [0.2, 0.5, 1, 2]),  # matplotlib labels 2×10⁻¹, 3×10⁻¹, 4×10⁻¹, 6×10⁻¹ … here, and they collide
        (0.3, 3.5, [0.3, 0.5, 0.7, 1, 1.5, 2, 3]),  # a decade: finer steps, so that 1-2-5 does not leave 3 ticks
        (0.04, 900, [0.1, 1, 10, 100]),
        (1e-3, 1e7, [1e-3, 1e-1, 1e1, 1e3, 1e5, 1e7]),  # at most MAX_TICKS: every other decade
        (0.87, 1.45, [0.9, 1.0, 1.1, 1.2, 1.3, 1.4]),  # nearly linear: even steps, both ends covered
    ],
)
def test_log_ticks_are_few_and_round(low, high, expected):
    assert log_ticks(low, high) == pytest.approx(expected)
