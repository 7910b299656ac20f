"""The augmentation experiment, in the shape of the Generative AI-in-the-loop paper's result.

Macro-F1 on a real evaluation set as a function of how many real windows of each attack
class the detector trains on (5, 10, 20, 50), for each method:

    none        real training windows only
    none+val    real training plus the real validation windows the gate sees: what
                spending that data on training instead of on gating would give
    smote       SMOTE-style interpolation (`baselines.smote_windows`), ungated
    kde         the statistical generator, one batch per class, ungated
    synth       synthesis with self-evolution (`synthesizer.Synthesizer`): with an LLM
                client its windows are `llm:<model>`, offline they are `stat:kde`; the
                table names which

Every method adds `synth_windows` windows per attack class per batch; benign windows are
real only. The gate scores on validation windows drawn from the training capture, apart
from the training windows; the evaluation set is a separate capture.

    >>> res = run_experiment(train_flows, eval_flows, out_dir, client=None)
    >>> res.table            # size x method: mean and std of macro-F1 over repeats

`train_and_score(train_windows, eval_windows) -> macro-F1` trains the detector; the
default is the fast tree ensemble of `sklearn_eval`. The CNN trainer plugs in here, and the
synthesizer's gate uses the same callable against the validation windows.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from llm_agents.synthesis.baselines import KDEWindowGenerator, smote_windows
from llm_agents.synthesis.sklearn_eval import SklearnEvaluator
from llm_agents.synthesis.synthesizer import JSONClient, Synthesizer
from llm_agents.window_frames import windows_frame

log = logging.getLogger(__name__)
TrainAndScore = Callable[[pd.DataFrame, pd.DataFrame], float]
METHODS = ("none", "none+val", "smote", "kde", "synth")


@dataclass
class AugmentConfig:
    sizes: tuple[int, ...] = (5, 10, 20, 50)
    repeats: int = 3
    rounds: int = 3
    synth_windows: int | None = None  # per class per batch; default max(10, 2 x size)
    val_windows: int | None = None    # per attack class; default max(5, size)
    benign_windows: int = 200          # real benign windows in training (and in validation)
    benign: str = "benign"
    k: int = 8
    seconds: float = 10.0
    key: str = "src"
    seed: int = 0
    score_batches: bool = True  # fidelity reports per round (and offline self-evolution)


@dataclass
class ExperimentResult:
    rows: pd.DataFrame          # one per (size, repeat, method)
    table: pd.DataFrame         # size x method, mean/std macro-F1
    rounds: list[dict[str, Any]] = field(default_factory=list)  # synthesizer round reports
    meta: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)


class ForestScorer:
    """The default `train_and_score`: trees on window descriptors, caching each eval set."""

    def __init__(self, k: int = 8, seed: int = 0) -> None:
        self.k, self.seed = k, seed
        self._cache: dict[int, tuple[pd.DataFrame, SklearnEvaluator]] = {}

    def __call__(self, train: pd.DataFrame, eval_df: pd.DataFrame) -> float:
        hit = self._cache.get(id(eval_df))
        if hit is None or hit[0] is not eval_df:
            hit = (eval_df, SklearnEvaluator(eval_df, k=self.k, seed=self.seed))
            self._cache[id(eval_df)] = hit
        return hit[1](train)


def split_budget(pool: pd.DataFrame, size: int, cfg: AugmentConfig,
                 rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Disjoint training and validation windows: `size` (train) and `val_windows` (val) per
    attack class, `benign_windows` benign each. A small class gives validation what is left
    after training, at least one window when it has two."""
    ids = pool.drop_duplicates("window_id")[["window_id", "label"]]
    train_ids, val_ids = [], []
    n_val = cfg.val_windows or max(5, size)
    for label, grp in ids.groupby("label", sort=True):
        order = grp["window_id"].to_numpy()[rng.permutation(len(grp))]
        n_tr = cfg.benign_windows if label == cfg.benign else size
        n_tr = min(n_tr, max(1, len(order) - 1)) if len(order) > 1 else len(order)
        n_va = cfg.benign_windows if label == cfg.benign else n_val
        train_ids += list(order[:n_tr])
        val_ids += list(order[n_tr:n_tr + n_va])
    pick = lambda w: pool[pool["window_id"].isin(set(w))].reset_index(drop=True)  # noqa: E731
    return pick(train_ids), pick(val_ids)


def run_experiment(train_flows: pd.DataFrame, eval_flows: pd.DataFrame, out_dir: str | Path, *,
                   client: JSONClient | None = None, cfg: AugmentConfig | None = None,
                   train_and_score: TrainAndScore | None = None, model: str = "",
                   methods: Sequence[str] = METHODS,
                   data: dict[str, Any] | None = None) -> ExperimentResult:
    """Run every (size, repeat, method); write rows CSV, table CSV + Markdown, plot PNG and
    a JSON of the synthesizer's rounds and the run's metadata into `out_dir`. `data`
    describes the inputs (paths, hashes) for the record."""
    cfg = cfg or AugmentConfig()
    score = train_and_score or ForestScorer(cfg.k, cfg.seed)
    t0 = time.perf_counter()
    cut = dict(k=cfg.k, seconds=cfg.seconds, key=cfg.key)
    pool = windows_frame(train_flows, **cut)  # type: ignore[arg-type]
    eval_w = windows_frame(eval_flows, **cut)  # type: ignore[arg-type]
    attack = sorted(set(pool["label"]) - {cfg.benign})
    rows, rounds = [], []
    for size in cfg.sizes:
        for rep in range(cfg.repeats):
            seed = cfg.seed + 1000 * rep + size
            train, val = split_budget(pool, size, cfg, np.random.default_rng(seed))
            n_syn = cfg.synth_windows or max(10, 2 * size)
            for method in methods:
                t = time.perf_counter()
                aug, info = _augment(method, train, val, attack, n_syn, seed, cfg, client, score)
                f1 = score(aug, eval_w)
                rows.append({"size": size, "repeat": rep, "method": method, "macro_f1": f1,
                             "train_windows": int(train["window_id"].nunique()),
                             "synthetic_windows": _synthetic_windows(aug),
                             "seconds": round(time.perf_counter() - t, 3), **info.pop("row", {})})
                rounds += [{"size": size, "repeat": rep, **r} for r in info.get("rounds", [])]
                log.info("augment size=%d repeat=%d %s: macro-F1 %.3f", size, rep, method, f1)
    df = pd.DataFrame(rows)
    res = ExperimentResult(rows=df, table=summarise(df), rounds=rounds)
    res.meta = {"config": asdict(cfg), "mode": "llm" if client is not None else "offline",
                "synth_source": _synth_source(df), "model": model or _synth_source(df),
                "train_windows_available": pool.groupby("label")["window_id"].nunique().to_dict(),
                "eval_windows": eval_w.groupby("label")["window_id"].nunique().to_dict(),
                "scorer": type(score).__name__, "seconds": round(time.perf_counter() - t0, 1),
                "data": data or {}}
    res.paths = write_outputs(res, Path(out_dir))
    return res


def _augment(method: str, train: pd.DataFrame, val: pd.DataFrame, attack: list[str], n_syn: int,
             seed: int, cfg: AugmentConfig, client: JSONClient | None,
             score: TrainAndScore) -> tuple[pd.DataFrame, dict[str, Any]]:
    if method == "none":
        return train, {}
    if method == "none+val":
        return pd.concat([train, val], ignore_index=True), {}
    if method == "smote":
        extra = [smote_windows(train, c, n_syn, seed=seed, k=cfg.k, seconds=cfg.seconds)
                 for c in attack]
        return pd.concat([train, *extra], ignore_index=True), {}
    if method == "kde":
        extra = [KDEWindowGenerator(train, c, seed=seed, seconds=cfg.seconds).generate(n_syn)
                 for c in attack]
        return pd.concat([train, *extra], ignore_index=True), {}
    if method == "synth":
        synth = Synthesizer(client, k=cfg.k, seconds=cfg.seconds, seed=seed, score=cfg.score_batches)
        res = synth.synthesize(train, n_syn, evaluate=lambda aug: score(aug, val), classes=attack,
                               rounds=cfg.rounds, benign=cfg.benign)
        per = res.per_class.values()
        sources = sorted({s for r in per for s in r.sources})
        info = {"row": {"source": ",".join(sources), "gate_f1_before": res.baseline_f1,
                        "gate_f1_after": res.final_f1,
                        "kept_batches": sum(x.kept for r in per for x in r.rounds),
                        "batches": sum(len(r.rounds) for r in per),
                        "prompt_tokens": sum(r.prompt_tokens for r in per),
                        "completion_tokens": sum(r.completion_tokens for r in per)},
                "rounds": [{"label": r.label, **x.to_dict()} for r in per for x in r.rounds]}
        return res.train, info
    raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")


def _synthetic_windows(df: pd.DataFrame) -> int:
    return int((df.drop_duplicates("window_id")["provenance"] != "real").sum())


def _method_name(method: str, meta: dict[str, Any]) -> str:
    if method != "synth":
        return method
    return f"synth ({meta.get('synth_source') or meta.get('mode')})"


def _synth_source(df: pd.DataFrame) -> str:
    if "source" not in df.columns:
        return ""
    vals = sorted({s for v in df["source"].dropna() for s in str(v).split(",") if s})
    return ",".join(vals)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of macro-F1 per size and method (methods in METHODS order)."""
    g = rows.groupby(["size", "method"])["macro_f1"].agg(["mean", "std", "count"]).reset_index()
    order = {m: i for i, m in enumerate(METHODS)}
    g["std"] = g["std"].fillna(0.0)
    return g.sort_values(["size", "method"], key=lambda s: s.map(order) if s.name == "method" else s)


def markdown_table(table: pd.DataFrame, meta: dict[str, Any]) -> str:
    methods = [m for m in METHODS if m in set(table["method"])]
    label = {m: _method_name(m, meta) for m in methods}
    head = "| real windows per attack class | " + " | ".join(label[m] for m in methods) + " |"
    lines = [head, "|" + "---|" * (len(methods) + 1)]
    for size, grp in table.groupby("size"):
        cell = {r.method: f"{r.mean:.3f} ± {r.std:.3f}" for r in grp.itertuples()}
        lines.append(f"| {size} | " + " | ".join(cell.get(m, "") for m in methods) + " |")
    cfg = meta.get("config", {})
    lines += ["", f"Macro-F1 on the real evaluation set, mean ± std over {cfg.get('repeats')} "
              f"repeats; scorer {meta.get('scorer')}; synthesis mode {meta.get('mode')}, "
              f"model {meta.get('model') or '-'}."]
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, meta: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    methods = [m for m in METHODS if m in set(table["method"])]
    for i, method in enumerate(methods):
        t = table[table["method"] == method].sort_values("size")
        dodge = 1.0 + 0.025 * (i - (len(methods) - 1) / 2)  # side by side on the log axis
        ax.errorbar(t["size"] * dodge, t["mean"], yerr=t["std"], marker="o", capsize=3,
                    label=_method_name(method, meta))
    ax.set_xscale("log")
    ax.minorticks_off()
    sizes = sorted(set(table["size"]))
    ax.set_xticks(sizes, labels=[str(s) for s in sizes])
    ax.set_ylim(top=1.005)
    ax.set_xlabel("real training windows per attack class")
    ax.set_ylabel("macro-F1 on real evaluation windows")
    ax.set_title("Augmentation: none vs SMOTE vs synthesis with self-evolution")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(res: ExperimentResult, out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"rows": out / "augment_rows.csv", "table_csv": out / "augment_table.csv",
             "table_md": out / "augment_table.md", "plot": out / "augment_f1.png",
             "details": out / "augment_details.json"}
    res.rows.to_csv(paths["rows"], index=False)
    res.table.to_csv(paths["table_csv"], index=False)
    paths["table_md"].write_text(markdown_table(res.table, res.meta), encoding="utf-8")
    plot(res.table, res.meta, paths["plot"])
    details = _clean({"meta": res.meta, "rounds": res.rounds})
    paths["details"].write_text(json.dumps(details, indent=1, allow_nan=False), encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}


def _clean(obj: Any) -> Any:
    """Plain JSON: numpy scalars unwrapped, NaN and infinities as null."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)
