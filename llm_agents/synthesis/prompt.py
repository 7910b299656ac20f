"""What the synthesizer tells the LLM and what it accepts back.

The prompt (`prompts/synthesize_windows.md`) has the paper's four parts: the task, real
examples, an explanation of every field (meaning, unit, valid range, from
`GENERATED_FIELDS`), and the output format (`SyntheticWindows`, schema name
``synthetic_windows``). Feedback from the previous round is a fifth, optional part
(`prompts/synthesize_feedback.md`).

Only numeric fields reach the prompt. The real examples carry no addresses, ids or text
(`application_name`, `requested_server_name`, `user_agent` are attacker-controlled and not
needed to imitate a class), so no traffic content can act as an instruction; the numbers
still go in through `data_block`.

The answer is parsed defensively: a flow that does not validate is dropped with its
window and counted (`malformed_flows`), the rest of the answer is kept.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.json_schema import SkipJsonSchema

from llm_agents.synthesis.baselines import class_rows
from llm_agents.synthesis.fidelity import FidelityReport
from llm_agents.prompts import data_block, render

# (field, meaning, unit, valid range): the explanation part of the prompt, and the
# columns of the examples and of the answer, in this order.
GENERATED_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("gap_ms",
     "time from the previous flow's start to this flow's start (0 for a window's first flow)",
     "ms", ">= 0; a window's gaps add up to less than $horizon_ms"),
    ("new_dst",
     "whether this flow goes to a different destination host than the previous flow",
     "boolean", "false for the first flow; the examples write it as 0 or 1"),
    ("protocol", "IP protocol number", "-", "6 TCP, 17 UDP, 1 ICMP"),
    ("src_port",
     "source port (clients use ephemeral ports 32768-60999)",
     "-", "0-65535; 0 for ICMP"),
    ("dst_port", "destination port (the service)", "-", "0-65535; 0 for ICMP"),
    ("duration_ms",
     "time from the flow's first to its last packet",
     "ms", ">= 0; 0 for one packet"),
    ("src2dst_packets",
     "packets from the initiator to the responder",
     "packets", "integer >= 0; with dst2src_packets at least 1 in total"),
    ("dst2src_packets", "packets from the responder back", "packets", "integer >= 0"),
    ("src2dst_bytes",
     "bytes from the initiator, IP headers included",
     "bytes", "integer; between min_ps and max_ps times src2dst_packets; 0 if no packets"),
    ("dst2src_bytes",
     "bytes from the responder, IP headers included",
     "bytes", "integer; between min_ps and max_ps times dst2src_packets; 0 if no packets"),
    ("min_ps",
     "smallest packet in the flow, IP header included",
     "bytes", ">= 20 (the IPv4 header); TCP SYN without options is 40"),
    ("max_ps",
     "largest packet in the flow",
     "bytes", "min_ps to 65535; equal to min_ps for one packet"),
    ("stddev_ps",
     "sample standard deviation (n - 1) of packet sizes",
     "bytes", "0 for one packet; exactly (max_ps - min_ps) / 1.414 for two packets"),
    ("mean_piat_ms",
     "mean time between consecutive packets of the flow",
     "ms", "exactly duration_ms / (packets - 1); 0 for one packet"),
    ("stddev_piat_ms",
     "sample standard deviation of the time between packets",
     "ms", "0 for up to two packets; exactly (max_piat_ms - mean_piat_ms) x 1.414 for three"),
    ("max_piat_ms",
     "longest time between consecutive packets",
     "ms", "mean_piat_ms to duration_ms; 0 for one packet"),
    ("syn_packets",
     "packets with the TCP SYN flag",
     "packets", "integer 0 to packets; 0 unless protocol is 6"),
    ("ack_packets",
     "packets with the TCP ACK flag",
     "packets", "integer 0 to packets; 0 unless TCP"),
    ("psh_packets",
     "packets with the TCP PSH flag",
     "packets", "integer 0 to packets; 0 unless TCP"),
    ("rst_packets",
     "packets with the TCP RST flag",
     "packets", "integer 0 to packets; 0 unless TCP"),
    ("fin_packets",
     "packets with the TCP FIN flag",
     "packets", "integer 0 to packets; 0 unless TCP"),
    ("urg_packets",
     "packets with the TCP URG flag",
     "packets", "integer 0 to packets; 0 unless TCP"),
    ("src2dst_syn_packets",
     "SYN packets from the initiator",
     "packets", "integer 0 to src2dst_packets"),
    ("dst2src_syn_packets",
     "SYN packets from the responder (SYN-ACKs)",
     "packets", "integer 0 to dst2src_packets"),
    ("dst2src_rst_packets",
     "RST packets from the responder (closed port answers)",
     "packets", "integer 0 to min(rst_packets, dst2src_packets)"),
)
FIELD_NAMES = tuple(f[0] for f in GENERATED_FIELDS)

# What the lab's classes are, for the task description. Unknown classes get none.
CLASS_HINTS = {
    "benign": "ordinary traffic: web, DNS, SSH sessions and similar, completing normally",
    "syn_scan":
        "a TCP SYN port scan: one host probes many ports with single SYN packets; closed ports "
        "answer RST",
    "fin_scan":
        "a TCP FIN scan: one host probes many ports with lone FIN packets; closed ports answer "
        "RST, open ones stay silent",
    "syn_flood": "a SYN flood: a burst of SYN packets at one service, handshakes never completed",
    "slow_http_dos":
        "a slow HTTP denial of service (slowloris-style): long-lived HTTP connections that trickle"
        " bytes to keep server slots busy",
    "ssh_bruteforce":
        "SSH password guessing: many short SSH sessions to port 22 from one host, each a handshake"
        " plus a few login attempts",
}
RULE_HELP = {
    "bytes<20*packets":
        "every packet carries at least a 20-byte IP header: bytes >= 20 x packets, per direction "
        "too",
    "bytes_outside_ps_range":
        "bytes must lie between min_ps x packets and max_ps x packets, per direction too",
    "bytes_vs_ps_extremes":
        "the smallest and largest packets are both in the flow: (n-1) min_ps + max_ps <= bytes <= "
        "min_ps + (n-1) max_ps",
    "flag>packets": "a flag count cannot exceed the flow's packets",
    "tcp_flags_on_non_tcp": "only TCP (protocol 6) has SYN/ACK/PSH/RST/FIN/URG flags",
    "piat_sum_mismatch":
        "the gaps between packets add up to the duration: mean_piat_ms x (packets - 1) = "
        "duration_ms",
    "piat>duration": "max_piat_ms cannot exceed duration_ms",
    "single_packet_time": "a one-packet flow has duration 0 and no inter-arrival times",
    "single_packet_sizes": "a one-packet flow has min_ps = max_ps and stddev_ps 0",
    "ps_order": "min_ps <= mean size <= max_ps",
    "ps<header": "min_ps is at least the 20-byte IP header",
    "syn_direction": "directional SYN counts must fit their direction's packets and syn_packets",
    "rst_direction": "dst2src_rst_packets must fit dst2src_packets and rst_packets",
    "bytes_without_packets": "a direction with no packets has no bytes",
    "ps_spread":
        "stddev_ps is a sample standard deviation: it must fit min_ps, max_ps and the mean "
        "size (for two packets exactly (max_ps - min_ps) / 1.414)",
    "two_packet_sizes":
        "with one packet each way, each direction's bytes equal min_ps or max_ps",
    "piat_spread":
        "stddev_piat_ms must fit the mean and max gap (for three packets exactly "
        "(max_piat_ms - mean_piat_ms) x 1.414)",
    "single_gap_piat": "a two-packet flow has one gap: max_piat_ms = duration_ms, stddev 0",
    "window_span": "a window's gaps must add up to less than the window horizon",
}
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class SynthFlow(BaseModel):
    """One generated flow: the numeric fields of a FlowRecord plus its place in the window."""

    model_config = ConfigDict(extra="ignore")

    gap_ms: float = Field(ge=0)
    new_dst: bool
    protocol: int
    src_port: int
    dst_port: int
    duration_ms: float
    src2dst_packets: int
    dst2src_packets: int
    src2dst_bytes: int
    dst2src_bytes: int
    min_ps: float
    max_ps: float
    stddev_ps: float
    mean_piat_ms: float
    stddev_piat_ms: float
    max_piat_ms: float
    syn_packets: int
    ack_packets: int
    psh_packets: int
    rst_packets: int
    fin_packets: int
    urg_packets: int
    src2dst_syn_packets: int
    dst2src_syn_packets: int
    dst2src_rst_packets: int


class SynthWindow(BaseModel):
    flows: list[SynthFlow]


class SyntheticWindows(BaseModel):
    """The answer: generated windows, each a list of flows in time order."""

    # Parsed leniently: a flow that does not validate is dropped with its window and counted
    # in `malformed_flows` (an entry with no flow list counts as one), instead of failing
    # the whole answer. Neither counter is part of the JSON schema the model sees.

    model_config = ConfigDict(title="synthetic_windows", extra="ignore")

    windows: list[SynthWindow]
    malformed_flows: SkipJsonSchema[int] = 0
    malformed: SkipJsonSchema[list[str]] = []

    @model_validator(mode="before")
    @classmethod
    def _salvage(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("windows"), list):
            return data
        windows: list[dict[str, Any]] = []
        bad, notes = 0, []
        for i, w in enumerate(data["windows"]):
            flows = w.get("flows") if isinstance(w, dict) else w
            if not isinstance(flows, list) or not flows:
                bad += 1
                notes.append(f"window {i}: no flows")
                continue
            good = []
            for j, f in enumerate(flows):
                try:
                    good.append(SynthFlow.model_validate(f))
                except ValidationError as exc:
                    err = exc.errors()[0]
                    notes.append(f"window {i} flow {j}: {'.'.join(map(str, err['loc']))}: {err['msg']}")
            if len(good) == len(flows):
                windows.append({"flows": good})
            else:
                bad += len(flows) - len(good)
        return {"windows": windows, "malformed_flows": bad, "malformed": notes[:20]}


def check_label(label: str) -> str:
    """A class name safe to write into a prompt verbatim (it names the task)."""
    if not _LABEL_RE.match(label):
        raise ValueError(f"class name {label!r} must match {_LABEL_RE.pattern} to go into a prompt")
    return label


def example_rows(real: pd.DataFrame, label: str) -> list[list[list[float]]]:
    """Real windows of `label` as lists of rows of `FIELD_NAMES` values (numbers only)."""
    rows = class_rows(real, label)
    if rows.empty:
        return []
    vals = rows[list(FIELD_NAMES)].astype(float).to_numpy()
    vals = np.vectorize(_round)(vals) if len(vals) else vals
    out: list[list[list[float]]] = []
    for _, grp in pd.Series(range(len(rows))).groupby(rows["window_id"].to_numpy(), sort=False):
        out.append([list(map(_num, vals[i])) for i in grp.to_numpy()])
    return out


def _round(v: float) -> float:
    """Whole numbers exactly (counts, ports, bytes); others to 4 significant digits or 0.1."""
    if float(v).is_integer():
        return v
    return float(f"{v:.4g}") if abs(v) < 1000 else round(v, 1)


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def feature_guide(horizon_ms: float) -> str:
    lines = ["| field | meaning | unit | valid range |", "|---|---|---|---|"]
    for name, meaning, unit, rng in GENERATED_FIELDS:
        rng = rng.replace("$horizon_ms", f"{horizon_ms:.0f} ms")
        lines.append(f"| `{name}` | {meaning} | {unit} | {rng} |")
    return "\n".join(lines)


def length_hint(lengths: np.ndarray, k: int) -> str:
    if len(lengths) == 0:
        return f"Windows hold 1 to {k} flows."
    lo, med, hi = int(lengths.min()), int(np.median(lengths)), int(lengths.max())
    if lo == hi:
        return f"Every real window of this class holds {lo} flows; write {lo} flows per window."
    return (f"Real windows of this class hold {lo} to {hi} flows (median {med}); vary the "
            f"count the same way, never above {k}.")


def prompt_variables(label: str, examples: list[list[list[float]]], *, n_windows: int, k: int,
                     horizon_ms: float, lengths: np.ndarray, feedback: str) -> dict[str, object]:
    """Everything `synthesize_windows.md` needs."""
    hint = CLASS_HINTS.get(label, "no description is on file; infer the behaviour from the examples")
    return {
        "label": check_label(label), "class_hint": hint, "n_windows": str(n_windows),
        "n_examples": str(len(examples)), "k": str(k), "horizon_ms": f"{horizon_ms:.0f}",
        "length_hint": length_hint(lengths, k), "columns": ", ".join(f"`{c}`" for c in FIELD_NAMES),
        "examples": data_block("examples", examples), "feature_guide": feature_guide(horizon_ms),
        "feedback": feedback,
    }


def feedback_text(round_no: int, report: FidelityReport | None, *, asked: int, valid: int,
                  violations: dict[str, int], kept: bool | None, f1_before: float,
                  f1_after: float | None, n_worst: int = 3) -> str:
    """The feedback part for the next prompt: the previous batch's worst findings."""
    lines = []
    if report is not None and report.n_synthetic:
        if report.copied_fraction > 0:
            lines.append(f"- {report.copied_fraction:.0%} of your windows copied a real example; "
                         "write new windows instead.")
        if report.auc >= 0.5:
            lines.append(f"- A classifier told your windows apart from real ones with ROC AUC "
                         f"{report.auc:.2f} (0.5 means indistinguishable, 1.0 means always).")
        worst = report.worst(n_worst)
        if worst:
            lines.append("- The features furthest from the real windows, worst first; move "
                         "these towards the real values:")
            lines += [f"  - {d.describe()}" for d in worst]
    if violations:
        lines.append("- Flows dropped for breaking physical rules (rule: count, and what it requires):")
        lines += [f"  - {rule}: {n}; {RULE_HELP.get(rule, 'see the field table')}"
                  for rule, n in sorted(violations.items(), key=lambda kv: -kv[1])[:6]]
    if kept is not None and f1_after is not None:
        verdict = "kept" if kept else "dropped"
        lines.append(f"- The batch was {verdict}: macro-F1 on real validation windows went from "
                     f"{f1_before:.3f} to {f1_after:.3f} with it.")
    return render("synthesize_feedback", round=str(round_no), asked=str(asked), valid=str(valid),
                  findings="\n".join(lines) or "- No batch came back to score.")
