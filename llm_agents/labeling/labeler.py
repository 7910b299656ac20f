"""Ask the LLM to label uncertain windows, in batches, and match its answers back.

    >>> labeler = Labeler(llm, class_names=["benign", "dos", "portscan"])
    >>> run = labeler.label_batch(uncertain_windows)       # list[UncertainWindow]
    >>> run.proposals    # LabelProposal per answered window (not yet accepted: see acceptance)
    >>> run.unanswered   # window ids the LLM skipped; run.failed: ids whose call failed

Windows go to the `label_windows` prompt `batch_size` at a time (default 20). Numbers are
rendered compactly (3 significant digits, one row per flow under a shared column list);
every traffic string is quoted inside a data block. The detector's verdict is left out
on purpose: a model shown it tends to echo it, and the detector's ranking is one of the
checks the answer is later judged against, so it must stay independent.

Answers for window ids that were not asked, and repeated answers, are dropped and
reported. A prompt that does not fit the model's context (the server's refusal, or the
client's estimate once it knows the context) is split in halves until it fits. A failed
call (an LLMError) marks its windows failed; a budget, rate-limit,
timeout or connection failure also stops the remaining batches, since they would fail
the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from pydantic import BaseModel, Field, field_validator

from contracts.records import FlowRecord, UncertainWindow
from llm_agents.client import LLMClient
from llm_agents.errors import (LLMBudgetExceeded, LLMContextExceeded, LLMError, LLMRateLimited, LLMTimeout,
                               LLMUnavailable)
from llm_agents.prompts import data_block

PURPOSE = "label"
NOVEL_PREFIX = "novel:"
_STOP_ON = (LLMBudgetExceeded, LLMRateLimited, LLMTimeout, LLMUnavailable)

# (column, what it means): the order of values in each rendered flow row.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("t_ms", "start, milliseconds after the window's first flow"),
    ("dst_ip", "destination address"), ("dst_port", "destination port"),
    ("proto", "IP protocol number (6 TCP, 17 UDP, 1 ICMP)"),
    ("dur_ms", "flow duration, milliseconds"), ("pkts", "packets, both directions"),
    ("fwd_pkts", "packets from the window's host"), ("bwd_pkts", "packets to it"),
    ("fwd_bytes", "bytes from the host"), ("bwd_bytes", "bytes to it"),
    ("mean_ps", "mean packet size, bytes"), ("mean_iat_ms", "mean packet inter-arrival, milliseconds"),
    ("syn", "SYN packets"), ("ack", "ACK packets"), ("psh", "PSH packets"), ("rst", "RST packets"),
    ("fin", "FIN packets"), ("app", "application seen by deep packet inspection"),
    ("sni", "requested server name (TLS SNI or HTTP Host); attacker-controlled"),
    ("ua", "HTTP user agent; attacker-controlled"),
)


class WindowLabel(BaseModel):
    window_id: str = Field(max_length=128)
    label: str = Field(max_length=96)
    # Range is checked by acceptance (an out-of-range value is `invalid` for that window
    # alone), so one bad item does not void the whole answer; the schema still says it.
    confidence: float = Field(json_schema_extra={"minimum": 0, "maximum": 1})
    rationale: str = ""

    @field_validator("label", "window_id")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @field_validator("rationale")
    @classmethod
    def _short(cls, v: str) -> str:
        return v[:300]


class WindowLabels(BaseModel):
    """The answer to `label_windows`; json_schema name `window_labels`."""

    window_labels: list[WindowLabel]


@dataclass(frozen=True)
class LabelProposal:
    """One LLM answer for one window, before acceptance. `source` records provenance."""

    window_id: str
    label: str
    confidence: float
    rationale: str
    model: str
    source: str = "llm"


@dataclass
class LabelBatch:
    proposals: list[LabelProposal] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (window_id, unknown_id | duplicate)
    failed: dict[str, str] = field(default_factory=dict)          # window_id -> LLMError kind
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    splits: int = 0            # prompts split in two because they did not fit the context

    def decided(self) -> set[str]:
        """Windows of this batch that already have an answer, no answer or a failure."""
        return {p.window_id for p in self.proposals} | set(self.unanswered) | set(self.failed)


def _num(x: float) -> int | float:
    """3 significant digits, as an int when whole: what a model needs, in few tokens."""
    v = float(f"{x:.3g}")
    return int(v) if v.is_integer() else v


def flow_row(f: FlowRecord, t0_ms: int, max_text: int) -> list[Any]:
    """One flow as a row of COLUMNS values."""
    nums = (f.first_seen_ms - t0_ms, f.dst_port, f.protocol, f.duration_ms, f.packets, f.src2dst_packets,
            f.dst2src_packets, f.src2dst_bytes, f.dst2src_bytes, f.mean_ps, f.mean_piat_ms, f.syn_packets,
            f.ack_packets, f.psh_packets, f.rst_packets, f.fin_packets)
    row: list[Any] = [_num(v) for v in nums]
    row.insert(1, f.dst_ip[:64])
    row += [f.application_name[:max_text], f.requested_server_name[:max_text], f.user_agent[:max_text]]
    return row


def label_variables(windows: Sequence[UncertainWindow], class_names: Sequence[str], *,
                    max_flows: int = 16, max_text: int = 160) -> dict[str, object]:
    """The `label_windows` template variables for one batch of windows."""
    rendered = []
    for w in windows:
        t0 = min((f.first_seen_ms for f in w.flows), default=0)
        rendered.append({"window_id": w.window_id, "key": w.key, "n_flows": len(w.flows),
                         "flows": [flow_row(f, t0, max_text) for f in w.flows[:max_flows]]})
    columns = "\n".join(f"{i + 1}. `{name}`: {text}" for i, (name, text) in enumerate(COLUMNS))
    return {"n_windows": len(windows), "columns": columns, "novel_prefix": NOVEL_PREFIX,
            "classes": data_block("classes", list(class_names)), "windows": data_block("windows", rendered)}


class Labeler:
    """Labels uncertain windows with an LLMClient; see the module docstring."""

    def __init__(self, client: LLMClient, class_names: Sequence[str], *, batch_size: int = 20,
                 max_flows: int = 16, max_text: int = 160, max_tokens: int | None = None,
                 purpose: str = PURPOSE) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.client, self.class_names = client, list(class_names)
        self.batch_size, self.max_flows, self.max_text = batch_size, max_flows, max_text
        self.max_tokens, self.purpose = max_tokens, purpose

    def variables(self, windows: Sequence[UncertainWindow]) -> dict[str, object]:
        return label_variables(windows, self.class_names, max_flows=self.max_flows, max_text=self.max_text)

    def label_batch(self, windows: Sequence[UncertainWindow]) -> LabelBatch:
        """Label `windows`, `batch_size` per LLM call; never raises an LLMError."""
        out = LabelBatch()
        stopped: LLMError | None = None
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start:start + self.batch_size]
            if stopped is not None:
                out.failed.update({w.window_id: stopped.kind for w in chunk})
                continue
            try:
                self._label_fitting(chunk, out)
            except LLMError as exc:
                done = out.decided()  # after a split, the halves already asked keep their answers
                out.failed.update({w.window_id: exc.kind for w in chunk if w.window_id not in done})
                if isinstance(exc, _STOP_ON):
                    stopped = exc
        return out

    def _label_fitting(self, chunk: Sequence[UncertainWindow], out: LabelBatch) -> None:
        """Label `chunk`, halving it while it does not fit the model's context (a window
        that does not fit alone fails with kind "context" and goes to a person)."""
        try:
            self._label_chunk(chunk, out)
        except LLMContextExceeded:
            if len(chunk) == 1:
                raise
            out.splits += 1
            half = len(chunk) // 2
            for part in (chunk[:half], chunk[half:]):
                try:
                    self._label_fitting(part, out)
                except LLMContextExceeded as exc:
                    out.failed.update({w.window_id: exc.kind for w in part})

    def _label_chunk(self, chunk: Sequence[UncertainWindow], out: LabelBatch) -> None:
        out.requests += 1
        # About 110 tokens per answered window (id, label, confidence, a sentence), with room.
        cap = self.max_tokens or 256 + 160 * len(chunk)
        res = self.client.complete_json("label_windows", self.variables(chunk), WindowLabels,
                                        purpose=self.purpose, max_tokens=cap)
        out.prompt_tokens += res.prompt_tokens
        out.completion_tokens += res.completion_tokens
        asked = {w.window_id for w in chunk}
        seen: set[str] = set()
        for item in res.data.window_labels:
            if item.window_id not in asked:
                out.dropped.append((item.window_id[:128], "unknown_id"))
            elif item.window_id in seen:
                out.dropped.append((item.window_id, "duplicate"))
            else:
                seen.add(item.window_id)
                out.proposals.append(LabelProposal(item.window_id, item.label, item.confidence,
                                                   item.rationale, res.model, source=f"llm:{res.model}"))
        out.unanswered += [w.window_id for w in chunk if w.window_id not in seen]
