"""The open-world report: per-capture records summed into groups, targets, JSON and a table.

`build_report` takes the per-capture records `evaluation.openworld` makes and returns the
report (schema `edgeloop.openworld_report/1`):

    schema, created_ms, manifest {path, name, description, sha256}, bundle {version,
    class_names, benign_class, window}, definitions {verdicts, capture_verdicts, fanout},
    targets_spec, totals {captures, scored, failed, flows, bad_rows, windows},
    failures {reason: captures}, groups {group: {captures, scored, failed, failures,
      views {src|dst|...|all: {benign|known|unknown: {
        windows  {total, counts {verdict: n}, rates {verdict: share}},
        captures {total, counts, rates},
        fanout   {windows_flagged, windows_rate, captures_flagged, captures_rate},
        labels   {label: {windows {verdict: n}, captures {verdict: n}}}}}}}},
    targets [{group, kind, view, verdict, op, target, value, met, count, windows, interval,
      settled}], targets_met (false when no target could be checked),
    captures [per-capture records], files {json, png}

Rates are shares of the judged windows (or captures) of that kind; "all" sums the views.
Targets are checked on the "all" view, by window. Beside each, the windows' Wilson 95%
interval and whether it lies wholly on one side of the target (`settled`): 3 misses in 222
windows is 1.4%, but anything from 0.5% to 3.9% gives that as readily, so a 1% target is
neither met nor missed by it. The interval takes windows as independent draws; they are not
(a run's windows look alike), so the true uncertainty is wider, never narrower.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from inference.openworld_heuristic import FANOUT_HORIZON_MS, FANOUT_PAIRS
from inference.openworld_verdicts import ALL_VIEWS, KINDS, VERDICTS

REPORT_SCHEMA = "edgeloop.openworld_report/1"
# (verdict, op, bound) per kind, by window on the "all" view.
TARGETS: dict[str, list[tuple[str, str, float]]] = {
    "benign": [("false_alert", "<=", 0.01), ("deferred", "<=", 0.05)],
    "known": [("ok", ">=", 0.95)],
    "unknown": [("miss", "<=", 0.01)],
}
DEFINITIONS = {
    "confident": "the window is not flagged `uncertain`",
    "verdicts": {
        "benign": {"ok": "confident benign", "false_alert": "confident, not benign",
                   "deferred": "uncertain"},
        "known": {"ok": "confident, the right class", "deferred": "uncertain",
                  "miss": "confidently benign", "wrong_class": "confident, another attack class"},
        "unknown": {"caught_uncertain": "uncertain", "caught_alert": "confident, not benign",
                    "miss": "confidently benign"}},
    "capture_verdicts": {
        "benign": "false_alert if any window is; else deferred if any window is; else ok",
        "known": "ok if any window is ok; else the most common verdict (ties: miss, wrong_class, deferred)",
        "unknown": "caught_alert if any window is; else caught_uncertain if any is; else miss"},
    "fanout": {"rule": "a source touching >= pairs distinct dst_ip:dst_port pairs within horizon_s",
               "pairs": FANOUT_PAIRS, "horizon_s": FANOUT_HORIZON_MS / 1000,
               "window": "flagged when its key is a source flagged inside the window's span",
               "capture": "flagged when any scoped window is (a unit), or any source is (capture_flagged)"},
}


def _block(counts: Counter[str], kind: str) -> dict[str, Any]:
    total = sum(counts.values())
    full = {v: int(counts.get(v, 0)) for v in VERDICTS[kind]}
    return {"total": total, "counts": full,
            "rates": {v: (n / total if total else None) for v, n in full.items()}}


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the scored captures' units into groups, per view and kind."""
    groups: dict[str, Any] = {}
    for rec in records:
        g = groups.setdefault(rec["group"], {"captures": 0, "scored": 0, "failed": 0,
                                             "failures": Counter(), "_acc": {}})
        g["captures"] += 1
        if rec["status"] != "scored":
            g["failed"] += 1
            g["failures"][rec["reason"]] += 1
            continue
        g["scored"] += 1
        for view, units in rec["units"].items():
            for u in units:
                acc = g["_acc"].setdefault(view, {}).setdefault(u["kind"], {
                    "w": Counter(), "c": Counter(), "fw": 0, "fc": 0, "labels": {}})
                acc["w"].update(u["windows"])
                acc["c"][u["verdict"]] += 1
                acc["fw"] += u["fanout_windows"] or 0
                acc["fc"] += bool(u["fanout_flagged"])
                lab = acc["labels"].setdefault(u["label"], {"windows": Counter(), "captures": Counter()})
                lab["windows"].update(u["windows"])
                lab["captures"][u["verdict"]] += 1
    for g in groups.values():
        acc = g.pop("_acc")
        g["failures"] = dict(g["failures"])
        order = sorted(acc, key=lambda v: (v == ALL_VIEWS, v))
        g["views"] = {v: {k: _kind_block(acc[v][k], k) for k in KINDS if k in acc[v]} for v in order}
    return groups


def _kind_block(a: dict[str, Any], kind: str) -> dict[str, Any]:
    w, c = _block(a["w"], kind), _block(a["c"], kind)
    return {"windows": w, "captures": c,
            "fanout": {"windows_flagged": a["fw"], "windows_rate": a["fw"] / w["total"] if w["total"] else None,
                       "captures_flagged": a["fc"], "captures_rate": a["fc"] / c["total"] if c["total"] else None},
            "labels": {lab: {"windows": dict(v["windows"]), "captures": dict(v["captures"])}
                       for lab, v in sorted(a["labels"].items())}}


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """The Wilson score interval of k successes in n draws (95% by default); None for n = 0."""
    if n <= 0:
        return None
    p, z2 = k / n, z * z
    mid = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * ((p * (1 - p) / n + z2 / (4 * n * n)) ** 0.5) / (1 + z2 / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def meets(op: str, bound: float, value: float | None) -> bool:
    """Whether a rate meets its target ("<=" or ">=" the bound); a missing rate does not."""
    return value is not None and (value <= bound if op == "<=" else value >= bound)


def settled(op: str, bound: float, interval: tuple[float, float] | None) -> bool:
    """Whether the whole interval lies on one side of the target (met or missed alike)."""
    if interval is None:
        return False
    lo, hi = interval
    return (hi <= bound or lo > bound) if op == "<=" else (lo >= bound or hi < bound)


def check_targets(groups: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of every group and kind present, on the "all" view by window, with the
    windows behind it, their 95% interval and whether that settles it."""
    out = []
    for name, g in groups.items():
        for kind, block in g.get("views", {}).get(ALL_VIEWS, {}).items():
            for verdict, op, bound in TARGETS[kind]:
                value = block["windows"]["rates"][verdict]
                met = meets(op, bound, value)
                count, total = block["windows"]["counts"][verdict], block["windows"]["total"]
                interval = wilson(count, total)
                out.append({"group": name, "kind": kind, "view": ALL_VIEWS, "verdict": verdict,
                            "op": op, "target": bound, "value": value, "met": bool(met),
                            "count": count, "windows": total,
                            "interval": list(interval) if interval else None,
                            "settled": settled(op, bound, interval)})
    return out


def build_report(manifest: Any, bundle: Any, records: list[dict[str, Any]],
                 seconds: float = 0.0) -> dict[str, Any]:
    groups = aggregate(records)
    targets = check_targets(groups)
    scored = [r for r in records if r["status"] == "scored"]
    meta = bundle.meta
    return {
        "schema": REPORT_SCHEMA, "created_ms": int(time.time() * 1000), "seconds": round(seconds, 2),
        "manifest": {"path": str(manifest.path), "name": manifest.name,
                     "description": manifest.description,
                     "sha256": hashlib.sha256(Path(manifest.path).read_bytes()).hexdigest()},
        "bundle": {"version": bundle.version, "class_names": list(meta.class_names),
                   "benign_class": meta.benign_class, "window": meta.window.model_dump()},
        "definitions": DEFINITIONS,
        "targets_spec": {k: [{"verdict": v, "op": op, "target": b} for v, op, b in t]
                         for k, t in TARGETS.items()},
        "totals": {"captures": len(records), "scored": len(scored), "failed": len(records) - len(scored),
                   "flows": sum(r.get("flows", 0) for r in scored),
                   "bad_rows": sum(r.get("bad_rows", 0) for r in scored),
                   "windows": sum(r.get("windows", 0) for r in scored)},
        "failures": dict(Counter(r["reason"] for r in records if r["status"] != "scored")),
        # No target checked (nothing scored) is not "met".
        "groups": groups, "targets": targets,
        "targets_met": bool(targets) and all(t["met"] for t in targets),
        "captures": records, "files": {},
    }


def write_report(report: dict[str, Any], out_dir: Path, name: str, plots: bool = True) -> dict[str, Any]:
    """Write <out_dir>/<name>.json (and .png unless plots is False); return the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {**report.get("files", {}), "json": str(out_dir / f"{name}.json")}
    if plots:
        from inference.plots import openworld_png

        files["png"] = str(openworld_png(report, out_dir / f"{name}.png",
                                         f"{report['manifest']['name']}: bundle {report['bundle']['version']}"))
    report["files"] = files
    Path(files["json"]).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return report
