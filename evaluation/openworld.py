"""Open-world evaluation: judge a bundle on captures it did not learn from, by window verdicts.

The lab's own evaluation capture comes from the same generator as training, so its
macro-F1 says little about other networks. Here a manifest (inference.openworld_manifest)
lists foreign captures and what each should be (benign, a known class, or an attack of a
kind the model never saw). Each capture is scored by the edge's own engine
(`streams.score.score_frame`, every view the bundle has), each judged window gets a
verdict (inference.openworld_verdicts), and the report sums them per group, by window and
by capture, per view and over all views, with a fan-out rule beside the model
(inference.openworld_heuristic) and the targets:

    benign: <= 1% false alerts and <= 5% deferred;  known classes: >= 95% ok;
    unknown kinds: <= 1% missed                     (by window, over all views)

    >>> report = evaluate_open_world("data/openworld/ndpi-test.toml", Bundle.load(path),
    ...                              out_dir="reports")
    >>> report["groups"]["ndpi-test benign"]["views"]["all"]["benign"]["windows"]["rates"]

    $ edgeloop evaluate --open-world data/openworld/ndpi-test.toml default

Captures that cannot be loaded or metered are counted per reason, never skipped silently.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from inference.openworld_captures import Capture, expand
from inference.openworld_heuristic import fanout_flags, flag_windows, flagged_times
from inference.openworld_manifest import load_manifest
from inference.openworld_meter import progress_steps
from inference.openworld_report import REPORT_SCHEMA, build_report, write_report
from inference.openworld_verdicts import capture_units, judge_windows, verdict_examples

__all__ = ["REPORT_SCHEMA", "evaluate_open_world", "score_capture"]


def detector_config(bundle: Any) -> Any:
    """The edge's DetectorConfig with the bundle's own window horizon and key."""
    from streams.detector import DetectorConfig

    spec = bundle.meta.window
    return DetectorConfig(seconds=spec.seconds, key=spec.key)


def score_capture(cap: Capture, bundle: Any, config: Any, model: Any = None) -> tuple[dict[str, Any], Any]:
    """One capture's record for the report, and its judged windows (None if it failed).
    `model`: an OnnxDetector of `bundle` (fp32 when None)."""
    from streams.score import score_frame

    e = cap.entry
    rec: dict[str, Any] = {"name": cap.name, "group": e.group, "entry": e.name, "source": cap.source,
                           "expect": e.expect, "scope": e.scope, "status": "failed",
                           "reason": None, "detail": ""}
    got = cap.load()
    if got.meter is not None:
        rec["meter"] = got.meter
    if got.flows is None:
        rec.update(reason=got.reason, detail=got.detail)
        return rec, None
    res = score_frame(got.flows, bundle, config, model=model)
    rec.update(flows=len(got.flows), bad_rows=len(res.bad_rows), windows=len(res.windows))
    if res.bad_rows:
        i, exc = res.bad_rows[0]
        rec["bad_row_example"] = f"row {i}: {exc}"
    if not len(res.windows):
        rec.update(reason="no_windows", detail=f"{cap.source}: {len(got.flows)} rows, "
                                               f"{len(res.bad_rows)} invalid, no window")
        return rec, None
    judged = judge_windows(res.windows, expect=e.expect, scope=e.scope,
                           class_names=res.class_names, benign=bundle.meta.benign_class,
                           principals=got.principals, attacked=got.attacked, periods=got.periods)
    flags = fanout_flags(got.flows)
    flagged = flagged_times(got.flows, flags)
    judged["fanout"] = flag_windows(judged, flagged)
    rec.update(status="scored", views=sorted(judged["view"].unique().tolist()),
               judged_windows=int(judged["scoped"].sum()),
               collateral_windows=int(judged["collateral"].sum()), units=capture_units(judged),
               examples=verdict_examples(judged),
               fanout={"capture_flagged": bool(flagged), "flagged_sources": sorted(flagged)[:20],
                       "n_flagged_sources": len(flagged)})
    if e.scope == "top_key":
        scoped = judged[judged["scoped"]]
        rec["top_keys"] = {str(v): str(k) for v, k in scoped.groupby("view")["key"].first().items()}
    return rec, judged.assign(capture=cap.name, group=e.group)


def evaluate_open_world(manifest: str | Path, bundle: Any, *, out_dir: str | Path | None = None,
                        name: str | None = None, plots: bool = True, progress: bool = True,
                        config: Any = None, windows_out: str | Path | None = None,
                        int8: bool = False, shape_rules: str | None = None) -> dict[str, Any]:
    """Score every capture of the manifest; write <out_dir>/<name>.json (+ .png); return it.

    `out_dir` defaults to `<bundle>/reports`, `name` to `openworld-<manifest stem>`.
    `windows_out` also writes every judged window (Parquet) for a closer look. `int8`
    scores with the bundle's int8 model, as a detector with EDGELOOP_INT8=1 serves it (a
    bundle without one is refused). `shape_rules`: the detector's (streams.score.detector_for:
    EDGELOOP_SHAPE_RULES when None); the report names them.
    """
    from streams.score import detector_for

    t0 = time.perf_counter()
    bundle.verify()  # a stale bundle (other features, other hashes) fails here, by name
    mf = load_manifest(manifest)
    caps = [c for e in mf.entries for c in expand(e)]
    config = config or detector_config(bundle)
    model = detector_for(bundle, int8=int8, shape_rules=shape_rules)  # one session for every capture
    records, frames = [], []
    with progress_steps("open world", len(caps), progress) as step:
        for cap in caps:
            rec, judged = score_capture(cap, bundle, config, model)
            records.append(rec)
            if judged is not None and windows_out is not None:
                frames.append(judged.drop(columns=["probabilities"], errors="ignore"))
            step(cap.name)
    report = build_report(mf, bundle, records, time.perf_counter() - t0)
    report["bundle"]["precision"] = model.precision
    report["bundle"]["shape_rules"] = list(model.shape_rules)
    report["bundle"]["shape_settings"] = model.shape_settings
    if windows_out is not None and frames:
        import pandas as pd

        Path(windows_out).parent.mkdir(parents=True, exist_ok=True)
        pd.concat(frames, ignore_index=True).to_parquet(windows_out, index=False)
        report["files"]["windows"] = str(windows_out)
    out = Path(out_dir) if out_dir else Path(bundle.path) / "reports"
    return write_report(report, out, name or f"openworld-{mf.path.stem}", plots)
