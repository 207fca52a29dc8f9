"""The loss curve as CSV and as a PNG plot. Writers only: they never touch the training state."""

from __future__ import annotations

import csv
from pathlib import Path


def write_loss_csv(path: Path, losses: list[float], lrs: list[float]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["step", "loss", "learning_rate"])
        for i, (loss, lr) in enumerate(zip(losses, lrs, strict=True), start=1):
            w.writerow([i, repr(loss), repr(lr)])


def write_loss_plot(path: Path, losses: list[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = list(range(1, len(losses) + 1))
    ax.plot(steps, losses, linewidth=0.8, alpha=0.5, label="loss")
    if len(losses) >= 5:
        k = max(2, len(losses) // 20)
        smooth = [
            sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1])
            for i in range(len(losses))
        ]
        ax.plot(steps, smooth, linewidth=1.5, label=f"mean of {k}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
