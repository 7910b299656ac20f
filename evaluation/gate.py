"""The open-world part of the promotion gate: a challenger must not get worse out there.

Macro-F1 on lab windows says nothing about traffic the lab never made: a model retrained
on one tool's labelled scans can score better on the lab and defer nearly everything
else. So both models are also judged, window by window (inference.openworld_verdicts),
on a **foreign reference**: captures with an expectation each,

    benign captures      the nDPI train half (foreign benign the models may have learned
                         from, never the test half), the site baseline when there is one
    labelled captures    the lab's own evaluation capture: benign windows, and windows of
                         each known class, which must keep being hit

and the challenger is refused when, beyond a tolerance, it raises benign false alerts, it
raises benign deferrals, or it loses hits (confident and right) on a known class.

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


@dataclass(frozen=True)
class Tolerance:
    """How much worse than the champion a challenger may be on the reference (shares)."""

    false_alerts: float = 0.005   # +0.5 points of benign windows
    deferrals: float = 0.02       # +2 points of benign windows
    known_hits: float = 0.02      # -2 points of a known class's windows


@dataclass
class Figures:
    """One model on the reference: benign window shares, and hit rate per known class."""

    version: str
    benign_windows: int = 0
    false_alerts: float = 0.0
    deferrals: float = 0.0
    hits: dict[str, float] = field(default_factory=dict)
    support: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reference_figures(bundle: Any, reference: Iterable[RefCapture]) -> Figures:
    """Score every reference capture with `bundle` (the edge's code) and count verdicts."""
    from inference.onnx_detector import OnnxDetector
    from streams.detector import DetectorConfig
    from streams.score import score_frame

    model = OnnxDetector(bundle)
    cfg = DetectorConfig(seconds=bundle.meta.window.seconds, key=bundle.meta.window.key)
    judged = []
    for cap in reference:
        w = score_frame(cap.flows, bundle, cfg, model=model).windows
        if len(w):
            scope = "labels" if cap.expect == "labels" else "all"
            judged.append(judge_windows(w, expect=None if scope == "labels" else cap.expect, scope=scope,
                                        class_names=bundle.class_names, benign=bundle.meta.benign_class,
                                        **(cap.judging or {})))
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
    known = j[j["kind"] == "known"]
    for label, g in known.groupby("expected"):
        fig.hits[str(label)] = float((g["verdict"] == "ok").mean())
        fig.support[str(label)] = int(len(g))
    return fig


def open_world_gate(champion: Figures, challenger: Figures, tol: Tolerance = Tolerance()
                    ) -> tuple[bool, str, dict[str, Any]]:
    """(pass?, reason, what moved). Reasons: ok, open_world_false_alerts,
    open_world_deferrals, open_world_hits:<class>."""
    detail = {"false_alerts": challenger.false_alerts - champion.false_alerts,
              "deferrals": challenger.deferrals - champion.deferrals,
              "hits": {c: challenger.hits.get(c, 0.0) - h for c, h in champion.hits.items()}}
    if detail["false_alerts"] > tol.false_alerts + 1e-12:
        return False, "open_world_false_alerts", detail
    if detail["deferrals"] > tol.deferrals + 1e-12:
        return False, "open_world_deferrals", detail
    for c, d in sorted(detail["hits"].items(), key=lambda kv: kv[1]):
        if d < -tol.known_hits - 1e-12:
            return False, f"open_world_hits:{c}", detail
    return True, "ok", detail


def default_reference(site_baseline: str | Path | None = None, foreign: bool = True,
                      lab: bool = True) -> list[RefCapture]:
    """The nDPI train half (one capture per file), the lab evaluation capture (labelled),
    and the site baseline's flows when `site_baseline` holds one (evaluation.baseline)."""
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
    if site_baseline is not None:
        from evaluation.baseline import load_baseline

        out += [RefCapture(f"{SITE_PREFIX}{c}", g.drop(columns=["capture"]), "benign")
                for c, g in load_baseline(site_baseline, part="reference").groupby("capture", sort=True)]
    return out


def summary_line(f: Figures) -> str:
    hits = ", ".join(f"{c} {h:.1%}" for c, h in sorted(f.hits.items()))
    return (f"{f.version}: benign {f.benign_windows} windows, false alerts {f.false_alerts:.2%}, "
            f"deferred {f.deferrals:.2%}; hits {hits or '-'}")
