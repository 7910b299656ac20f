"""The open-world part of the promotion gate: a challenger must not get worse out there.

Macro-F1 on lab windows says nothing about traffic the lab never made: a model retrained
on one tool's labelled scans can score better on the lab and defer nearly everything
else. So both models are also judged, window by window (inference.openworld_verdicts),
on a **foreign reference**: captures with an expectation each,

    benign captures      the nDPI train half (foreign benign the models may have learned
                         from, never the test half), the site baseline when there is one
    labelled captures    the lab's own evaluation capture, and the first lab capture of
                         held-out conditions (`data/openworld/lab-heldout.toml`: tools,
                         settings and a link training never used, and attack kinds no
                         model was trained on): benign windows, windows of each known
                         class, which must keep being hit, and windows of kinds neither
                         model knows, which must not go to benign

and the challenger is refused when, beyond a tolerance, it raises benign false alerts, it
raises benign deferrals, it loses hits (confident and right) on a known class or on the
held-out conditions' known windows (pooled), names more of those wrong, or it calls
more windows of kinds neither model knows confidently benign (and those windows are evidence,
not noise: the sign test of evaluation.holdout_gate.loss_is_real on the windows that
flipped).

    >>> ref = default_reference(site_baseline=data_dir / "baseline")
    >>> champ, chall = reference_figures(champion, ref), reference_figures(challenger, ref)
    >>> ok, reason, detail = open_world_gate(champ, chall, Tolerance())
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from inference.openworld_verdicts import judge_windows

SITE_PREFIX = "site:"   # reference captures from the site baseline (default_reference)
REPO = Path(__file__).resolve().parents[1]
HELDOUT_MANIFEST = REPO / "data" / "openworld" / "lab-heldout.toml"


@dataclass(frozen=True)
class RefCapture:
    """One capture of the reference: flows, and what its windows should be."""

    name: str
    flows: Any
    expect: str = "benign"      # "benign", a class, or "labels" (each window's own label)
    # For "labels": how the open-world judge reads a lab capture (who carries each attack,
    # when, who was under attack; inference.openworld_verdicts.judge_windows). Without it
    # every window is judged by its own label, collateral ones included.
    judging: dict[str, Any] | None = None
    # A capture of held-out conditions: its known-class windows count towards one pooled
    # hit rate (`Figures.heldout_hits`), not the per-class hits.
    heldout: bool = False


@dataclass(frozen=True)
class Tolerance:
    """How much worse than the champion a challenger may be on the reference (shares)."""

    false_alerts: float = 0.005   # +0.5 points of benign windows
    deferrals: float = 0.02       # +2 points of benign windows
    known_hits: float = 0.02      # -2 points of a known class's windows
    unknown_missed: float = 0.01  # +1 point of the windows of kinds neither model knows
    # Known-class windows of held-out conditions, all classes pooled: -3 points of hits
    # (confident and right; None: reported only). A retrain's challenger hits 0.6 point fewer
    # than the shipped bundle with no new data, 4.2 more with one scan tool labelled
    # (llm_agents.retrain.validation_split; before it, 4-8 points fewer, every time).
    heldout_hits: float | None = 0.03
    # ... and +2 points of them confidently benign or named another class. A site baseline
    # is held to this one only (Retrainer passes heldout_hits=None): its tighter energy
    # threshold defers 5-8 points more of them to the agent, and names under a point more of
    # them wrong (+0.8 by file, +0.3 by time).
    heldout_wrong: float | None = 0.02


@dataclass
class Figures:
    """One model on the reference: benign window shares, and hit rate per known class."""

    version: str
    benign_windows: int = 0
    false_alerts: float = 0.0
    deferrals: float = 0.0
    hits: dict[str, float] = field(default_factory=dict)
    support: dict[str, int] = field(default_factory=dict)
    # Kinds this model was not trained on: windows per kind, and the ids of those it called
    # benign with confidence (window ids come from the flows: the same for every model).
    unknown: dict[str, int] = field(default_factory=dict)
    unknown_missed: dict[str, list[str]] = field(default_factory=dict)
    # Known-class windows of the held-out captures: how many, the share hit (confident and
    # right), and that share per class (reported, not gated one by one).
    heldout_known: int = 0
    heldout_hits: float = 0.0
    heldout_wrong: float = 0.0     # the share missed (confidently benign) or of a wrong class
    heldout_by_class: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reference_figures(bundle: Any, reference: Iterable[RefCapture]) -> Figures:
    """Score every reference capture with `bundle` (the edge's code) and count verdicts."""
    from streams.detector import DetectorConfig
    from streams.score import detector_for, score_frame

    model = detector_for(bundle)  # the shape rules a worker would apply (EDGELOOP_SHAPE_RULES)
    cfg = DetectorConfig(seconds=bundle.meta.window.seconds, key=bundle.meta.window.key)
    judged = []
    for cap in reference:
        w = score_frame(cap.flows, bundle, cfg, model=model).windows
        if len(w):
            scope = "labels" if cap.expect == "labels" else "all"
            judged.append(judge_windows(w, expect=None if scope == "labels" else cap.expect, scope=scope,
                                        class_names=bundle.class_names, benign=bundle.meta.benign_class,
                                        **(cap.judging or {})).assign(_heldout=cap.heldout))
    fig = Figures(bundle.version)
    if not judged:
        return fig
    import pandas as pd

    j = pd.concat(judged, ignore_index=True)
    ben = j[j["kind"] == "benign"]["verdict"]
    fig.benign_windows = int(len(ben))
    if len(ben):
        fig.false_alerts = float((ben == "false_alert").mean())
        fig.deferrals = float((ben == "deferred").mean())
    held = j[(j["kind"] == "known") & j["_heldout"]]
    fig.heldout_known = int(len(held))
    if len(held):
        fig.heldout_hits = float((held["verdict"] == "ok").mean())
        fig.heldout_wrong = float(held["verdict"].isin(("miss", "wrong_class")).mean())
        fig.heldout_by_class = {str(c): float((g["verdict"] == "ok").mean()) for c, g in held.groupby("expected")}
    known = j[(j["kind"] == "known") & ~j["_heldout"]]
    for label, g in known.groupby("expected"):
        fig.hits[str(label)] = float((g["verdict"] == "ok").mean())
        fig.support[str(label)] = int(len(g))
    unknown = j[j["kind"] == "unknown"]
    for label, g in unknown.groupby("expected"):
        fig.unknown[str(label)] = int(len(g))
        fig.unknown_missed[str(label)] = sorted(g.loc[g["verdict"] == "miss", "window_id"].astype(str))
    return fig


def unknown_change(champion: Figures, challenger: Figures) -> dict[str, Any]:
    """Windows of kinds neither model was trained on (each model's own `unknown`): the
    missed share of each, and the windows that flipped to or from benign."""
    kinds = sorted(set(champion.unknown) & set(challenger.unknown))
    total = sum(challenger.unknown[k] for k in kinds)
    a = {(k, w) for k in kinds for w in champion.unknown_missed.get(k, [])}
    b = {(k, w) for k in kinds for w in challenger.unknown_missed.get(k, [])}
    return {"kinds": kinds, "windows": total,
            "champion": len(a) / total if total else 0.0, "challenger": len(b) / total if total else 0.0,
            "lost": len(b - a), "gained": len(a - b)}


def open_world_gate(champion: Figures, challenger: Figures, tol: Tolerance = Tolerance()
                    ) -> tuple[bool, str, dict[str, Any]]:
    """(pass?, reason, what moved). Reasons: ok, open_world_false_alerts,
    open_world_deferrals, open_world_hits:<class>, open_world_heldout_hits,
    open_world_heldout_wrong, open_world_unknown_missed."""
    from evaluation.holdout_gate import loss_is_real

    unk = unknown_change(champion, challenger)
    both_held = bool(champion.heldout_known and challenger.heldout_known)
    detail = {"false_alerts": challenger.false_alerts - champion.false_alerts,
              "deferrals": challenger.deferrals - champion.deferrals,
              "hits": {c: challenger.hits.get(c, 0.0) - h for c, h in champion.hits.items()},
              "heldout_hits": (challenger.heldout_hits - champion.heldout_hits if both_held else 0.0),
              "heldout_wrong": (challenger.heldout_wrong - champion.heldout_wrong if both_held else 0.0),
              "unknown_missed": unk["challenger"] - unk["champion"],
              "unknown_flips": {"lost": unk["lost"], "gained": unk["gained"], "windows": unk["windows"]}}
    if detail["false_alerts"] > tol.false_alerts + 1e-12:
        return False, "open_world_false_alerts", detail
    if detail["deferrals"] > tol.deferrals + 1e-12:
        return False, "open_world_deferrals", detail
    for c, d in sorted(detail["hits"].items(), key=lambda kv: kv[1]):
        if d < -tol.known_hits - 1e-12:
            return False, f"open_world_hits:{c}", detail
    if tol.heldout_hits is not None and detail["heldout_hits"] < -tol.heldout_hits - 1e-12:
        return False, "open_world_heldout_hits", detail
    if tol.heldout_wrong is not None and detail["heldout_wrong"] > tol.heldout_wrong + 1e-12:
        return False, "open_world_heldout_wrong", detail
    if detail["unknown_missed"] > tol.unknown_missed + 1e-12 and loss_is_real(unk["lost"], unk["gained"]):
        return False, "open_world_unknown_missed", detail
    return True, "ok", detail


def default_reference(site_baseline: str | Path | None = None, foreign: bool = True,
                      lab: bool = True, heldout: str | Path | None = HELDOUT_MANIFEST) -> list[RefCapture]:
    """The nDPI train half (one capture per file), the lab evaluation capture (labelled),
    the captures of the `heldout` open-world manifest (labelled; None: none), and the site
    baseline's flows when `site_baseline` holds one (evaluation.baseline)."""
    out: list[RefCapture] = []
    if foreign:
        from inference.datasets.ndpi import load_ndpi

        nd = load_ndpi("train", purpose="train")
        out += [RefCapture(f"ndpi:{f}", g.drop(columns=["file", "split"]), "benign")
                for f, g in nd.groupby("file", sort=True)]
    if lab:
        from inference.datasets.training import lab_eval_flows, lab_eval_judging

        flows = lab_eval_flows()
        out.append(RefCapture("lab-eval", flows, "labels", lab_eval_judging(flows)))
    if heldout is not None:
        out += manifest_reference(heldout)
    if site_baseline is not None:
        from evaluation.baseline import load_baseline

        out += [RefCapture(f"{SITE_PREFIX}{c}", g.drop(columns=["capture"]), "benign")
                for c, g in load_baseline(site_baseline, part="reference").groupby("capture", sort=True)]
    return out


def manifest_reference(path: str | Path) -> list[RefCapture]:
    """The captures of an open-world manifest of labelled captures (scope "labels") as
    reference captures, judged as `edgeloop evaluate --open-world` judges them. A capture
    that does not load raises: a gate never judges on less than it was told to."""
    from contracts.errors import SourceError
    from inference.openworld_captures import expand
    from inference.openworld_manifest import load_manifest

    out = []
    for entry in load_manifest(path).entries:
        if entry.scope != "labels":
            raise SourceError(f"{path}: capture {entry.name}: scope {entry.scope} is not a gate reference "
                              "(held-out conditions are labelled captures)")
        for cap in expand(entry):
            got = cap.load()
            if got.flows is None:
                raise SourceError(f"{path}: capture {cap.name}: {got.reason}: {got.detail}")
            judging = {"principals": got.principals, "attacked": got.attacked, "periods": got.periods}
            out.append(RefCapture(cap.name, got.flows, "labels", judging, heldout=True))
    return out


def summary_line(f: Figures) -> str:
    hits = ", ".join(f"{c} {h:.1%}" for c, h in sorted(f.hits.items()))
    return (f"{f.version}: benign {f.benign_windows} windows, false alerts {f.false_alerts:.2%}, "
            f"deferred {f.deferrals:.2%}; hits {hits or '-'}")
