"""Graph patterns the int8 recipes keep in float, found on any dataflow graph (ONNX or OpenVINO).

Squeeze-excite branches (global average pool → two 1×1 convolutions → gate → rescale) are the usual
post-training-quantization casualty: the pooled vector of a few images falls outside the range the
calibration set gave it, and the gate then rescales every channel wrongly. On EfficientNet-B0 trained
on digits, int8 SE branches flipped two confidently classified images out of 269 in onnxruntime
(logit margins 24 and 26); kept float, the only flips left were near-ties. They are a sliver of the
work (1×1 spatial size).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

GLOBAL_POOLS = frozenset({"ReduceMean", "GlobalAveragePool"})  # ONNX and OpenVINO spell it so
MULTIPLY = frozenset({"Mul", "Multiply"})


@dataclass(frozen=True)
class GraphNode:
    name: str
    op_type: str
    inputs: tuple[str, ...]  # tensor names
    outputs: tuple[str, ...]


def squeeze_excite_nodes(nodes: Iterable[GraphNode]) -> list[str]:
    """Names of the nodes of every squeeze-excite branch: from a global average pool up to and
    including the multiply that meets a tensor from outside the branch (the features it rescales).
    A pool that never reaches such a multiply (the classifier's) is not a branch."""
    nodes = list(nodes)
    producer, consumers = _links(nodes)
    branches: set[str] = set()
    for pool in (n for n in nodes if n.op_type in GLOBAL_POOLS):
        downstream = _reachable(pool, consumers)
        # the rescaling multiply is the one fed by a tensor made outside (upstream of) the pool
        ends = {
            n.name
            for n in downstream
            if n.op_type in MULTIPLY and any(t in producer and producer[t] not in downstream for t in n.inputs)
        }
        if ends:
            branches |= {n.name for n in _reachable(pool, consumers, stop_at=ends)}
    return sorted(branches)


def _links(nodes: list[GraphNode]) -> tuple[dict[str, GraphNode], dict[str, list[GraphNode]]]:
    """Each tensor's producing node, and the nodes that take it."""
    producer = {tensor: node for node in nodes for tensor in node.outputs}
    consumers: dict[str, list[GraphNode]] = {}
    for node in nodes:
        for tensor in node.inputs:
            consumers.setdefault(tensor, []).append(node)
    return producer, consumers


def _reachable(
    start: GraphNode, consumers: dict[str, list[GraphNode]], stop_at: Collection[str] = ()
) -> set[GraphNode]:
    """``start`` and every node downstream of it, not going past the nodes named in ``stop_at``."""
    seen, frontier = {start}, [start]
    while frontier:
        for tensor in frontier.pop().outputs:
            for consumer in consumers.get(tensor, []):
                if consumer not in seen:
                    seen.add(consumer)
                    if consumer.name not in stop_at:
                        frontier.append(consumer)
    return seen


def float_followers(nodes: Iterable[GraphNode], float_layers: Collection[str], layer_ops: Collection[str]) -> list[str]:
    """Names of the nodes that compute only on what ``float_layers`` (node names) make, up to the next
    layer (an op in ``layer_ops``): their activations, the gating multiply of a SiLU, a residual add whose
    every input is float. Kept float with the layers, they spare the layers' outputs a round trip through
    int8 that would otherwise stay beside every float layer (onnxruntime quantizes such ops on their own).
    An op that also takes a tensor made elsewhere (an int8 branch) stays as its recipe has it."""
    nodes = list(nodes)
    producer, consumers = _links(nodes)
    floating = {node.name for node in nodes if node.name in float_layers}
    float_tensors = {tensor for node in nodes if node.name in floating for tensor in node.outputs}
    frontier = [node for node in nodes if node.name in floating]
    followers = []
    while frontier:
        for tensor in frontier.pop().outputs:
            for consumer in consumers.get(tensor, []):
                if consumer.name in floating or consumer.op_type in layer_ops:
                    continue
                # constants (initializers, Constant nodes: made from no input) and the graph's input do not count
                computed = [t for t in consumer.inputs if t in producer and producer[t].inputs]
                if all(t in float_tensors for t in computed):
                    floating.add(consumer.name)
                    float_tensors.update(consumer.outputs)
                    followers.append(consumer.name)
                    frontier.append(consumer)
    return sorted(followers)
