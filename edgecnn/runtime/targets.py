"""The CPU an artifact is for: what changes the right int8 recipe, and how to tell one CPU from another.

One fact decides a recipe today: x86 CPUs without VNNI (AVX2) add pairs of u8×s8 products in saturating
16-bit lanes (VPMADDUBSW) in onnxruntime's and OpenVINO's int8 kernels, so an artifact for such a CPU keeps
its weights in 7 bits; CPUs with VNNI, and ARM (whose int8 products accumulate in 32 bits, with or
without the dot-product instructions), keep 8-bit weights, which are more accurate. The dot-product
instructions decide whether int8 is faster than fp32 on ARM (a Cortex-A72 has none), not what is right.

Standard library only: the benchmarker checks an artifact's target on the device it runs on.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from edgecnn.errors import EdgeCNNError
from edgecnn.runtime.base import cpu_flags
from edgecnn.runtime.metadata import ArtifactMetadata

AUTO = "auto"
#: x86 flags of the instructions that multiply u8×s8 and add in 32 bits, without a saturating 16-bit step
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: ARM's int8 dot product (SDOT/UDOT), as /proc/cpuinfo spells it
ARM_DOT_FLAGS = frozenset({"asimddp"})
X86_MACHINES = ("x86_64", "amd64", "i686", "x86")
#: the runtimes whose x86 int8 kernels add u8×s8 pairs in 16 bits where there is no VNNI
SATURATING_RUNTIMES = ("onnxruntime", "openvino")
ARM_MACHINES = ("aarch64", "arm64")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    arch: str  # "x86_64" or "aarch64"
    int8_dot_product: bool | None  # VNNI on x86, SDOT on ARM; None: not known for the whole family

    @property
    def saturates(self) -> bool:
        """Whether int8 kernels there add u8×s8 pairs in saturating 16 bits: the reason for 7-bit weights."""
        return self.arch == "x86_64" and not self.int8_dot_product

    @property
    def weights_choice(self) -> str:
        """Why the weights' range of an artifact for this target is what it is, for its metadata."""
        if self.saturates:
            return f"{self.name}: x86 without VNNI (u8×s8 pairs saturate in 16 bits)"
        return f"{self.name}: no saturating u8×s8 step ({'VNNI' if self.arch == 'x86_64' else 'ARM'})"


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("x86-vnni", "x86-64 with VNNI (AVX-512 VNNI, AVX-VNNI or AMX)", "x86_64", True),
        Target("x86-avx2", "x86-64 with AVX2 and no VNNI", "x86_64", False),
        Target("arm64", "64-bit ARM, any core", "aarch64", None),
        Target("rpi4", "Raspberry Pi 4: Cortex-A72, no int8 dot product", "aarch64", False),
        Target("rpi5", "Raspberry Pi 5: Cortex-A76, with the int8 dot product", "aarch64", True),
    )
}


def this_cpu(flags: set[str] | None = None, machine: str | None = None) -> Target:
    """The target that describes this machine (``flags`` and ``machine`` default to its own)."""
    machine = (platform.machine() if machine is None else machine).lower()
    flags = cpu_flags() if flags is None else flags
    if machine in X86_MACHINES:
        return TARGETS["x86-vnni" if flags & VNNI_FLAGS else "x86-avx2"]
    if machine in ARM_MACHINES:
        dot = bool(flags & ARM_DOT_FLAGS)
        return Target("arm64", f"64-bit ARM {'with' if dot else 'without'} the int8 dot product", "aarch64", dot)
    return Target(machine, f"a {machine} CPU", machine, None)


def resolve_target(name: str) -> Target:
    """A target by name; ``auto`` is the machine that exports."""
    if name == AUTO:
        return this_cpu()
    if name not in TARGETS:
        raise EdgeCNNError(f"unknown target {name!r}; valid: {AUTO}, {', '.join(TARGETS)}")
    return TARGETS[name]


def target_mismatch(metadata: ArtifactMetadata, runtime: str, here: Target | None = None) -> str | None:
    """What running the artifact ``metadata`` describes in ``runtime`` on this CPU (``here``) means, or None
    when it was made for a CPU like this one (or records no target)."""
    made_for = TARGETS.get(metadata.target or "")
    if made_for is None:
        return None
    here = this_cpu() if here is None else here
    if made_for.arch != here.arch:
        return (
            f"made for {made_for.name} ({made_for.description}), running on {here.description}: "
            "its latency here says little about the target"
        )
    seven_bit_weights = metadata.quantization is not None and metadata.quantization.seven_bit_weights
    saturating_runtime = metadata.precision == "int8" and runtime in SATURATING_RUNTIMES
    if saturating_runtime and here.saturates and not seven_bit_weights:
        return (
            f"made for {made_for.name} with 8-bit weights; this CPU has no VNNI, where {runtime}'s int8 kernels "
            "(VPMADDUBSW) can saturate: export with --target x86-avx2 (7-bit weights) for it"
        )
    if saturating_runtime and seven_bit_weights and not here.saturates and made_for.saturates:
        return (
            f"made for {made_for.name} with 7-bit weights; this CPU has VNNI and does not saturate: "
            "--target x86-vnni keeps 8-bit weights, which are more accurate"
        )
    return None
