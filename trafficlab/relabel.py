"""Re-apply the current label rules to a generated dataset, without running the lab again.

A dataset keeps everything labelling needs: the flows (`<name>.parquet`) and the spans
(`<name>.labels.json`). When the rules change (tails for attacker spans, say), this
recomputes the labels, rewrites the Parquet and the spans, and updates the datasheet's
counts, per-run flows, feature summary, rule text and file hashes. The pcap, if any, is
untouched (labels are not stored in it).

    >>> relabel(Path("data/lab"), "heldout")      # {'benign': ..., 'ssh_bruteforce': ...}
"""
from __future__ import annotations

import json
from pathlib import Path

from contracts.errors import LabError
from trafficlab.datasheet import _sha256, feature_summary, write_datasheet
from trafficlab.labelling import BENIGN, RULE, apply_labels, load_spans, save_spans, span_counts, with_tails


def relabel(out_dir: Path, name: str) -> dict[str, int]:
    import pandas as pd

    paths = {k: out_dir / f"{name}.{ext}" for k, ext in
             (("parquet", "parquet"), ("labels", "labels.json"), ("sheet", "datasheet.json"))}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise LabError(f"cannot relabel {name}: missing {missing}")
    doc = json.loads(paths["labels"].read_text())
    spans = with_tails(load_spans(paths["labels"]))
    df = apply_labels(pd.read_parquet(paths["parquet"]), spans)
    df.to_parquet(paths["parquet"], index=False, compression="zstd")
    save_spans(paths["labels"], spans, **{k: v for k, v in doc.items()
                                          if k not in ("schema", "rule", "grace_ms", "spans")})
    sheet = json.loads(paths["sheet"].read_text())
    _update(sheet, df, spans)
    for key in ("parquet", "labels"):
        p = paths[key]
        sheet["files"][key] = {"file": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p)}
    write_datasheet(sheet, out_dir, name)
    return sheet["counts"]


def _update(sheet: dict, df, spans) -> None:
    per_span = span_counts(df, spans)
    per_variant: dict[str, int] = {}
    for run, span, n in zip(sheet["runs"], spans, per_span):
        run["flows"] = n
        key = f"{run['scenario']}/{run['variant']}"
        per_variant[key] = per_variant.get(key, 0) + n
    attackers = sheet["topology"].get("attackers") or [sheet["topology"]["attacker"]]
    touching = df["src_ip"].isin(attackers) | df["dst_ip"].isin(attackers)
    sheet["counts"] = {label: int((df["label"] == label).sum()) for label in sheet["counts"]}
    sheet["counts_per_variant"] = per_variant
    sheet["attacker_flows_labelled_benign"] = int((touching & (df["label"] == BENIGN)).sum())
    sheet["label_rule"] = RULE
    sheet["feature_summary"] = feature_summary(df)
    sheet["relabelled"] = "labels recomputed from the spans by trafficlab.relabel"
