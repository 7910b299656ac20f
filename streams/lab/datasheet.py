"""The datasheet that travels with every generated dataset (JSON for code, Markdown for people).

It says what is in the data and how it was made: counts per class, per-class feature
summaries, every attack run with its parameters and flow count, the benign clients, the
capture and metering settings (NFStream timeouts included), tool versions, and the seed,
so a dataset can be regenerated and its numbers checked.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from streams.lab import tools
from streams.lab.labelling import BENIGN, GRACE_MS, RULE, span_counts
from streams.lab.scenarios import LABELS, SCENARIOS

DATASHEET_SCHEMA = "edgeloop.lab_datasheet/1"
SUMMARY_COLUMNS = ("duration_ms", "packets", "bytes", "src2dst_packets", "dst2src_packets",
                   "mean_ps", "max_ps", "mean_piat_ms", "syn_packets", "ack_packets",
                   "rst_packets", "fin_packets", "psh_packets")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def feature_summary(df) -> dict[str, dict[str, dict[str, float]]]:
    """Per class, per column: mean and the 5th/50th/95th percentiles."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, group in df.groupby("label"):
        cols = {}
        for col in SUMMARY_COLUMNS:
            s = group[col].astype(float)
            q = s.quantile([0.05, 0.5, 0.95])
            cols[col] = {"mean": round(float(s.mean()), 3), "p05": round(float(q.iloc[0]), 3),
                         "p50": round(float(q.iloc[1]), 3), "p95": round(float(q.iloc[2]), 3)}
        cols["distinct_dst_ports"] = {"count": int(group["dst_port"].nunique())}
        cols["protocols"] = {str(k): int(v) for k, v in group["protocol"].value_counts().items()}
        out[str(label)] = cols
    return out


def build_datasheet(opts, lab, df, meter_s: float, paths: dict[str, Path],
                    replay: dict | None = None) -> dict[str, Any]:
    per_span = span_counts(df, lab.spans)
    runs = [{"scenario": r.run.scenario, "run": r.run.index, "tool_argv": r.run.argv,
             "params": r.run.params, "start_ms": r.span.start_ms, "end_ms": r.span.end_ms,
             "seconds": round(r.seconds, 2), "exit_code": r.exit_code,
             "expected_flows": r.run.expected_flows, "flows": n,
             "max_packets": r.run.max_packets, "timeout_s": round(r.run.timeout_s, 1)}
            for r, n in zip(lab.runs, per_span)]
    attacker = lab.topology["attacker"]
    from_attacker = (df["src_ip"] == attacker) | (df["dst_ip"] == attacker)
    counts = {label: int((df["label"] == label).sum()) for label in LABELS}
    files = {k: {"file": p.name, "bytes": p.stat().st_size, "sha256": _sha256(p)}
             for k, p in paths.items() if p.exists()}
    return {
        "schema": DATASHEET_SCHEMA,
        "name": opts.name,
        "seed": opts.seed,
        "scale": opts.scale,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": _command(opts),
        "label_set": list(LABELS),
        "label_rule": RULE,
        "counts": counts,
        "flows": int(len(df)),
        "attacker_flows_labelled_benign": int((from_attacker & (df["label"] == BENIGN)).sum()),
        "scenarios": {name: {"tool": SCENARIOS[name].tool, "summary": SCENARIOS[name].summary,
                             "seconds": round(sec, 2)}
                      for name, sec in lab.scenario_seconds.items()},
        "runs": runs,
        "topology": lab.topology,
        "capture": {"interface": "victim eth0", "snaplen": opts.snaplen,
                    "packets": lab.capture.packets, "dropped_by_kernel": lab.capture.dropped,
                    "pcap_bytes": lab.capture.bytes, "max_packets": opts.max_capture_packets,
                    "lab_seconds": round(lab.seconds, 2)},
        "metering": {"meter": "nfstream", "idle_timeout_s": opts.idle_timeout,
                     "active_timeout_s": opts.active_timeout, "statistical_analysis": True,
                     "accounting": "link layer (wire length)", "seconds": round(meter_s, 3),
                     "flows_per_s": round(len(df) / meter_s, 1) if meter_s else None,
                     "label_grace_ms": GRACE_MS},
        "replay_pcap": replay or None,
        "feature_summary": feature_summary(df),
        "tools": tools.versions(),
        "python": sys.version.split()[0],
        "files": files,
    }


def _command(opts) -> str:
    """The CLI line that regenerates this dataset."""
    parts = [f"edgeloop lab generate --seed {opts.seed} --scale {opts.scale}",
             f"--out {opts.out_dir} --name {opts.name}"]
    if opts.scenarios not in (None, "all"):
        names = opts.scenarios if isinstance(opts.scenarios, str) else ",".join(opts.scenarios)
        parts.append(f"--scenarios {names}")
    if opts.n_clients != 6:
        parts.append(f"--clients {opts.n_clients}")
    if (opts.idle_timeout, opts.active_timeout) != (5, 30):
        parts.append(f"--idle-timeout {opts.idle_timeout} --active-timeout {opts.active_timeout}")
    if not opts.keep_pcap:
        parts.append("--no-pcap")
    elif opts.pcap_max_bytes:
        parts.append(f"--pcap-max-mb {opts.pcap_max_bytes / 1e6:g}")
    return " ".join(parts)


def render_markdown(sheet: dict[str, Any]) -> str:
    lines = [f"# Lab dataset `{sheet['name']}` (seed {sheet['seed']})", "",
             f"Generated {sheet['created_utc']} by `{sheet['command']}`.", "",
             f"**Labels.** {sheet['label_rule']}.", "",
             "| class | flows |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sheet["counts"].items()]
    lines += [f"| **total** | {sheet['flows']} |", "",
              f"Attacker flows labelled benign (outside every span): "
              f"{sheet['attacker_flows_labelled_benign']}.", "", "## Attack runs", "",
              "| scenario | run | seconds | exit | flows | expected | parameters |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for r in sheet["runs"]:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"| {r['scenario']} | {r['run']} | {r['seconds']} | {r['exit_code']} | "
                     f"{r['flows']} | {r['expected_flows']} | {params} |")
    topo = sheet["topology"]
    lines += ["", "## Hosts", "", f"Network {topo['net']} (namespaces only, no route out). "
              f"Victim {topo['victim']} (nginx, sshd, dnsmasq, iperf3); "
              f"attacker {topo['attacker']}.", "", "| client | address | profile | rate x |",
              "|---|---|---|---:|"]
    lines += [f"| {c['role']} | {c['addr']} | {c['profile']} | {c['rate']} |"
              for c in topo["clients"]]
    cap, met = sheet["capture"], sheet["metering"]
    lines += ["", "## Capture and metering", "",
              f"tcpdump on {cap['interface']}, snaplen {cap['snaplen']}: {cap['packets']} packets, "
              f"{cap['dropped_by_kernel']} dropped by the kernel, lab ran {cap['lab_seconds']} s.",
              f"NFStream, idle timeout {met['idle_timeout_s']} s, active timeout "
              f"{met['active_timeout_s']} s, statistical analysis on, {met['accounting']}: "
              f"{sheet['flows']} flows in {met['seconds']} s ({met['flows_per_s']} flows/s).",
              "", "## Feature summary (median [p05, p95])", ""]
    cols = ("duration_ms", "packets", "bytes", "mean_ps", "mean_piat_ms", "syn_packets",
            "rst_packets")
    lines += ["| class | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, summ in sheet["feature_summary"].items():
        cells = [f"{summ[c]['p50']:g} [{summ[c]['p05']:g}, {summ[c]['p95']:g}]" for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rp = sheet.get("replay_pcap")
    if rp:
        counts = ", ".join(f"{k} {v}" for k, v in rp["counts"].items())
        lines += ["", "## Replay pcap", "",
                  f"`{rp['file']}` ({rp['bytes']} bytes, {rp['packets']} packets, snaplen "
                  f"{rp['snaplen']}) is trimmed from the capture: {rp['how']}. Fraction kept: "
                  f"{rp['fraction_of_each_run']}. Re-metered with the same timeouts it gives "
                  f"{rp['flows']} flows ({counts}); {rp['flows_in_dataset_with_same_label']} of "
                  "them are rows of the dataset with the same flow id and label."]
    lines += ["", "## Tool versions", "", "| tool | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(sheet["tools"].items())]
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---:|---|"]
    lines += [f"| {f['file']} | {f['bytes']} | `{f['sha256'][:16]}…` |"
              for f in sheet["files"].values()]
    return "\n".join(lines) + "\n"


def write_datasheet(sheet: dict[str, Any], out_dir: Path, name: str) -> dict[str, Path]:
    paths = {"datasheet_json": out_dir / f"{name}.datasheet.json",
             "datasheet_md": out_dir / f"{name}.datasheet.md"}
    paths["datasheet_json"].write_text(json.dumps(sheet, indent=2) + "\n")
    paths["datasheet_md"].write_text(render_markdown(sheet))
    return paths
