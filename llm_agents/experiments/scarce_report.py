"""The scarce-data experiment's report: intervals, paired gains, the table and the plot.

    >>> gains = paired_gains(rows)          # each arm minus real, paired by draw
    >>> print(markdown_table(summarise(rows), meta) + gains_table(gains))
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from llm_agents.experiments.scarce import ScarceResult

ARMS = ("real", "smote", "kde", "llm", "oracle")
HIGHER_IS_BETTER = {"known_ok", "macro_f1"}


def interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean; a single value is its own."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (group, figure, arm), g in rows.groupby(["group", "figure", "arm"], sort=False):
        mean, lo, hi = interval(g["value"].tolist())
        out.append({"group": group, "figure": figure, "arm": arm, "mean": mean, "low": lo, "high": hi,
                    "repeats": len(g), "windows": int(g["windows"].median())})
    return pd.DataFrame(out)


def paired_gains(rows: pd.DataFrame, base: str = "real") -> pd.DataFrame:
    """Each arm's gain over `base` within the same repeat (same real windows, same seed),
    mean and 95% t-interval: the draws differ far more than the arms do, so only the paired
    difference can show an arm's effect."""
    key = ["repeat", "group", "figure"]
    ref = rows[rows["arm"] == base].set_index(key)["value"]
    out = []
    for (group, figure, arm), g in rows[rows["arm"] != base].groupby(["group", "figure", "arm"], sort=False):
        diff = g.set_index(key)["value"] - ref.reindex(g.set_index(key).index)
        diff = diff.dropna()
        if len(diff):
            mean, lo, hi = interval(diff.tolist())
            out.append({"group": group, "figure": figure, "arm": arm, "gain": mean, "low": lo, "high": hi,
                        "repeats": len(diff)})
    return pd.DataFrame(out)


def gains_table(gains: pd.DataFrame, base: str = "real") -> str:
    """Markdown: the paired gains, a sign where the interval excludes 0 (better or worse)."""
    if gains.empty:
        return ""
    arms = [a for a in ARMS if a in set(gains["arm"])]
    lines = [f"| group | figure | " + " | ".join(f"{a} − {base}" for a in arms) + " |",
             "|---|---|" + "---|" * len(arms)]
    for (group, figure), g in gains.groupby(["group", "figure"], sort=False):
        cell = {}
        for r in g.itertuples():
            up = figure in HIGHER_IS_BETTER
            mark = ""
            if r.low > 0 or r.high < 0:
                mark = " ✓" if (r.low > 0) == up else " ✗"
            cell[r.arm] = f"{r.gain:+.3f} [{r.low:+.3f}, {r.high:+.3f}]{mark}"
        lines.append(f"| {group} | {figure} | " + " | ".join(cell.get(a, "") for a in arms) + " |")
    lines += ["", f"Paired by repeat: each arm minus {base} on the same draw, mean [95% t-interval]; ✓ better and "
              "✗ worse where the interval excludes 0."]
    return "\n".join(lines) + "\n"


def markdown_table(table: pd.DataFrame, meta: dict[str, Any]) -> str:
    cfg = meta["config"]
    arms = [a for a in ARMS if a in set(table["arm"])]
    lines = ["| group | figure | windows | " + " | ".join(arms) + " |", "|---|---|---:|" + "---|" * len(arms)]
    for (group, figure), g in table.groupby(["group", "figure"], sort=False):
        cell = {r.arm: f"{r.mean:.3f} [{r.low:.3f}, {r.high:.3f}]" for r in g.itertuples()}
        best = (g["mean"].max() if figure in HIGHER_IS_BETTER else g["mean"].min())
        for r in g.itertuples():
            if r.mean == best and len(g) > 1:
                cell[r.arm] = f"**{cell[r.arm]}**"
        lines.append(f"| {group} | {figure} | {int(g['windows'].median())} | "
                     + " | ".join(cell.get(a, "") for a in arms) + " |")
    runs = pd.DataFrame(meta.get("runs", []))
    if len(runs):
        added = runs.groupby("arm")["synthetic_windows"].mean()
        lines.append("| (training) | synthetic windows kept, mean | | "
                     + " | ".join(f"{added[a]:.0f}" if a in added else "" for a in arms) + " |")
        if "valid_windows" in runs.columns:
            gen = runs.groupby("arm")[["generated_windows", "valid_windows"]].sum()
            lines.append("| (training) | windows generated / physically valid, all repeats | | "
                         + " | ".join(f"{int(gen.loc[a, 'generated_windows'])} / {int(gen.loc[a, 'valid_windows'])}"
                                      if a in gen.index and not np.isnan(gen.loc[a, "generated_windows"]) else ""
                                      for a in arms) + " |")
    lines += ["", f"Mean [95% t-interval] over {cfg['repeats']} repeats; each repeat draws at most "
              f"{cfg['per_class']} real windows per class from {Path(meta['train']).name}; generators add "
              f"{cfg['synth_windows']} windows per attack class (the llm arm {cfg['llm_windows']} per round, "
              f"{cfg['llm_rounds']} round{'s' if cfg['llm_rounds'] != 1 else ''}), "
              f"{'kept only where they raise the gate F1' if cfg['gated'] else 'ungated'} for llm and oracle; bold: the best mean. known_ok and macro_f1: "
              f"higher is better; false alerts, deferrals and misses: lower. LLM: {meta.get('model') or 'not run'}."]
    return "\n".join(lines) + "\n"


def plot(gains: pd.DataFrame, path: Path, base: str = "real") -> None:
    """Each arm's paired gain over `base` with its interval: one row of panels per group."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = [f for f in ("macro_f1", "known_ok", "benign_false_alert", "unknown_miss") if f in set(gains["figure"])]
    groups = list(dict.fromkeys(gains["group"]))
    arms = [a for a in ARMS if a in set(gains["arm"])]
    fig, axes = plt.subplots(len(groups), len(figs), figsize=(3.1 * len(figs), 2.3 * len(groups)), squeeze=False)
    for i, group in enumerate(groups):
        for j, figure in enumerate(figs):
            ax = axes[i][j]
            g = gains[(gains["group"] == group) & (gains["figure"] == figure)].set_index("arm")
            if g.empty:
                ax.axis("off")
                continue
            g = g.reindex([a for a in arms if a in g.index])
            ax.bar(range(len(g)), g["gain"], yerr=[g["gain"] - g["low"], g["high"] - g["gain"]], capsize=3,
                   color=[f"C{ARMS.index(a)}" for a in g.index])
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xticks(range(len(g)), g.index, fontsize=8)
            better = "higher" if figure in HIGHER_IS_BETTER else "lower"
            ax.set_title(f"{group}: {figure} ({better} is better)", fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Gain over {base} only (paired by draw, 95% interval): ≤20 real windows per class from one "
                 "lab capture", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(res: "ScarceResult", out: Path) -> dict[str, str]:
    paths = {"rows": out / "scarce_rows.csv", "table": out / "scarce_table.md", "plot": out / "scarce.png",
             "json": out / "scarce.json"}
    res.rows.to_csv(paths["rows"], index=False)
    gains = paired_gains(res.rows)
    paths["table"].write_text(markdown_table(res.table, res.meta) + "\n" + gains_table(gains), encoding="utf-8")
    if len(gains):
        plot(gains, paths["plot"])
    else:                                   # one arm only: nothing to compare
        paths.pop("plot")
    paths["json"].write_text(json.dumps({"meta": res.meta, "table": res.table.to_dict("records"),
                                         "gains": gains.to_dict("records")}, indent=1, default=str), encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}
