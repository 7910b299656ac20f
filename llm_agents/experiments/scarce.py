"""`edgeloop experiment scarce`: does augmentation help when real data is scarce and the
traffic at test time comes from elsewhere?

The lab's classes are easy to tell apart when training and test share a capture: from 10
real windows per class every arm of the old experiment scored about 0.995, so nothing could
show a gain. Here the detector learns from little and is judged far from home:

- **training**: at most `per_class` (20) real windows of every class, drawn from ONE lab
  capture recorded under one draw of link conditions (`data/lab/train.parquet`);
- **evaluation**, as the open world judges a bundle (`evaluation.openworld`), per group:
  the same tools under other draws of the link conditions (`lab-conditions`: the lab's
  eval, train-2 and train-3 captures), the held-out link profile with held-out tools and
  kinds (`lab-heldout`, `lab-heldout-b`) and foreign captures (`ndpi-test`): benign
  windows alerted on or deferred, known-class windows right, unknown kinds missed, and the
  macro-F1 of the known classes over the judged windows;
  Of each class's windows, `gate_per_class` (5) never train: they calibrate the detector's
  thresholds in every arm and gate the synthesiser's batches;
- **arms**, all on the same real windows within a repeat, each generator adding
  `synth_windows` windows per attack class:

      real     the real windows only
      smote    SMOTE-style interpolation between real windows of a class
      kde      the statistical generator (per-feature kernel densities)
      llm      the synthesiser with self-evolution through the configured LLM endpoint
               (`EDGELOOP_LLM_BASE_URL`; the local model from `edgeloop llm serve`)
      oracle   the same synthesiser path through an oracle that answers every request with
               real windows of the class from the training capture that the draw left
               out: what a perfect generator would add, the upper bound

- **repeats**: `repeats` (5) draws of the real windows and seeds; each figure is reported
  as mean and 95% t-interval over the repeats.

    edgeloop experiment scarce                                   # every arm; llm if an endpoint is set
    edgeloop experiment scarce --arms real,smote,kde,oracle --repeats 2 --groups lab-conditions

Writes `scarce_rows.csv` (one row per repeat, arm, group and figure), `scarce_table.md`,
`scarce.png` and `scarce.json` into the output folder, and prints the table.
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

from llm_agents.experiments.scarce_report import ARMS, summarise, write_outputs

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
MANIFESTS = {name: REPO / "data" / "openworld" / f"{name}.toml"
             for name in ("lab-conditions", "lab-heldout", "lab-heldout-b", "ndpi-test")}
# (kind, verdict) -> the figure's name in the table; lower is better for all but `known_ok`.
FIGURES = {("benign", "false_alert"): "benign_false_alert", ("benign", "deferred"): "benign_deferred",
           ("known", "ok"): "known_ok", ("unknown", "miss"): "unknown_miss"}


@dataclass
class ScarceConfig:
    per_class: int = 20              # real windows per class, benign included
    repeats: int = 5
    arms: tuple[str, ...] = ARMS
    groups: tuple[str, ...] = tuple(MANIFESTS)
    synth_windows: int = 40          # per attack class, every generator arm
    rounds: int = 2                  # self-evolution rounds (oracle)
    llm_windows: int = 4             # the llm arm's windows per attack class per round, and its
    llm_rounds: int = 1              # rounds: a 135M model on 2 cores takes ~35 s per request
    gated: bool = True               # False: keep every physically valid batch (llm, oracle)
    gate_per_class: int = 5          # of those, kept out of training: they calibrate every arm's
                                     # detector and gate the synthesiser's batches
    epochs: int = 40
    k: int = 8
    seconds: float = 10.0
    views: tuple[str, ...] = ("src", "dst")
    seed: int = 0


@dataclass
class ScarceResult:
    rows: pd.DataFrame               # repeat, arm, group, figure, value, windows
    table: pd.DataFrame              # arm x (group, figure): mean, low, high, n
    meta: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)


# The training draw ------------------------------------------------------------------------


def training_pool(path: Path, cfg: ScarceConfig) -> pd.DataFrame:
    """Every window of the one training capture, as the edge cuts it (all views)."""
    from inference.datasets.lab import load_lab
    from llm_agents.window_frames import windows_frame

    flows = load_lab("train", path=path, separate_runs=True)
    return windows_frame(flows, k=cfg.k, seconds=cfg.seconds, key=cfg.views[0], views=list(cfg.views))


def draw(pool: pd.DataFrame, per_class: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(at most `per_class` windows of each class, the rest of the pool)."""
    ids = pool.drop_duplicates("window_id")[["window_id", "label"]]
    take: list[str] = []
    for _, grp in ids.groupby("label", sort=True):
        order = grp["window_id"].to_numpy()[rng.permutation(len(grp))]
        take += list(order[:per_class])
    chosen = pool["window_id"].isin(set(take))
    return pool[chosen].reset_index(drop=True), pool[~chosen].reset_index(drop=True)


def split_gate(real: pd.DataFrame, per_class: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(windows the synthesiser trains its quick scorer on, windows that gate its batches):
    `per_class` of each class go to the gate, at least one stays for training."""
    ids = real.drop_duplicates("window_id")[["window_id", "label"]]
    gate: list[str] = []
    for _, grp in ids.groupby("label", sort=True):
        order = grp["window_id"].to_numpy()[rng.permutation(len(grp))]
        gate += list(order[: min(per_class, len(order) - 1)])
    held = real["window_id"].isin(set(gate))
    return real[~held].reset_index(drop=True), real[held].reset_index(drop=True)


class OracleClient:
    """Answers the synthesiser as a perfect generator would: with real windows of the asked
    class, from the part of the training capture the draw left out (in turn, never twice).

    It speaks the synthesiser's `JSONClient` protocol in process: the answer goes through
    the same parsing, physical checks, fidelity scoring and gate as an LLM's."""

    def __init__(self, unused: pd.DataFrame) -> None:
        from llm_agents.synthesis.prompt import example_rows

        self._rows = {c: example_rows(unused, c) for c in sorted(set(unused["label"]))}
        self._next = {c: 0 for c in self._rows}

    def complete_json(self, template: str, variables: Any, schema: Any, *, purpose: str,
                      max_tokens: int | None = None) -> Any:
        from llm_agents.client import LLMResult
        from llm_agents.synthesis.prompt import FIELD_NAMES

        label, n = str(variables["label"]), int(variables["n_windows"])
        rows = self._rows.get(label, [])
        start = self._next.get(label, 0)
        picked = rows[start:start + n]
        self._next[label] = start + len(picked)
        data = schema.model_validate({"windows": [{"flows": [dict(zip(FIELD_NAMES, r)) for r in w]}
                                                  for w in picked]})
        return LLMResult(data=data, raw="", model="oracle", prompt_tokens=0, completion_tokens=0, latency_s=0.0,
                         response_format="oracle")


def augment(arm: str, real: pd.DataFrame, gate: pd.DataFrame, unused: pd.DataFrame, attack: Sequence[str],
            cfg: ScarceConfig, seed: int, client: Any = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The training windows of one arm: the real training windows plus what its generator
    adds. `gate` (real windows kept out of training) gates the synthesiser's batches."""
    from llm_agents.synthesis.baselines import KDEWindowGenerator, smote_windows

    if arm == "real":
        return real, {}
    if arm == "smote":
        extra = [smote_windows(real, c, cfg.synth_windows, seed=seed, k=cfg.k, seconds=cfg.seconds) for c in attack]
        return pd.concat([real, *extra], ignore_index=True), {}
    if arm == "kde":
        extra = [KDEWindowGenerator(real, c, seed=seed, seconds=cfg.seconds).generate(cfg.synth_windows)
                 for c in attack]
        return pd.concat([real, *extra], ignore_index=True), {}
    if arm in ("llm", "oracle"):
        from llm_agents.experiments.augment import ForestScorer
        from llm_agents.synthesis.synthesizer import Synthesizer

        if arm == "oracle":
            client = OracleClient(unused)
        elif client is None:
            raise ValueError("the llm arm needs an LLM endpoint (EDGELOOP_LLM_BASE_URL)")
        score = ForestScorer(cfg.k, seed)
        synth = Synthesizer(client, k=cfg.k, seconds=cfg.seconds, seed=seed, score=True,
                            min_improvement=0.0 if cfg.gated else -2.0)
        n, rounds = (cfg.llm_windows, cfg.llm_rounds) if arm == "llm" else (cfg.synth_windows, cfg.rounds)
        res = synth.synthesize(real, n, evaluate=lambda aug: score(aug, gate), classes=attack, rounds=rounds)
        kept = [r.kept for r in res.per_class.values() if len(r.kept)]
        per = list(res.per_class.values())
        info = {"kept_windows": int(sum(k["window_id"].nunique() for k in kept)),
                "batches": sum(len(r.rounds) for r in per), "kept_batches": sum(x.kept for r in per for x in r.rounds),
                "sources": sorted({s for r in per for s in r.sources}),
                "failed_requests": sum(x.failed_requests for r in per for x in r.rounds),
                "gate_f1": [round(res.baseline_f1, 4), round(res.final_f1, 4)],
                "generated_windows": sum(x.generated_windows for r in per for x in r.rounds),
                "valid_windows": sum(x.valid_windows for r in per for x in r.rounds),
                "prompt_tokens": sum(r.prompt_tokens for r in per),
                "completion_tokens": sum(r.completion_tokens for r in per)}
        return pd.concat([real, *kept], ignore_index=True), info
    raise ValueError(f"unknown arm {arm!r}; one of {', '.join(ARMS)}")


# Training and judging ----------------------------------------------------------------------


def train(windows: pd.DataFrame, val: pd.DataFrame, classes: Sequence[str], out: Path, cfg: ScarceConfig,
          seed: int) -> Any:
    """One detector with the shipped recipe (one member): calibrated on the real `val`
    windows, never on synthetic ones."""
    from dataclasses import replace

    from contracts.window import WindowSpec
    from inference.train import RECIPE, Windows, train_windows
    from llm_agents.window_frames import window_tensors

    x, m, y, prov = window_tensors(windows, cfg.k)
    xv, mv, yv, _ = window_tensors(val, cfg.k)
    return train_windows(x, m, y.tolist(), class_names=list(classes), seed=seed, epochs=cfg.epochs,
                         val=Windows(xv, mv, yv.tolist()),
                         window=WindowSpec(k=cfg.k, seconds=cfg.seconds, key=cfg.views[0], views=list(cfg.views)),
                         progress=False, out_dir=out, config=replace(RECIPE, members=1, run_variants=1),
                         source={"dataset": "scarce experiment", "provenance":
                                 {str(p): int(n) for p, n in zip(*np.unique(prov, return_counts=True))}})


def judge(bundle: Any, groups: Sequence[str], out: Path) -> list[dict[str, Any]]:
    """Open-world figures and known-class macro-F1 of one bundle, per manifest group."""
    from evaluation.experiment_openworld import figures
    from evaluation.openworld import evaluate_open_world
    from inference.scores import confusion_matrix, macro_f1

    rows = []
    index = {c: i for i, c in enumerate(bundle.class_names)}
    for name in groups:
        windows = out / f"{name}.windows.parquet"
        rep = evaluate_open_world(MANIFESTS[name], bundle, out_dir=out, plots=False, progress=False,
                                  windows_out=windows)
        pooled: dict[str, list[float]] = {}
        for f in figures(rep):
            key = FIGURES.get((f["kind"], f["verdict"]))
            if key:
                got = pooled.setdefault(key, [0.0, 0.0])
                got[0] += f["value"] * f["windows"]
                got[1] += f["windows"]
        rows += [{"group": name, "figure": k, "value": v / n, "windows": int(n)} for k, (v, n) in pooled.items() if n]
        if windows.is_file():
            j = pd.read_parquet(windows, columns=["label", "predicted", "scoped"])
            j = j[j["scoped"] & j["label"].isin(index)]
            if len(j):
                cm = confusion_matrix(j["label"].map(index).to_numpy(), j["predicted"].map(index).to_numpy(), len(index))
                rows.append({"group": name, "figure": "macro_f1", "value": macro_f1(cm), "windows": len(j)})
            windows.unlink()
    return rows


def run(train_path: Path, out_dir: Path, cfg: ScarceConfig, *, client: Any = None, model: str = "",
        say: Callable[[str], None] = lambda m: None) -> ScarceResult:
    """Every (repeat, arm): draw, augment, train, judge. Writes the outputs into `out_dir`."""
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    pool = training_pool(train_path, cfg)
    classes = sorted(set(pool["label"]) - {"benign"})
    classes = ["benign", *classes]
    attack = classes[1:]
    rows, details = [], []
    for rep in range(cfg.repeats):
        seed = cfg.seed + 101 * rep
        drawn, unused = draw(pool, cfg.per_class, np.random.default_rng(seed))
        real, gate = split_gate(drawn, cfg.gate_per_class, np.random.default_rng(seed + 7))
        for arm in cfg.arms:
            t = time.perf_counter()
            windows, info = augment(arm, real, gate, unused, attack, cfg, seed, client)
            bundle = train(windows, gate, classes, out_dir / "bundles" / f"r{rep}-{arm}", cfg, seed)
            judged = judge(bundle, cfg.groups, out_dir / "bundles" / f"r{rep}-{arm}")
            rows += [{"repeat": rep, "arm": arm, **r} for r in judged]
            n_syn = int((windows.drop_duplicates("window_id")["provenance"] != "real").sum())
            details.append({"repeat": rep, "arm": arm, "real_windows": int(drawn["window_id"].nunique()),
                            "synthetic_windows": n_syn, "seconds": round(time.perf_counter() - t, 1), **info})
            known = [r["value"] for r in judged if r["figure"] == "known_ok" and r["group"] == cfg.groups[0]]
            # Written as it goes: a run stopped part way keeps every finished arm.
            pd.DataFrame(rows).to_csv(out_dir / "scarce_rows.csv", index=False)
            (out_dir / "scarce_runs.json").write_text(json.dumps(details, indent=1, default=str))
            figure = f", {cfg.groups[0]} known right {known[0]:.3f}" if known else ""
            say(f"repeat {rep + 1}/{cfg.repeats} {arm}: {n_syn} synthetic windows{figure} "
                f"({time.perf_counter() - t:.0f} s)")
    df = pd.DataFrame(rows)
    res = ScarceResult(rows=df, table=summarise(df))
    res.meta = {"config": asdict(cfg), "train": str(train_path), "classes": classes, "model": model,
                "pool_windows": pool.drop_duplicates("window_id")["label"].value_counts().to_dict(),
                "runs": details, "seconds": round(time.perf_counter() - t0, 1)}
    res.paths = write_outputs(res, out_dir)
    return res
