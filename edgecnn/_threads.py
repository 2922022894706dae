"""PyTorch's thread count is process-wide: a block that changes it restores it after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(count: int | None = None) -> Iterator[None]:
    """Run the block with ``count`` PyTorch threads (or whatever it sets itself), then restore the
    previous count, so what runs next in this process (a recipe's next step, the rest of ``edgecnn
    prune``) keeps its own."""
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
