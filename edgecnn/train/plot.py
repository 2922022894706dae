"""Training curves as a PNG a person can read at a glance."""

from __future__ import annotations

from pathlib import Path

from edgecnn._io import atomic_path
from edgecnn.train.config import EpochRecord


def plot_curves(history: list[EpochRecord], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [r.epoch for r in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    loss_axis.plot(epochs, [r.train_loss for r in history], label="train")
    loss_axis.plot(epochs, [r.val_loss for r in history], label="validation")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    accuracy_axis.plot(epochs, [r.train_accuracy for r in history], label="train")
    accuracy_axis.plot(epochs, [r.val_accuracy for r in history], label="validation")
    accuracy_axis.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
