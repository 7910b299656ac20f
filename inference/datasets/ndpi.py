"""The nDPI foreign set: 474 real benign captures from the ntop/nDPI test suite, as flows.

edgeloop's lab makes its own traffic; these captures were made by other people on other
networks (TLS/QUIC, DNS, IoT and ICS protocols, VoIP, games, VPNs...), so they show how
the detector does on benign traffic it did not learn from. Source: the ntop/nDPI
repository, `tests/cfgs/default/pcap` (commit in MANIFEST.tsv), LGPL-3.0. Credit the
ntop/nDPI project wherever flows derived from these files are shipped.

The files are split **by file** into two fixed halves: sorted by a keyed blake2b hash of
the file name, the first half is `train`, the second `test` (`split_files`). The split
depends only on the file names, so it is the same on every machine and every run.
**The test half is for evaluation only; never train on it.** `load_ndpi("test")` refuses
unless the caller says `purpose="evaluate"`, and refuses `purpose="train"` outright.

    >>> train = load_ndpi("train")                       # flows, label "benign", `file` column
    >>> test = load_ndpi("test", purpose="evaluate")     # for open-world evaluation only
    >>> sheet = build_ndpi("data/ndpi")                  # re-meter all files (about 30 s)

Rebuild from the captures with `edgeloop datasets ndpi --out data/ndpi`.
"""
from __future__ import annotations

import csv
import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Literal

from contracts.errors import SourceError
from contracts.records import FLOW_FIELDS
from inference.flow_meter import DEFAULT_ACTIVE_TIMEOUT, DEFAULT_IDLE_TIMEOUT
from inference.openworld_meter import (CAPTURE_SUFFIXES, FAILURE_REASONS, meter_capture,
                                       progress_steps)

REPO = Path(__file__).resolve().parents[2]
NDPI_DIR = REPO / "data" / "ndpi"
CAPTURES_DIR = REPO.parent / "shared" / "captures" / "ndpi"
SENSOR = "ndpi"
LABEL = "benign"
# Changing the key changes the split: then it is a different dataset (bump SPLIT_VERSION).
SPLIT_KEY = b"edgeloop/ndpi-split"
SPLIT_VERSION = 1
SPLITS = ("train", "test")
SOURCE = {"project": "ntop/nDPI", "url": "https://github.com/ntop/nDPI",
          "path": "tests/cfgs/default/pcap", "licence": "LGPL-3.0",
          "credit": "Captures from the nDPI test suite by the ntop/nDPI project "
                    "(https://github.com/ntop/nDPI), LGPL-3.0."}


class HeldOutSplitError(SourceError):
    """The nDPI test half was asked for in a way that could leak it into training."""


def capture_files(root: str | Path | None = None) -> list[Path]:
    """The capture files (pcap, pcapng, cap) under root, sorted by name."""
    base = Path(root) if root else CAPTURES_DIR
    if not base.is_dir():
        raise SourceError(f"nDPI captures: {base} is not a directory (see ../shared/captures)")
    return sorted(p for p in base.iterdir() if p.suffix.lower() in CAPTURE_SUFFIXES)


def split_rank(name: str) -> str:
    """The keyed blake2b hash that orders a file name for the split."""
    return hashlib.blake2b(name.encode(), key=SPLIT_KEY, digest_size=16).hexdigest()


def split_files(names: Iterable[str]) -> dict[str, str]:
    """File name -> "train" or "test": the first half by `split_rank` is train.

    Exactly half each for an even count (474: 237 and 237); with an odd count the
    extra file goes to test. Duplicate names are an error."""
    names = list(names)
    if len(set(names)) != len(names):
        raise SourceError("nDPI split: duplicate file names")
    ranked = sorted(names, key=lambda n: (split_rank(n), n))
    half = len(ranked) // 2
    return {n: ("train" if i < half else "test") for i, n in enumerate(ranked)}


def read_manifest(root: str | Path | None = None) -> dict[str, dict[str, str]]:
    """MANIFEST.tsv beside the captures: file -> {path_in_ntop_nDPI, commit, bytes, packets,
    caveats}; empty when there is none."""
    path = (Path(root) if root else CAPTURES_DIR) / "MANIFEST.tsv"
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t")}


def meter_ndpi(root: str | Path | None = None, *, idle_timeout: int = DEFAULT_IDLE_TIMEOUT,
               active_timeout: int = DEFAULT_ACTIVE_TIMEOUT,
               progress: bool = True) -> tuple[Any, list[dict[str, Any]]]:
    """Meter every capture: (flows DataFrame with `file` and `split`, one record per file).

    A file that fails keeps its record with a reason (inference.openworld_meter)."""
    import pandas as pd

    files = capture_files(root)
    split = split_files(p.name for p in files)
    manifest = read_manifest(root)
    frames, records = [], []
    with progress_steps("metering nDPI", len(files), progress) as step:
        for p in files:
            m = meter_capture(p, sensor=SENSOR, idle_timeout=idle_timeout,
                              active_timeout=active_timeout)
            rec = m.record()
            rec.update(split=split[p.name], caveats=manifest.get(p.name, {}).get("caveats", ""),
                       bytes=p.stat().st_size, sha256=hashlib.sha256(p.read_bytes()).hexdigest())
            records.append(rec)
            if m.ok:
                frames.append(m.flows.assign(label=LABEL, file=p.name, split=split[p.name]))
            step(p.name)
    cols = [*FLOW_FIELDS, "file", "split"]
    flows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return flows.loc[:, cols], records


def build_ndpi(out: str | Path = NDPI_DIR, root: str | Path | None = None, *,
               idle_timeout: int = DEFAULT_IDLE_TIMEOUT,
               active_timeout: int = DEFAULT_ACTIVE_TIMEOUT, progress: bool = True) -> dict[str, Any]:
    """Meter the captures and write flows.parquet, datasheet.json and datasheet.md to out."""
    t0 = time.perf_counter()
    flows, records = meter_ndpi(root, idle_timeout=idle_timeout, active_timeout=active_timeout,
                                progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    flows.to_parquet(out / "flows.parquet", index=False)
    sheet = datasheet(flows, records, read_manifest(root), idle_timeout, active_timeout,
                      time.perf_counter() - t0)
    (out / "datasheet.json").write_text(json.dumps(sheet, indent=1) + "\n")
    (out / "datasheet.md").write_text(datasheet_markdown(sheet))
    return sheet


def datasheet(flows: Any, records: list[dict[str, Any]], manifest: dict[str, dict[str, str]],
              idle_timeout: int, active_timeout: int, seconds: float) -> dict[str, Any]:
    """Where the flows came from, how they were metered and split, and what failed."""
    import nfstream

    splits = {}
    for s in SPLITS:
        recs = [r for r in records if r["split"] == s]
        part = flows[flows["split"] == s]
        splits[s] = {"files": len(recs), "files_metered": sum(r["status"] == "ok" for r in recs),
                     "files_failed": sum(r["status"] != "ok" for r in recs), "flows": len(part),
                     "packets_in_flows": int(part["packets"].sum()) if len(part) else 0,
                     "files_digest": _digest(r["file"] for r in recs)}
    failed = [r for r in records if r["status"] != "ok"]
    return {
        "schema": "edgeloop.datasheet/1", "name": "ndpi", "label": LABEL,
        "source": {**SOURCE, "commits": sorted({m["commit"] for m in manifest.values() if m.get("commit")})},
        "metering": {"tool": f"nfstream {nfstream.__version__}", "idle_timeout_s": idle_timeout,
                     "active_timeout_s": active_timeout, "sensor": SENSOR, "seconds": round(seconds, 1)},
        "split": {"version": SPLIT_VERSION, "rule": "sort file names by blake2b(name, key="
                  f"{SPLIT_KEY.decode()!r}, digest_size=16); first half train, second half test",
                  "test_is_for_evaluation_only": True},
        "files": len(records), "flows": len(flows), "splits": splits,
        "failures": dict(Counter(r["reason"] for r in failed)),
        "failure_reasons": {k: v for k, v in FAILURE_REASONS.items()},
        "notes": dict(Counter(n for r in records for n in r["notes"])),
        "caveats": dict(Counter(c.strip() for r in records for c in r["caveats"].split(";") if c.strip())),
        "duplicate_flow_ids": int(flows["flow_id"].duplicated().sum()),
        "per_file": records,
    }


def _digest(names: Iterable[str]) -> str:
    return hashlib.blake2b("\n".join(sorted(names)).encode(), digest_size=8).hexdigest()


def datasheet_markdown(sheet: dict[str, Any]) -> str:
    """The datasheet for people: source, licence and credit, splits, failures, caveats."""
    src, m, sp = sheet["source"], sheet["metering"], sheet["splits"]
    lines = [
        "# nDPI foreign set (benign)", "",
        f"{sheet['flows']:,} flows metered from {sheet['files']} real benign captures of the "
        f"[{src['project']}]({src['url']}) test suite (`{src['path']}`, commit "
        f"{', '.join(src['commits']) or 'unknown'}).", "",
        f"**Licence:** {src['licence']}. **Credit:** {src['credit']}", "",
        f"Metered with {m['tool']} (idle {m['idle_timeout_s']} s, active {m['active_timeout_s']} s, "
        f"sensor `{m['sensor']}`); every flow is labelled `{sheet['label']}`. Columns: the "
        "FlowRecord fields plus `file` (the capture) and `split`.", "",
        "## Split", "", f"By file: {sheet['split']['rule']}.",
        "**The test half is for evaluation only: never train on it** "
        "(`load_ndpi('test', purpose='evaluate')`).", "",
        "| split | files | metered | failed | flows | packets in flows |", "|---|---:|---:|---:|---:|---:|",
        *(f"| {s} | {v['files']} | {v['files_metered']} | {v['files_failed']} | {v['flows']:,} | "
          f"{v['packets_in_flows']:,} |" for s, v in sp.items()), "",
        "## Metering failures", "",
        *([f"- `{k}` ({sheet['failure_reasons'][k]}): {n}" for k, n in sorted(sheet["failures"].items())]
          or ["None: every file metered into at least one flow."]), "",
        *[f"- {r['file']}: {r['reason']}: {r['detail']}" for r in sheet["per_file"] if r["status"] != "ok"],
        "## Caveats", "",
        "Many files keep only the first packets of each flow (nDPI needs few), so durations "
        "and byte counts run low; some join captures from different days.", "",
        "| caveat (MANIFEST.tsv) | files |", "|---|---:|",
        *(f"| {c} | {n} |" for c, n in sorted(sheet["caveats"].items(), key=lambda kv: -kv[1])), "",
        "| note (from the file itself) | files |", "|---|---:|",
        *(f"| {c} | {n} |" for c, n in sorted(sheet["notes"].items())), "",
        f"Duplicate flow ids across files: {sheet['duplicate_flow_ids']}. Per-file records "
        "(flows, packets, link types, IP versions, caveats, sha256) are in datasheet.json.", "",
    ]
    return "\n".join(lines)


def load_ndpi(split: Literal["train", "test"] = "train", *,
              purpose: Literal["train", "evaluate"] | None = None,
              path: str | Path | None = None) -> Any:
    """The shipped nDPI flows of one split: FlowRecord columns, `label`="benign", `file`.

    The test half must never reach training: asking for it needs `purpose="evaluate"`,
    and `purpose="train"` with split "test" raises HeldOutSplitError.
    """
    import pandas as pd

    if split not in SPLITS:
        raise SourceError(f"load_ndpi: split {split!r}: use 'train' or 'test'")
    if split == "test" and purpose != "evaluate":
        raise HeldOutSplitError(
            f"load_ndpi('test', purpose={purpose!r}): the nDPI test half is held out for "
            "evaluation only; pass purpose='evaluate' to evaluate on it, never train on it")
    p = Path(path) if path else NDPI_DIR / "flows.parquet"
    if not p.is_file():
        raise SourceError(f"{p}: no such file (rebuild it: edgeloop datasets ndpi --out {p.parent})")
    df = pd.read_parquet(p)
    missing = {"file", "split"} - set(df.columns)
    if missing:
        raise SourceError(f"{p}: missing columns {sorted(missing)} (rebuild it)")
    out = df[df["split"] == split].reset_index(drop=True)
    out["label"] = LABEL
    out.attrs["edgeloop_split"] = f"ndpi/{split}"
    return out
