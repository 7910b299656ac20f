"""The datasheet that travels with every generated dataset (JSON for code, Markdown for people).

It says what is in the data and how it was made: counts per class and per variant,
per-class feature summaries, every attack run with its tool, variant, parameters and flow
count, the hosts and benign clients, the link conditions of every host, the capture and
metering settings (NFStream timeouts included), tool versions, and the seed, so a dataset
can be regenerated and its numbers checked.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from trafficlab import tools
from trafficlab.labelling import BENIGN, GRACE_MS, RULE, span_counts
from trafficlab.capture import INTERFACE
from trafficlab.scenarios import HELDOUT_KINDS, LABELS, SCENARIOS, variants_table

DATASHEET_SCHEMA = "edgeloop.lab_datasheet/2"
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
    runs = [{"scenario": r.run.scenario, "run": r.run.index, "variant": r.run.variant,
             "tool": r.run.tool, "match": r.run.match, "tool_argv": r.run.argv,
             "params": r.run.params, "start_ms": r.span.start_ms, "end_ms": r.span.end_ms,
             "seconds": round(r.seconds, 2), "exit_code": r.exit_code,
             "expected_flows": r.run.expected_flows, "flows": n,
             "max_packets": r.run.max_packets, "timeout_s": round(r.run.timeout_s, 1)}
            for r, n in zip(lab.runs, per_span)]
    attackers = lab.topology.get("attackers") or [lab.topology["attacker"]]
    from_attacker = df["src_ip"].isin(attackers) | df["dst_ip"].isin(attackers)
    counts = {label: int((df["label"] == label).sum()) for label in LABELS}
    per_variant: dict[str, int] = {}
    for r, n in zip(lab.runs, per_span):
        key = f"{r.run.scenario}/{r.run.variant}"
        per_variant[key] = per_variant.get(key, 0) + n
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
        "classes_run": sorted({r.run.scenario for r in lab.runs}),
        "held_out_kinds": list(HELDOUT_KINDS),
        "variants_selected": opts.variants,
        "label_rule": RULE,
        "counts": counts,
        "counts_per_variant": per_variant,
        "ip_versions": {str(k): int(v) for k, v in df["ip_version"].value_counts().items()},
        "flows": int(len(df)),
        "attacker_flows_labelled_benign": int((from_attacker & (df["label"] == BENIGN)).sum()),
        "scenarios": {name: {"tools": sorted({r.run.tool for r in lab.runs if r.run.scenario == name}),
                             "variants": sorted({r.run.variant for r in lab.runs if r.run.scenario == name}),
                             "summary": SCENARIOS[name].summary, "seconds": round(sec, 2)}
                      for name, sec in lab.scenario_seconds.items()},
        "variant_registry": variants_table(),
        "conditions": lab.conditions,
        "link_counters": lab.link_counters or None,
        "runs": runs,
        "topology": lab.topology,
        "capture": {"interface": INTERFACE, "snaplen": opts.snaplen,
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
    parts.append(f"--variants {opts.variants} --conditions {opts.conditions}")
    if opts.runs_per_class:
        parts.append(f"--runs {opts.runs_per_class}")
    if opts.n_clients != 6:
        parts.append(f"--clients {opts.n_clients}")
    if opts.n_servers != 2:
        parts.append(f"--servers {opts.n_servers}")
    if opts.n_attackers != 1:
        parts.append(f"--attackers {opts.n_attackers}")
    if opts.snaplen != 384:
        parts.append(f"--snaplen {opts.snaplen}")
    if opts.benign_only_s is not None:
        parts.append(f"--benign-only {opts.benign_only_s:g}")
    if not opts.lan_chatter:
        parts.append("--no-lan")
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
              f"{sheet['attacker_flows_labelled_benign']}. Variants selected: "
              f"`{sheet['variants_selected']}`; held-out kinds (never in training sets): "
              f"{', '.join(sheet['held_out_kinds'])}. Flows per IP version: {sheet['ip_versions']}.",
              "", "## Attack runs", "",
              "| scenario | variant | tool | match | run | seconds | exit | flows | expected | parameters |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in sheet["runs"]:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"| {r['scenario']} | {r['variant']} | {r['tool']} | {r['match']} | {r['run']} | "
                     f"{r['seconds']} | {r['exit_code']} | {r['flows']} | {r['expected_flows']} | {params} |")
    lines += ["", "| variant | flows |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(sheet["counts_per_variant"].items())]
    lines += _conditions_md(sheet["conditions"])
    topo = sheet["topology"]
    servers = ", ".join(f"{h['role']} {h['addr']}" for h in topo.get("servers", []))
    lines += ["", "## Hosts", "", f"Network {topo['net']} (namespaces only, no route out). "
              f"Victim {topo['victim']} (nginx, sshd, dnsmasq with DHCP, iperf3, vsftpd, smbd, "
              f"mosquitto); servers {servers or 'none'} (dnsmasq, NTP, snmpd, memcached); "
              f"attackers {', '.join(topo.get('attackers', [topo['attacker']]))}.", "",
              "| client | address | profile | rate x |", "|---|---|---|---:|"]
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


def _conditions_md(cond: dict) -> list[str]:
    lines = ["", "## Link conditions", ""]
    if not cond or cond.get("mode") == "none":
        return lines + ["None: every host on the bare bridge (MTU 1500)."]
    lines += [f"Mode `{cond['mode']}`, MTU {cond['mtu']}, applied by {cond['applied_by']}. A host's "
              "delay is the round trip its access link adds (half each way), jitter the standard "
              "deviation of each direction, loss per direction.", "",
              "| host | delay ms | jitter ms | loss | rate Mbit/s |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r} | {c['delay_ms']} | {c['jitter_ms']} | {c['loss']:.2%} | {c['rate_mbit'] or '-'} |"
              for r, c in cond["links"].items()]
    extra = cond.get("train_ranges") or cond.get("heldout_profile")
    if extra:
        lines += ["", "Drawn from: " + "; ".join(f"{k}: {v}" for k, v in extra.items()) + "."]
    return lines


def write_datasheet(sheet: dict[str, Any], out_dir: Path, name: str) -> dict[str, Path]:
    paths = {"datasheet_json": out_dir / f"{name}.datasheet.json",
             "datasheet_md": out_dir / f"{name}.datasheet.md"}
    paths["datasheet_json"].write_text(json.dumps(sheet, indent=2) + "\n")
    paths["datasheet_md"].write_text(render_markdown(sheet))
    return paths
