"""Open-world manifests: which captures to judge the detector on, and what each should be.

A manifest is TOML (or JSON with the same keys). Paths are relative to the manifest file.

    name = "foreign"                          # optional; the report's name
    [defaults]                                # optional; any capture key below
    scope = "all"

    [[capture]]
    name = "ndpi-test"                        # optional; default: the path's stem
    path = "../ndpi/flows.parquet"            # a pcap/pcapng/cap, or a CSV/Parquet flow table
    split = "test"                            # keep rows whose `split` column is "test"
    capture_column = "file"                   # each value of this column is a separate capture
    expect = "benign"                         # benign | a class name | attack (a kind not trained on)
    scope = "all"                             # all | top_key | labels
    group = "ndpi-test benign"                # aggregation name; default: the capture's name

    [[capture]]
    glob = "../../../shared/captures/ndpi/*"  # instead of path: every matching file, each a capture
    split = "test"                            # on capture files: the nDPI file split (see below)
    sensor = "ndpi"                           # the sensor name flow ids are made with
    idle_timeout = 5                          # NFStream timeouts for pcaps (default 5 s / 30 s)
    active_timeout = 30

    [[capture]]
    path = "../lab/heldout.parquet"
    scope = "labels"                          # each window's own label is its expectation
    labels = "../lab/heldout.labels.json"     # CSV/Parquet flow_id,label or spans, or lab JSON
    separate_runs = true                      # lab captures: each attack run from a host of its own

`split` on a table keeps the rows whose `split` column equals it; on capture files found
by `glob` it keeps the files that `inference.datasets.ndpi.split_files` puts in that half,
computed over every capture file in the file's directory. `scope = "labels"` needs a
`labels` file or a `label` column in the table; `expect` is then not used.
`separate_runs` (lab labels JSON only) gives each attack run an attacker address of its own
(inference.datasets.lab.separate_attack_runs), as training does: the lab runs one attack
after another from the same hosts, and a host's history would carry one into the next.

Errors name the manifest, the entry and the field: ManifestError (a SourceError).
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.errors import SourceError

MANIFEST_SCHEMA = "edgeloop.openworld_manifest/1"
SCOPES = ("all", "top_key", "labels")
ENTRY_KEYS = ("name", "path", "glob", "split", "capture_column", "expect", "scope", "labels",
              "group", "sensor", "idle_timeout", "active_timeout", "separate_runs")
TOP_KEYS = ("schema", "name", "description", "defaults", "capture")


class ManifestError(SourceError):
    """A manifest that cannot be used; names the manifest, the entry and the field."""

    def __init__(self, manifest: Path, problem: str, entry: str | None = None,
                 field: str | None = None) -> None:
        self.manifest, self.entry, self.field, self.problem = manifest, entry, field, problem
        where = "".join(f": {p}" for p in (entry, field) if p)
        super().__init__(f"{manifest}{where}: {problem}")


@dataclass(frozen=True)
class Entry:
    """One `[[capture]]` entry, validated, with paths made absolute."""

    index: int
    name: str
    expect: str | None
    scope: str
    group: str
    path: Path | None = None
    glob: str | None = None
    split: str | None = None
    capture_column: str | None = None
    labels: Path | None = None
    sensor: str = "pcap"
    idle_timeout: int | None = None
    active_timeout: int | None = None
    separate_runs: bool = False

    @property
    def label(self) -> str:
        return f"capture #{self.index + 1} ({self.name})"


@dataclass(frozen=True)
class Manifest:
    path: Path
    name: str
    description: str
    entries: list[Entry]


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a TOML or JSON manifest; raises ManifestError."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(p, "no such file")
    try:
        doc = json.loads(p.read_text()) if p.suffix.lower() == ".json" else tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(p, f"not valid {'JSON' if p.suffix.lower() == '.json' else 'TOML'}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestError(p, "the top level must be a table")
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise ManifestError(p, f"unknown key(s) {unknown}; expected {list(TOP_KEYS)}")
    if doc.get("schema", MANIFEST_SCHEMA) != MANIFEST_SCHEMA:
        raise ManifestError(p, f"schema {doc['schema']!r}: this code reads {MANIFEST_SCHEMA}", field="schema")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ManifestError(p, "must be a table of capture keys", field="defaults")
    raw = doc.get("capture")
    if not isinstance(raw, list) or not raw:
        raise ManifestError(p, "no captures: add one or more [[capture]] entries", field="capture")
    entries = [_entry(p, i, {**defaults, **e} if isinstance(e, dict) else e) for i, e in enumerate(raw)]
    seen: dict[str, int] = {}
    for e in entries:
        if e.name in seen:
            raise ManifestError(p, f"duplicate name (also capture #{seen[e.name] + 1}); give each a `name`",
                                e.label, "name")
        seen[e.name] = e.index
    return Manifest(p, str(doc.get("name") or p.stem), str(doc.get("description", "")), entries)


def _entry(mf: Path, i: int, raw: Any) -> Entry:
    if not isinstance(raw, dict):
        raise ManifestError(mf, "must be a table", f"capture #{i + 1}")
    where = f"capture #{i + 1}" + (f" ({raw['name']})" if isinstance(raw.get("name"), str) else "")

    def fail(field: str, problem: str) -> ManifestError:
        return ManifestError(mf, problem, where, field)

    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        raise fail(unknown[0], f"unknown key; expected one of {', '.join(ENTRY_KEYS)}")
    for key in ("name", "path", "glob", "split", "capture_column", "expect", "scope", "labels",
                "group", "sensor"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise fail(key, f"must be a non-empty string, got {raw[key]!r}")
    for key in ("idle_timeout", "active_timeout"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] <= 0):
            raise fail(key, f"must be a positive integer (seconds), got {raw[key]!r}")
    if "separate_runs" in raw and (not isinstance(raw["separate_runs"], bool)
                                   or (raw["separate_runs"] and "labels" not in raw)):
        raise fail("separate_runs", "must be true or false, and true only with a lab `labels` JSON")
    if ("path" in raw) == ("glob" in raw):
        raise fail("path", "give exactly one of `path` or `glob`")
    scope = raw.get("scope", "all")
    if scope not in SCOPES:
        raise fail("scope", f"{scope!r}: use one of {', '.join(SCOPES)}")
    if scope != "labels" and "expect" not in raw:
        raise fail("expect", "missing: benign, a class name, or attack")
    if "labels" in raw and scope != "labels":
        raise fail("labels", f"a labels file is only used with scope = \"labels\" (scope is {scope!r})")
    base = mf.parent
    path = (base / raw["path"]) if "path" in raw else None
    name = raw.get("name") or (path.stem if path else raw["glob"])
    return Entry(index=i, name=name, expect=raw.get("expect"), scope=scope,
                 group=raw.get("group", name), path=path,
                 glob=str(base / raw["glob"]) if "glob" in raw else None, split=raw.get("split"),
                 capture_column=raw.get("capture_column"),
                 labels=(base / raw["labels"]) if "labels" in raw else None,
                 sensor=raw.get("sensor", "pcap"), idle_timeout=raw.get("idle_timeout"),
                 active_timeout=raw.get("active_timeout"), separate_runs=raw.get("separate_runs", False))
