"""Why an int8 artifact is not faster than its fp32 sibling: causes read from the CPU's flags and the profile.

Each finding names a cause, the evidence for it and the fix. Only what the flags or a profile show is said;
where neither shows a cause, the diagnosis says so rather than guessing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

from edgecnn.bench.profile import FLOAT_ACTIVATIONS, ProfileSummary
from edgecnn.runtime.targets import ARM_DOT_FLAGS, ARM_MACHINES, VNNI_FLAGS, X86_MACHINES

#: conversions between float and int8 above this share of the profiled time are a cause: in a graph whose
#: layers run in int8 end to end they take a few percent
QDQ_SHARE_LIMIT = 0.15
#: float ops (other than the conversions) above this share of an int8 graph's time are a cause
FLOAT_SHARE_LIMIT = 0.2


@dataclass(frozen=True)
class Finding:
    cause: str
    evidence: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _flags(flags: Collection[str]) -> str:
    return ", ".join(sorted(flags)) or "none of note"


def cpu_findings(machine: str, flags: Collection[str]) -> list[Finding]:
    """The CPU lacks the instructions that make int8 arithmetic cheaper than fp32 (unknown flags: no finding)."""
    machine = machine.lower()
    if not flags:
        return []
    if machine in X86_MACHINES and not set(flags) & VNNI_FLAGS:
        return [
            Finding(
                "x86 CPU without VNNI or AMX: int8 multiply-adds go through a saturating 16-bit u8×s8 step "
                "(VPMADDUBSW, then VPMADDWD), about as many instructions as fp32 FMA, so int8 gains little",
                f"CPU flags: {_flags(flags)}; none of {', '.join(sorted(VNNI_FLAGS))}",
                "keep fp32 on this CPU, or deploy int8 on one with avx512_vnni, avx_vnni or amx_int8",
            )
        ]
    if machine in ARM_MACHINES and not set(flags) & ARM_DOT_FLAGS:
        return [
            Finding(
                "ARM CPU without the int8 dot product (SDOT/UDOT): int8 convolutions widen to 16-bit "
                "multiply-accumulates and are often slower than fp32 (e.g. Cortex-A72, Raspberry Pi 4)",
                f"CPU flags: {_flags(flags)}; no asimddp",
                "keep fp32 on this board, or use one whose cores have the dot product (Cortex-A76: Raspberry Pi 5)",
            )
        ]
    return []


def profile_findings(summary: ProfileSummary) -> list[Finding]:
    """Time lost to conversions, to ops left in float, and to ops XNNPACK did not take."""
    found = []
    total = f"{summary.total_ms:.3g} ms" if summary.total_ms is not None else ""
    if summary.qdq_share is not None and summary.qdq_share > QDQ_SHARE_LIMIT:
        found.append(
            Finding(
                f"conversions between float and int8 take {summary.qdq_share:.0%} of the int8 graph's time",
                f"{summary.qdq_ops} Quantize/Dequantize ops: {summary.qdq_share:.0%} of {total} profiled",
                "fewer precision switches: quantize the ops between quantized layers too so tensors stay int8 "
                "and weights fold into int8 kernels instead of being dequantized each call; a larger input makes "
                "the remaining conversions weigh less",
            )
        )
    if summary.float_share is not None and summary.float_share > FLOAT_SHARE_LIMIT:
        types = summary.float_types[:5]
        activations = [t for t in types if t in FLOAT_ACTIVATIONS]
        fix = (
            f"the model's ReLU/ReLU6 variant (EfficientNet-Lite, MobileNetV3 without hard-swish), whose "
            f"activations stay int8, instead of {', '.join(activations)}; or keep these ops' neighbours in float "
            "so no conversions surround them"
            if activations
            else "quantize these ops too (the quantizer left them in float), or keep them and their neighbours "
            "in float so no conversions surround them"
        )
        found.append(
            Finding(
                f"ops left in float inside the int8 graph take {summary.float_share:.0%} of its time",
                f"float ops, most time first: {', '.join(types)} ({summary.float_share:.0%} of {total})",
                fix,
            )
        )
    partitions = summary.partitions
    if partitions is not None and (partitions != 1 or summary.outside_ops):
        split = "took no part of the graph" if partitions == 0 else f"runs the graph in {partitions} partition(s)"
        outside = f"{summary.outside_ops} ops outside XNNPACK: {', '.join(summary.outside_types) or 'none'}"
        found.append(
            Finding(
                f"XNNPACK {split}; ops outside it run on the interpreter's built-in kernels, with a hand-over at "
                "each boundary",
                outside,
                "a newer interpreter (pip install -U ai-edge-litert), whose XNNPACK takes more ops, or a model "
                f"without {', '.join(summary.outside_types) or 'these ops'}",
            )
        )
    return found


def diagnose(machine: str, flags: Collection[str], summary: ProfileSummary | None) -> list[Finding]:
    """Every cause the CPU and the int8 artifact's profile show; one finding saying none was found otherwise."""
    found = cpu_findings(machine, flags) + (profile_findings(summary) if summary is not None else [])
    if found:
        return found
    cpu = f"the CPU has int8 instructions ({_flags(flags)})" if flags else "the CPU's flags are unknown"
    if summary is None:
        return [Finding("no cause found", f"{cpu}; no profile taken", "bench --profile shows where the time goes")]
    shares = (
        f"Q/DQ {summary.qdq_share:.0%}, float ops {summary.float_share or 0:.0%} of {summary.total_ms:.3g} ms"
        if summary.qdq_share is not None
        else "no per-op times"
    )
    partitions = "" if summary.partitions is None else ", one XNNPACK partition"
    return [
        Finding(
            "the profile shows no cause",
            f"{cpu}; {shares}{partitions}",
            "none to suggest from the profile: compare its top ops with the fp32 artifact's (profiled alike)",
        )
    ]


def diagnose_host(results: list[dict[str, Any]], environment: dict[str, Any]) -> None:
    """Add a ``diagnosis`` to each int8 result not faster than the fp32 result of the same model and runtime."""
    fp32 = {
        (r.get("model"), r["runtime"]): r["latency"]["p50_ms"] for r in results if r.get("artifact_precision") == "fp32"
    }
    for result in results:
        baseline = fp32.get((result.get("model"), result["runtime"]))
        if result.get("artifact_precision") != "int8" or baseline is None or result["latency"]["p50_ms"] < baseline:
            continue
        profile = result.get("profile")
        summary = ProfileSummary.from_dict(profile["summary"]) if profile else None
        findings = diagnose(environment.get("machine") or "", environment.get("cpu_flags") or [], summary)
        result["diagnosis"] = {"fp32_p50_ms": baseline, "findings": [finding.to_dict() for finding in findings]}
