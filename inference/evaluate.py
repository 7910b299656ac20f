"""Evaluate a bundle on a labelled flow file: accuracy, calibration, int8 and unseen labels.

Flows are windowed with the bundle's own window spec by the edge's windowing code (in file
row order, as a replay would see them) and scored by `OnnxDetector`, so the figures are
what the edge would do. The report covers per-class precision/recall/F1 and macro-F1,
the confusion matrix, expected calibration error with a reliability diagram, how many
windows went to `uncertain` (and, for labels the model was never trained on, how many of
those), fp32 against int8 accuracy, and windows/s for both.

    >>> report = evaluate_bundle(Bundle.load(path), load_labelled_flows("eval.parquet"),
    ...                          name="eval")
    >>> report["macro_f1"], report["files"]["json"]     # <bundle>/reports/eval.json

Input files: CSV or Parquet with FlowRecord columns and a `label` column; or a pcap plus
a labels file. A labels file is CSV/Parquet with either `flow_id,label` (exact match on the
metered flow ids) or `src_ip,start_ms,end_ms,label` spans (a flow from src_ip whose
first_seen_ms lies in [start_ms, end_ms] gets the label; `ip` instead of `src_ip` matches
either end), or the lab's `<name>.labels.json`. Flows no span covers are benign.

Needs onnxruntime, numpy and pandas; matplotlib only for the PNGs. No torch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from contracts.errors import ModelError, SourceError
from inference.bundle import Bundle
from inference.calibration import expected_calibration_error, reliability_bins
from inference.onnx_detector import OnnxDetector, Scores, calibrate
from inference.scores import accuracy, confusion_matrix, macro_f1, per_class
from inference.windowing import stack_windows, window_label, windows_from_frame

REPORT_SCHEMA = "edgeloop.eval_report/1"
# The acceptance bar for the shipped detector on the separate evaluation capture.
TARGETS = {"macro_f1": 0.98, "min_recall": 0.95, "ece": 0.05, "int8_delta_points": 0.5}
PCAP_SUFFIXES = (".pcap", ".pcapng", ".cap")


def _read_table(path: Path) -> Any:
    import pandas as pd

    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if path.suffix.lower() in (".csv", ".gz"):
        return pd.read_csv(path)
    raise SourceError(f"{path}: expected .csv or .parquet")


def load_labelled_flows(path: str | Path, labels: str | Path | None = None,
                        fmt: str = "flows") -> Any:
    """A DataFrame of flows with a `label` column, from a table or from a pcap plus labels.

    `fmt` picks the layout: "flows" (FlowRecord columns), "cicids2017" or "nslkdd".
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    if fmt == "cicids2017":
        from inference.datasets.cicids2017 import load_cicids2017

        return load_cicids2017(path)
    if fmt == "nslkdd":
        from inference.datasets.nslkdd import load_nslkdd

        return load_nslkdd(path)
    if path.suffix.lower() in PCAP_SUFFIXES:
        if labels is None:
            raise SourceError(f"{path}: a pcap needs a labels file (--labels)")
        from inference.flow_meter import meter_pcap

        table, meter_opts = _read_labels(Path(labels))
        return label_flows(meter_pcap(path, **meter_opts), table)
    df = _read_table(path)
    if labels is not None:
        df = label_flows(df.drop(columns=["label"], errors="ignore"), _read_labels(Path(labels))[0])
    if "label" not in df.columns:
        raise SourceError(f"{path}: no `label` column (or pass a labels file)")
    return df


def _read_labels(path: Path) -> tuple[Any, dict[str, Any]]:
    """A labels table, plus metering options when the file is a lab labels JSON.

    The traffic lab writes `<name>.labels.json` (schema edgeloop.lab_labels/1 or /2): spans
    with a grace period and the NFStream timeouts the capture was metered with. A span of
    version 1 (or `match: attacker`) matches flows from *or* to its attacker address, until
    `end_ms` plus the larger of the grace and its `tail_ms` (version 2). Version
    2 adds spans for spoofed traffic (see trafficlab.labelling): `match: victim` (flows to
    victim_ip from anyone but `not_with`: the span's label on the victim, then `benign` on
    every address in `not_with`, rows label_flows applies in order) and `match: pair` (flows
    between victim_ip and one of its `peers`: a row per peer with the `peer` column). Rows
    come in the lab's precedence, later rows winning: spoofed-flood spans, pair tails, pair
    runs, attacker tails, attacker runs (a run beats a tail). A pair run beats an earlier
    pair run's tail only between the same two hosts: a late answer from a reflector the
    next run does not use stays the earlier run's. For the lab, whose other hosts and LAN
    groups are all listed in `not_with`, that gives the same labels as
    trafficlab.labelling.apply_labels.
    """
    if path.suffix.lower() != ".json":
        return _read_table(path), {}
    import pandas as pd

    doc = json.loads(path.read_text())
    grace = int(doc.get("grace_ms", 0))
    order = ("spoofed", "pair_tail", "pair", "tail", "run")     # later kinds win
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in order}
    for s in doc.get("spans", []):
        match = s.get("match", "attacker")
        lo, hi = s["start_ms"] - grace, s["end_ms"] + grace
        tail = int(s.get("tail_ms", 0))
        row = {"start_ms": lo, "end_ms": hi, "label": s["label"], "peer": None}
        if match == "attacker":
            rows["run"].append({**row, "ip": s["attacker_ip"]})
            if tail > grace:
                rows["tail"].append({**row, "ip": s["attacker_ip"], "start_ms": hi + 1, "end_ms": s["end_ms"] + tail})
        elif match == "victim":
            rows["spoofed"].append({**row, "ip": s["victim_ip"]})
            rows["spoofed"] += [{**row, "ip": ip, "label": "benign"} for ip in s.get("not_with", [])]
        else:
            for peer in s.get("peers", []):
                rows["pair"].append({**row, "ip": s["victim_ip"], "peer": peer})
                if tail > grace:     # the reflectors' late answers, as in the lab
                    rows["pair_tail"].append({**row, "ip": s["victim_ip"], "peer": peer,
                                              "start_ms": hi + 1, "end_ms": s["end_ms"] + tail})
    spans = pd.DataFrame([r for k in order for r in rows[k]], columns=["ip", "peer", "start_ms", "end_ms", "label"])
    opts = {k: int(doc[k]) for k in ("idle_timeout", "active_timeout") if k in doc}
    return spans, opts


def label_flows(flows: Any, labels: Any, benign: str = "benign") -> Any:
    """Attach labels by flow_id, or by address and time span; unmatched flows are benign.

    Span tables have `src_ip` (matches the flow's source) or `ip` (matches either end),
    plus `start_ms`, `end_ms` and `label`; a flow matches when its first_seen_ms is inside.
    With `ip`, an optional `peer` column (empty: any) narrows a row to the flows between
    `ip` and `peer`. Rows apply in order: a later row's label wins.
    """
    out = flows.copy()
    if {"flow_id", "label"} <= set(labels.columns):
        mapping = dict(zip(labels["flow_id"].astype(str), labels["label"].astype(str)))
        out["label"] = out["flow_id"].astype(str).map(mapping).fillna(benign)
        return out
    either = "ip" in labels.columns
    if not {"ip" if either else "src_ip", "start_ms", "end_ms", "label"} <= set(labels.columns):
        raise SourceError("labels file needs flow_id,label or src_ip|ip,start_ms,end_ms,label columns")
    lab = np.full(len(out), benign, dtype=object)
    src, ts = out["src_ip"].astype(str).to_numpy(), out["first_seen_ms"].to_numpy()
    dst = out["dst_ip"].astype(str).to_numpy() if either else src
    for row in labels.to_dict("records"):
        ip = str(row["ip"] if either else row["src_ip"])
        peer = row.get("peer") if either else None
        if not isinstance(peer, str) or not peer:      # None, NaN from a CSV, "": either end
            ends = (src == ip) | (dst == ip)
        else:
            ends = ((src == ip) & (dst == str(peer))) | ((dst == ip) & (src == str(peer)))
        hit = ends & (ts >= row["start_ms"]) & (ts <= row["end_ms"])
        lab[hit] = str(row["label"])
    out["label"] = lab
    return out


def evaluate_bundle(bundle: Bundle, flows_df: Any, *, name: str = "flows",
                    out_dir: str | Path | None = None, plots: bool = True, speed: bool = True,
                    batch_sizes: tuple[int, ...] = (1, 32, 256), n_bins: int = 15,
                    source: str = "", judging: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score labelled flows with `bundle`; write `<out_dir>/<name>.json` (+ PNGs) and return it.

    `out_dir` defaults to `<bundle>/reports`. With `judging` (`lab_judging`: who carried
    each attack, when, and who was under attack) the report also holds `judged`: the same
    figures over the windows the open-world judge scopes (benign windows, and each attack in
    the windows keyed by its principal), and the targets are read there. Every window stays
    in the top-level figures: a scan target's destination window, one flow from the scanner,
    is labelled with the scan but deferred by design (the scanner's own windows name it).
    """
    meta = bundle.meta
    spec = meta.window
    closed = windows_from_frame(flows_df, k=spec.k, seconds=spec.seconds, key=spec.key,  # type: ignore[arg-type]
                                label_column="label", views=spec.views)
    if not closed:
        raise ModelError(f"{name}: no windows in {len(flows_df)} flows")
    x, mask = stack_windows(closed, spec.k)
    truth = np.array([window_label(w.labels, meta.benign_class) for w in closed], dtype=object)
    det = OnnxDetector(bundle)
    s = det.score(x, mask)
    logits = det.run(det.schema.normalise(x, mask), mask)
    names = det.class_names
    known = np.isin(truth, names)
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA, "dataset": {"name": name, "source": source, "flows": len(flows_df),
                                             "windows": len(closed), "labels": _counts(truth)},
        "bundle": {"version": bundle.version, "class_names": names, "temperature": det.temperature,
                   "thresholds": meta.thresholds.model_dump(), "window": spec.model_dump()},
    }
    report.update(_known_metrics(s, logits, truth, known, names, det.temperature, n_bins))
    report["unseen"] = _unseen(s, truth, known, names)
    report["int8"] = _int8(bundle, x, mask, truth, known, names, s)
    report["speed"] = _speed(bundle, det, x, mask, batch_sizes) if speed else {}
    if judging is not None:
        scoped, collateral = _judged_scope(closed, truth, s, names, meta.benign_class, judging)
        report["judged"] = {"scope": JUDGED_SCOPE, "collateral": int(collateral.sum()),
                            "labels": _counts(truth[scoped]),
                            **_known_metrics(s, logits, truth, known & scoped, names, det.temperature, n_bins)}
    report["targets"] = _targets(report.get("judged", report), report["int8"])
    report["targets_on"] = "judged windows" if "judged" in report else "every window"
    return _write(report, bundle, name, out_dir, plots)


# What the `judged` block of a report counts (also written into it).
JUDGED_SCOPE = ("benign windows, and each attack's windows keyed by its principal (the attacker's source "
                "windows; the victim's destination windows for spoofed and reflected attacks), as the "
                "open-world judge reads a labelled lab capture; the rest is collateral")


def lab_judging(flows: Any, labels_json: str | Path, benign: str = "benign") -> dict[str, Any]:
    """`evaluate_bundle`'s `judging` for a lab capture read as it was written (runs not
    separated): the principals and run periods of its labels document, and when each
    destination received attack flows."""
    from inference.datasets.lab import labels_principals
    from inference.openworld_captures import attacked_times

    principals, periods = labels_principals(json.loads(Path(labels_json).read_text()))
    return {"principals": principals, "periods": periods, "attacked": attacked_times(flows, benign)}


def _judged_scope(closed: list[Any], truth: np.ndarray, s: Scores, names: list[str], benign: str,
                  judging: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per window: judged (in scope) and collateral, by inference.openworld_verdicts.judge_windows."""
    import pandas as pd

    from inference.openworld_verdicts import judge_windows

    frame = pd.DataFrame({"view": [w.view for w in closed], "key": [w.key for w in closed],
                          "label": truth.astype(str), "first_seen_ms": [w.first_seen_ms for w in closed],
                          "last_seen_ms": [w.last_seen_ms for w in closed],
                          "predicted": np.array(names, dtype=object)[s.predicted], "uncertain": s.uncertain})
    j = judge_windows(frame, expect=None, scope="labels", class_names=names, benign=benign, **judging)
    return j["scoped"].to_numpy(dtype=bool), j["collateral"].to_numpy(dtype=bool)


def _counts(values: np.ndarray) -> dict[str, int]:
    labels, counts = np.unique(values.astype(str), return_counts=True)
    return {str(a): int(b) for a, b in zip(labels, counts)}


def _known_metrics(s: Scores, logits: np.ndarray, truth: np.ndarray, known: np.ndarray,
                   names: list[str], temperature: float, n_bins: int) -> dict[str, Any]:
    index = {c: i for i, c in enumerate(names)}
    y = np.array([index[t] for t in truth[known]], dtype=np.int64)
    pred, probs = s.predicted[known], s.probabilities[known]
    cm = confusion_matrix(y, pred, len(names))
    raw_probs, _ = calibrate(logits[known], 1.0)
    unc, low = s.uncertain[known], s.low_confidence[known]
    confident = ~unc
    return {
        "windows": int(known.sum()), "accuracy": accuracy(cm), "macro_f1": macro_f1(cm),
        "per_class": per_class(cm, names), "confusion_matrix": cm.tolist(),
        "confusions": _confusions(cm, names),
        "ece": expected_calibration_error(probs, y, n_bins),
        "ece_uncalibrated": expected_calibration_error(raw_probs, y, n_bins),
        "reliability": reliability_bins(probs, y, n_bins),
        "reliability_uncalibrated": reliability_bins(raw_probs, y, n_bins),
        "uncertain": {
            "windows": int(unc.sum()), "rate": float(unc.mean()) if len(unc) else 0.0,
            "low_confidence": int(low.sum()), "ood": int((unc & ~low).sum()),
            "per_class": {c: int(unc[y == i].sum()) for i, c in enumerate(names)},
            "accuracy_of_confident": float((pred[confident] == y[confident]).mean())
            if confident.any() else None},
    }


def _confusions(cm: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    """Off-diagonal cells, largest first: which class was taken for which."""
    cells = [(int(cm[i, j]), names[i], names[j]) for i in range(len(names))
             for j in range(len(names)) if i != j and cm[i, j]]
    return [{"true": t, "predicted": p, "windows": n} for n, t, p in sorted(cells, reverse=True)]


def _unseen(s: Scores, truth: np.ndarray, known: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per label the model never trained on: windows, how many went to uncertain, and why."""
    out: dict[str, Any] = {}
    for label in sorted(set(truth[~known].astype(str))):
        sel = truth == label
        unc, low = s.uncertain[sel], s.low_confidence[sel]
        out[label] = {"windows": int(sel.sum()), "uncertain": int(unc.sum()),
                      "uncertain_rate": float(unc.mean()), "low_confidence": int(low.sum()),
                      "ood": int((unc & ~low).sum()),
                      "predicted": _counts(np.array(names, dtype=object)[s.predicted[sel]])}
    return out


def _int8(bundle: Bundle, x: np.ndarray, mask: np.ndarray, truth: np.ndarray, known: np.ndarray,
          names: list[str], fp32: Scores) -> dict[str, Any]:
    if bundle.meta.int8 is None:
        return {"available": False}
    s8 = OnnxDetector(bundle, int8=True).score(x, mask)
    index = {c: i for i, c in enumerate(names)}
    y = np.array([index[t] for t in truth[known]], dtype=np.int64)
    cm8 = confusion_matrix(y, s8.predicted[known], len(names))
    cm32 = confusion_matrix(y, fp32.predicted[known], len(names))
    return {"available": True, "accuracy": accuracy(cm8), "macro_f1": macro_f1(cm8),
            "accuracy_delta_points": 100 * (accuracy(cm32) - accuracy(cm8)),
            "macro_f1_delta_points": 100 * (macro_f1(cm32) - macro_f1(cm8)),
            "agreement_with_fp32": float((s8.predicted == fp32.predicted).mean()),
            "per_class_recall": {c: v["recall"] for c, v in per_class(cm8, names).items()}}


def _speed(bundle: Bundle, det: OnnxDetector, x: np.ndarray, mask: np.ndarray,
           batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    """windows/s and batch latency on one thread: bare onnxruntime, fp32 and int8."""
    from inference.quantize import measure_speed

    xn = det.schema.normalise(x, mask)
    out = {"threads": 1, "fp32": measure_speed(bundle.onnx_path(), xn, mask, batch_sizes)}
    if bundle.meta.int8 is not None:
        out["int8"] = measure_speed(bundle.onnx_path(int8=True), xn, mask, batch_sizes)
    return out


def _targets(r: dict[str, Any], int8: dict[str, Any]) -> dict[str, Any]:
    """The targets, read on `r`: a report's judged block when it has one, else every window."""
    recalls = [v["recall"] for v in r["per_class"].values() if v["support"]]
    min_recall = min(recalls) if recalls else 0.0
    t = {"macro_f1": {"value": r["macro_f1"], "target": TARGETS["macro_f1"],
                      "met": r["macro_f1"] >= TARGETS["macro_f1"]},
         "min_recall": {"value": min_recall, "target": TARGETS["min_recall"],
                        "met": min_recall >= TARGETS["min_recall"]},
         "ece": {"value": r["ece"], "target": TARGETS["ece"], "met": r["ece"] <= TARGETS["ece"]}}
    for v in t.values():
        v["windows"] = r["windows"]  # how many windows the figure is over
    if int8.get("available"):
        d = int8["accuracy_delta_points"]
        t["int8_delta_points"] = {"value": d, "target": TARGETS["int8_delta_points"],
                                  "met": abs(d) <= TARGETS["int8_delta_points"]}
    t["all_met"] = all(v["met"] for v in t.values())
    return t


def _write(report: dict[str, Any], bundle: Bundle, name: str, out_dir: str | Path | None,
           plots: bool) -> dict[str, Any]:
    out = Path(out_dir) if out_dir else bundle.path / "reports"
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / f"{name}.json")}
    if plots:
        from inference.plots import confusion_png, reliability_png

        cm = np.array(report["confusion_matrix"])
        title = f"{name} — bundle {bundle.version}"
        files["confusion_png"] = str(confusion_png(cm, report["bundle"]["class_names"],
                                                   out / f"{name}.confusion.png", title))
        files["reliability_png"] = str(reliability_png(
            report["reliability"], out / f"{name}.reliability.png",
            f"{title}\nECE {report['ece']:.4f} (T=1: {report['ece_uncalibrated']:.4f})",
            report["reliability_uncalibrated"]))
    report["files"] = files
    Path(files["json"]).write_text(json.dumps(report, indent=2, allow_nan=False))
    return report
