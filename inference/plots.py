"""PNG figures for evaluation reports: a confusion matrix and a reliability diagram.

matplotlib is imported when a figure is drawn (the `train` and `agent` extras carry it),
with the non-interactive Agg backend so it works on headless nodes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from contracts.errors import ModelError


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


# Verdict colours: greens for right calls, yellow/cyan for sent to a person, reds for wrong.
VERDICT_COLOURS = {"ok": "#2e7d32", "caught_alert": "#66bb6a", "caught_uncertain": "#4fc3f7",
                   "deferred": "#fbc02d", "wrong_class": "#ab47bc", "false_alert": "#e53935",
                   "miss": "#8e0000"}


def openworld_png(report: dict[str, Any], path: Path, title: str) -> Path:
    """Stacked verdict shares per group, kind and view: by window (left), by capture (right).

    One bar per row, labelled "group · kind · view (n)"; a black diamond marks the share
    the fan-out heuristic flagged (false alerts for benign rows, detections otherwise).
    """
    plt = _pyplot()
    rows = [(f"{g} · {k} · {v}", b) for g, grp in report["groups"].items()
            for v, kinds in grp.get("views", {}).items() for k, b in kinds.items()]
    if not rows:
        totals = report.get("totals", {})
        rows = [("nothing scored", None)]
        why = (f"nothing scored: {totals.get('failed', 0)} of {totals.get('captures', 0)} "
               "capture(s) failed (see the report's failures)")
    fig, axes = plt.subplots(1, 2, figsize=(13, max(2.4, 1.2 + 0.45 * len(rows))), sharey=True)
    seen: dict[str, Any] = {}
    for ax, unit, fkey in ((axes[0], "windows", "windows_rate"), (axes[1], "captures", "captures_rate")):
        for y, (_, b) in enumerate(rows):
            if b is None:
                ax.text(0.5, y, why, ha="center", va="center", fontsize=8)
                ax.set_ylim(-0.5, 0.5)
                continue
            left = 0.0
            for verdict, share in b[unit]["rates"].items():
                if share:
                    seen[verdict] = ax.barh(y, share, left=left, color=VERDICT_COLOURS[verdict],
                                            edgecolor="white", height=0.7)
                    if share >= 0.06:
                        ax.text(left + share / 2, y, f"{100 * share:.0f}%", ha="center",
                                va="center", fontsize=7, color="white")
                    left += share
            rate = b["fanout"][fkey]
            if rate is not None:
                seen["fan-out heuristic flagged"] = ax.plot(rate, y, "D", color="black", ms=5)[0]
            ax.text(1.01, y, f"n={b[unit]['total']:,}", va="center", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0%", "25%", "50%", "75%", "100%"])
        ax.set_xlabel(f"share of judged {unit}")
        ax.set_title(f"by {unit[:-1]}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [r for r, _ in rows], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title)
    if seen:                     # nothing scored: no verdict to name
        fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=min(8, len(seen)),
                   fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.2 / len(rows), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
