"""A training run's record: ``log.csv`` (one row per epoch) and ``curves.png`` (loss and Dice)."""
from __future__ import annotations

import csv
import io
import os
from typing import Dict, List

from ..write.atomic import replacing, write_text


def write_log(history: List[Dict], out_dir: str) -> None:
    """Write ``log.csv`` and ``curves.png`` in ``out_dir``, each atomically."""
    keys = sorted({k for r in history for k in r}, key=lambda k: (k != "epoch", k))
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys, lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    write_text(os.path.join(out_dir, "log.csv"), buf.getvalue())
    write_curves(history, os.path.join(out_dir, "curves.png"))


def write_curves(history: List[Dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; never a window
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    epochs = [r["epoch"] for r in history]
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", color="black", markersize=3)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
    for region, colour in (("WT", "tab:green"), ("TC", "tab:orange"), ("ET", "tab:red")):
        pts = [(r["epoch"], r[f"dice_{region}"]) for r in history if f"dice_{region}" in r]
        if pts:
            ax_dice.plot(*zip(*pts), "o-", color=colour, label=region, markersize=3)
    ax_dice.set(xlabel="epoch", ylabel="validation Dice", title="Validation Dice", ylim=(0, 1))
    if any("dice_WT" in r for r in history):
        ax_dice.legend(loc="lower right")
    else:
        ax_dice.text(0.5, 0.5, "no validation cases", ha="center", va="center", transform=ax_dice.transAxes)
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
