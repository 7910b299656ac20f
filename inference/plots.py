"""PNG figures for evaluation reports: a confusion matrix and a reliability diagram.

matplotlib is imported when a figure is drawn (the `train` and `agent` extras carry it),
with the non-interactive Agg backend so it works on headless nodes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from streams.errors import ModelError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ModelError("plots need matplotlib: pip install 'edgeloop[train]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> Path:
    """Row-normalised colours (recall per true class) with the raw counts written in."""
    plt = _pyplot()
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.0 * n + 2))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=40, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_png(bins: dict[str, list[Any]], path: Path, title: str,
                    uncalibrated: dict[str, list[Any]] | None = None) -> Path:
    """Accuracy against mean confidence per bin, with the diagonal and bin counts."""
    plt = _pyplot()
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5, 6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    for b, style, label in ((uncalibrated, "s:", "T = 1"), (bins, "o-", "calibrated")):
        if b is None:
            continue
        used = np.array(b["count"]) > 0
        ax.plot(np.array(b["confidence"])[used], np.array(b["accuracy"])[used], style, label=label)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(loc="upper left")
    centres = (np.array(bins["lower"]) + np.array(bins["upper"])) / 2
    axc.bar(centres, bins["count"], width=(bins["upper"][0] - bins["lower"][0]) * 0.9)
    axc.set_yscale("symlog")
    axc.set_xlabel("confidence (max calibrated probability)")
    axc.set_ylabel("windows")
    axc.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
