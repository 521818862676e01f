"""Plots of a detector training run: the loss per step and each validated configuration's
mAP at each validation."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_training(log, out: Path) -> Path:
    """``log``: a ``train.detector.TrainLog``."""
    figure, (loss_axis, map_axis) = plt.subplots(1, 2, figsize=(11, 4))
    losses = np.asarray(log.losses)
    loss_axis.plot(losses, color="0.75", linewidth=0.6, label="per step")
    window = min(50, len(losses))
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        loss_axis.plot(np.arange(window - 1, len(losses)), smooth, label=f"mean of {window}")
    loss_axis.set(xlabel="step", ylabel="loss (head and probes)", title="loss", yscale="log")
    loss_axis.legend()
    for name in log.validation[0] if log.validation else ():
        values = [scores[name] for scores in log.validation]
        map_axis.plot(log.validation_steps, values, marker="o", label=name)
    map_axis.set(
        xlabel="step",
        ylabel="nuScenes mAP",
        title="validation mAP",
        ylim=(0, 1),
    )
    if log.validation:
        map_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return Path(out)
