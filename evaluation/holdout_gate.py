"""The held-out part of the promotion gate: is the challenger better on windows of truth?

Both models are scored on the same held-out windows (labelled by a person, a dataset or the
site baseline, never by an LLM: llm_agents.store.TRUTH_SOURCES). The challenger is promoted
only if its macro-F1 is higher, the paired bootstrap interval of that gain lies above 0,
and no known class loses more than `max_recall_drop` of recall, when the windows say the
loss is real (`loss_is_real`: a one-sided sign test on `recall_changes`, the windows of that
class one model got right and the other wrong; two windows of a 71-window class flipping in
a retrain is 2.8 points and no evidence):

    >>> champ, chall = score_figures(old, x, m, truth), score_figures(new, x, m, truth)
    >>> sig = paired_gain(truth, predict(old, x, m), predict(new, x, m))
    >>> flips = recall_changes(truth, predict(old, x, m), predict(new, x, m))
    >>> promote, reason, recall_delta = gate(champ, chall, significance=sig, flips=flips)

The open-world part (must not get worse on foreign captures) is evaluation.gate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from inference.bundle import Bundle


@dataclass
class Figures:
    """One model on the held-out windows."""

    version: str
    classes: list[str]
    windows: int
    macro_f1: float
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]



def predict(bundle: Bundle, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The class name `bundle` predicts for each window."""
    from streams.score import detector_for

    det = detector_for(bundle)  # the shape rules a worker would apply
    return np.asarray(det.class_names, dtype=object)[det.score(x, mask).predicted] if len(x) else np.array([], object)


def score_figures(bundle: Bundle, x: np.ndarray, mask: np.ndarray, truth: np.ndarray,
                  pred: np.ndarray | None = None) -> Figures:
    """Macro-F1 and per-class recall/F1 over the classes present in `truth`."""
    if pred is None:
        pred = predict(bundle, x, mask) if len(x) else truth
    recall, f1, support = {}, {}, {}
    for c in sorted(set(truth.tolist())):
        t, p = truth == c, pred == c
        tp = float((t & p).sum())
        recall[c] = tp / t.sum()
        precision = tp / p.sum() if p.sum() else 0.0
        f1[c] = 2 * precision * recall[c] / (precision + recall[c]) if tp else 0.0
        support[c] = int(t.sum())
    macro = float(np.mean(list(f1.values()))) if f1 else 0.0
    return Figures(bundle.version, list(bundle.class_names), len(truth), macro, recall, f1, support)


def paired_gain(truth: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, resamples: int = 2000,
                level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """The challenger's macro-F1 gain over the champion on the same windows, with a paired
    bootstrap interval: both models are scored on each resample of the windows, so what the
    interval measures is the difference, not each model's own noise.

    Macro-F1 is over the classes present in `truth` (as `score_figures`); a class a resample
    happens to leave out does not count in that resample."""
    truth, champion, challenger = (np.asarray(a, dtype=object) for a in (truth, champion, challenger))
    n = len(truth)
    classes = sorted(set(truth.tolist()))
    t = np.stack([truth == c for c in classes], axis=1).astype(np.float64)  # [n, C]

    def macro(weights: np.ndarray, pred: np.ndarray) -> np.ndarray:  # weights [B, n] -> [B]
        p = np.stack([pred == c for c in classes], axis=1).astype(np.float64)
        tp, pos, real = weights @ (t * p), weights @ p, weights @ t
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(tp > 0, 2 * tp / (pos + real), 0.0)
        f1[real == 0] = np.nan
        return np.nanmean(f1, axis=1)

    ones = np.ones((1, n))
    point = float(macro(ones, challenger)[0] - macro(ones, champion)[0])
    rng, gains = np.random.default_rng(seed), []
    for start in range(0, resamples, 250):  # 250 resamples at a time: [250, n] weights
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=min(250, resamples - start)).astype(np.float64)
        gains.append(macro(w, challenger) - macro(w, champion))
    g = np.concatenate(gains)
    lo, hi = np.quantile(g, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"gain": round(point, 5), "low": round(float(lo), 5), "high": round(float(hi), 5),
            "level": level, "resamples": resamples, "windows": n}


def recall_changes(truth: np.ndarray, champion: np.ndarray, challenger: np.ndarray) -> dict[str, tuple[int, int]]:
    """Per class of `truth`: (lost, gained), its windows the champion got right and the
    challenger wrong, and the other way round."""
    truth, champion, challenger = (np.asarray(a, dtype=object) for a in (truth, champion, challenger))
    out = {}
    for c in sorted(set(truth.tolist())):
        t = truth == c
        a, b = champion[t] == c, challenger[t] == c
        out[c] = (int((a & ~b).sum()), int((~a & b).sum()))
    return out


def loss_is_real(lost: int, gained: int, alpha: float = 0.05) -> bool:
    """Whether `lost` windows against `gained` (the class's discordant windows) are more
    than a coin would give: a one-sided exact sign test (scipy's binomtest, p = 1/2)."""
    if lost == 0:
        return False
    from scipy.stats import binomtest

    return bool(binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue < alpha)


def gate(champion: Figures, challenger: Figures, max_recall_drop: float = 0.01,
         min_gain: float = 0.0, significance: Mapping[str, float] | None = None,
         need_gain: bool = True, flips: Mapping[str, tuple[int, int]] | None = None,
         ) -> tuple[bool, str, dict[str, float]]:
    """(promote?, reason, recall change per class). Reasons: promoted, no_gain,
    recall_drop:<c>, not_significant (the gain's paired interval reaches 0 or below),
    significantly_worse.

    `need_gain=False` (a site baseline, whose gain is on the site's own traffic and is
    judged there, llm_agents.retrain) asks only that the challenger be no worse on the
    held-out windows: no class loses recall beyond `max_recall_drop`, and the paired
    interval of its macro-F1 change does not lie wholly below 0.

    With `flips` (`recall_changes` of the same windows), a drop beyond `max_recall_drop` is
    refused only when `loss_is_real`; without, every such drop is."""
    delta = {c: challenger.recall.get(c, 0.0) - champion.recall[c] for c in champion.recall}
    for c in sorted(delta, key=delta.get):  # type: ignore[arg-type]
        if c in champion.classes and delta[c] < -max_recall_drop - 1e-12:
            if flips is None or c not in flips or loss_is_real(*flips[c]):
                return False, f"recall_drop:{c}", delta
    if not need_gain:
        worse = (significance["high"] < 0 if significance is not None
                 else challenger.macro_f1 < champion.macro_f1 - max_recall_drop)
        return (False, "significantly_worse", delta) if worse else (True, "promoted", delta)
    if not challenger.macro_f1 > champion.macro_f1 + min_gain:
        return False, "no_gain", delta
    if significance is not None and not significance["low"] > 0:
        return False, "not_significant", delta
    return True, "promoted", delta
