"""Window and capture verdicts: did the detector do the right thing on traffic it never saw?

Every judged window has an expectation of one of three kinds, and gets one verdict
("confident" means the detector did not flag the window `uncertain`):

    benign   ok (confident benign) | false_alert (confident, not benign) | deferred (uncertain)
    known    a class the bundle has: ok (confident, that class) | deferred (uncertain)
             | miss (confidently benign) | wrong_class (confident, another attack class)
    unknown  a kind the bundle was not trained on (`attack`, or a label it lacks):
             caught_uncertain (uncertain) | caught_alert (confident, not benign)
             | miss (confidently benign)

A capture gets one verdict per expectation it holds (a labels-scope capture can hold
several), from its judged windows:

    benign   false_alert if any window is; else deferred if any window is; else ok
    known    ok if any window is ok; else the most common verdict (a tie goes to the
             worse: miss, then wrong_class, then deferred)
    unknown  caught_alert if any window is; else caught_uncertain if any is; else miss

    >>> judged = judge_windows(windows, expect="attack", scope="top_key",
    ...                        class_names=bundle.class_names, benign="benign")
    >>> units = capture_units(judged)     # per view and "all": one verdict per expectation
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

KINDS = ("benign", "known", "unknown")
VERDICTS: dict[str, tuple[str, ...]] = {
    "benign": ("ok", "false_alert", "deferred"),
    "known": ("ok", "deferred", "miss", "wrong_class"),
    "unknown": ("caught_uncertain", "caught_alert", "miss"),
}
ALL_VIEWS = "all"  # the figures over every view together
ATTACK_LOOKBACK_MS = 10_000  # a destination under attack this long before a window opened
_WORST_FIRST = ("miss", "wrong_class", "deferred", "ok")


def expectation(expect: str, class_names: Sequence[str], benign: str = "benign") -> tuple[str, str]:
    """(kind, label) for an `expect` value or a window label."""
    if expect in (benign, "benign"):
        return "benign", benign
    if expect in class_names:
        return "known", expect
    return "unknown", expect


def window_verdicts(kind: np.ndarray, expected: np.ndarray, predicted: np.ndarray,
                    uncertain: np.ndarray, benign: str = "benign") -> np.ndarray:
    """The verdict of each window (object array), vectorised over arrays of equal length."""
    kind, expected = np.asarray(kind, dtype=object), np.asarray(expected, dtype=object)
    predicted = np.asarray(predicted, dtype=object)
    unsure = np.asarray(uncertain, dtype=bool)
    called_benign = predicted == benign
    out = np.full(len(kind), None, dtype=object)
    b, k, u = kind == "benign", kind == "known", kind == "unknown"
    out[b] = np.where(unsure[b], "deferred", np.where(called_benign[b], "ok", "false_alert"))
    out[k] = np.where(unsure[k], "deferred", np.where(
        predicted[k] == expected[k], "ok", np.where(called_benign[k], "miss", "wrong_class")))
    out[u] = np.where(unsure[u], "caught_uncertain", np.where(called_benign[u], "miss", "caught_alert"))
    return out


def top_keys(windows: Any) -> dict[str, str]:
    """Per view, the key with the most flows (ties: the smallest key)."""
    flows = windows.groupby(["view", "key"], sort=True)["n_flows"].sum().reset_index()
    flows = flows.sort_values(["view", "n_flows", "key"], ascending=[True, False, True], kind="stable")
    return {str(v): str(g["key"].iloc[0]) for v, g in flows.groupby("view", sort=True)}


def judge_windows(windows: Any, *, expect: str | None, scope: str, class_names: Sequence[str],
                  benign: str = "benign", principals: dict[str, set[tuple[str, str]]] | None = None,
                  attacked: dict[str, Any] | None = None,
                  periods: dict[tuple[str, str, str], list[tuple[float, float]]] | None = None) -> Any:
    """The windows with `view`, `scoped`, `collateral`, `kind`, `expected` and `verdict`
    columns added.

    A missing `view` column counts as all "src". Windows outside the scope keep
    verdict None. With scope "labels" each window's `label` is its expectation; with
    `principals` (per attack label, the (view, key) pairs that carry it: the attacker's
    source windows, or the victim's destination windows of a spoofed or reflected attack)
    an attack window keyed by anything else (a spoofed source's one-flow window, a
    victim's window mixing the attack into its clients' traffic) is `collateral`: counted,
    not judged, since no key in it names the attack. With `periods` (per (label, view, key),
    when its runs went on: inference.datasets.lab.span_periods) a principal carries the
    label only in windows that overlap one of its runs: the victim of a spoofed ICMP flood
    is not a principal of a later ping flood from one source, whose key is the source.
    With `attacked` (per destination, the start times of attack flows to it), a benign
    window of the destination view whose key was receiving an attack while it was open
    (from ATTACK_LOOKBACK_MS before its first flow to its last) is collateral too: its flows
    are benign, but its host was under attack, and the host history beside them says so.
    """
    w = windows.copy()
    if "view" not in w.columns:
        w["view"] = "src"
    w["view"] = w["view"].fillna("src").astype(str)
    if scope == "top_key" and len(w):
        top = top_keys(w)
        w["scoped"] = w["key"].astype(str).to_numpy() == w["view"].map(top).to_numpy()
    else:
        w["scoped"] = True
    if scope == "labels":
        labels = w["label"].fillna(benign).astype(str) if "label" in w.columns else [benign] * len(w)
        pairs = [expectation(x, class_names, benign) for x in labels]
    else:
        pairs = [expectation(str(expect), class_names, benign)] * len(w)
    w["kind"] = [k for k, _ in pairs]
    w["expected"] = [e for _, e in pairs]
    w["collateral"] = False
    if scope == "labels" and principals is not None and len(w):
        attack = w["kind"].to_numpy() != "benign"
        carried = np.array([(v, str(k)) in principals.get(e, ()) and _during(periods, (e, v, str(k)), lo, hi)
                            for v, k, e, lo, hi in zip(w["view"], w["key"], w["expected"], w["first_seen_ms"],
                                                       w["last_seen_ms"])], dtype=bool)
        under = np.zeros(len(w), dtype=bool)
        if attacked:
            for i, (v, k, kind, lo, hi) in enumerate(zip(w["view"], w["key"], w["kind"], w["first_seen_ms"],
                                                          w["last_seen_ms"])):
                ts = attacked.get(str(k)) if v == "dst" and kind == "benign" else None
                if ts is not None:
                    j = np.searchsorted(ts, lo - ATTACK_LOOKBACK_MS)
                    under[i] = j < len(ts) and ts[j] <= hi
        w["collateral"] = (attack & ~carried) | under
        w.loc[w["collateral"].to_numpy(), "scoped"] = False
    scoped = w["scoped"].to_numpy(dtype=bool)
    w.loc[~scoped, ["kind", "expected"]] = None
    verdict = window_verdicts(w["kind"].to_numpy(), w["expected"].to_numpy(),
                              w["predicted"].to_numpy(), w["uncertain"].to_numpy(), benign)
    verdict[~scoped] = None
    w["verdict"] = verdict
    return w


def _during(periods: dict[tuple[str, str, str], list[tuple[float, float]]] | None,
            principal: tuple[str, str, str], lo: float, hi: float) -> bool:
    """Whether [lo, hi] overlaps a run of the principal (always, without periods)."""
    if periods is None:
        return True
    return any(a <= hi and lo <= b for a, b in periods.get(principal, ()))


def capture_verdict(kind: str, verdicts: Sequence[str]) -> str | None:
    """One capture-level verdict from the verdicts of its windows of one expectation."""
    if not len(verdicts):
        return None
    seen = Counter(verdicts)
    if kind == "benign":
        return "false_alert" if seen["false_alert"] else "deferred" if seen["deferred"] else "ok"
    if kind == "unknown":
        return "caught_alert" if seen["caught_alert"] else "caught_uncertain" if seen["caught_uncertain"] else "miss"
    if seen["ok"]:
        return "ok"
    top = max(seen.values())
    return next(v for v in _WORST_FIRST if seen.get(v) == top)


def capture_units(judged: Any) -> dict[str, list[dict[str, Any]]]:
    """Per view (and "all" views together): one unit per expectation in the capture.

    A unit: kind, label, window verdict counts, the capture verdict, and (when the
    windows carry a `fanout` column) whether the fan-out heuristic flagged any of them.
    """
    scoped = judged[judged["scoped"].astype(bool)]
    views = sorted(scoped["view"].unique().tolist())
    out: dict[str, list[dict[str, Any]]] = {}
    for view in [*views, ALL_VIEWS]:
        part = scoped if view == ALL_VIEWS else scoped[scoped["view"] == view]
        units = []
        for (kind, label), g in part.groupby(["kind", "expected"], sort=True):
            verdicts = g["verdict"].tolist()
            units.append({"kind": kind, "label": label,
                          "windows": {v: int(n) for v, n in sorted(Counter(verdicts).items())},
                          "verdict": capture_verdict(kind, verdicts),
                          "fanout_windows": int(g["fanout"].sum()) if "fanout" in g.columns else None,
                          "fanout_flagged": bool(g["fanout"].any()) if "fanout" in g.columns else None})
        out[view] = units
    return out


EXAMPLES_PER_VERDICT = 5
_GOOD = ("ok", "caught_uncertain", "caught_alert")


def verdict_examples(judged: Any, per_verdict: int = EXAMPLES_PER_VERDICT) -> list[dict[str, Any]]:
    """The first few judged windows of each verdict that is not the right outcome, per
    expectation (kind and label): what an operator opens first when a target is missed.
    A window gives its id, key, view, flows, what it was expected to be and what the
    detector said."""
    scoped = judged[judged["scoped"].astype(bool) & ~judged["verdict"].isin(_GOOD)]
    out: list[dict[str, Any]] = []
    for (kind, label, verdict), g in scoped.groupby(["kind", "expected", "verdict"], sort=True):
        for r in g.sort_values("first_seen_ms", kind="stable").head(per_verdict).itertuples(index=False):
            out.append({"kind": kind, "label": label, "verdict": verdict, "window_id": str(r.window_id),
                        "key": str(r.key), "view": str(r.view), "flows": int(r.n_flows),
                        "first_seen_ms": int(r.first_seen_ms), "predicted": str(r.predicted),
                        "confidence": round(float(r.confidence), 4), "uncertain": bool(r.uncertain)})
    return out
