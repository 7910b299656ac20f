"""Blueprints as data: an intent, assumptions, explicit steps and the KPIs they must meet.

A blueprint (`edgeloop.blueprint/1`) is the Hermes-style plan behind a policy. Each step
is functional (computes something from the twin's data) or operational (sets a policy
action), names its inputs and outputs, and gives the formula and an explanation a person
can check. The Coder writes one Python function per step, named after the step, taking
the step's inputs as keyword arguments and returning a dict of its outputs. The last
step is operational and outputs `policy`.

    >>> intent = parse_intent("stop the scan from 10.9.0.66 without hurting the web service")
    >>> intent.action, intent.sources
    ('block_source', ['10.9.0.66'])
    >>> print(render_markdown(blueprint)); print(render_yaml(blueprint))

The values every step can read without computing them are GIVEN: `flows` and `windows`
(the twin's read-only data, dicts of numpy arrays), `intent` (this intent as a dict),
`class_names` and `alert_threshold`.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.policy_model import Address, Network, Service
from llm_agents.twin.model import KPI_CATALOGUE

BLUEPRINT_SCHEMA = "edgeloop.blueprint/1"
INTENT_SCHEMA = "edgeloop.intent/1"
ACTIONS = ("block_source", "rate_limit_source", "raise_class_threshold", "isolate_host",
           "allow_list_service", "suppress_alerts")
GIVEN = {
    "flows": "dict of numpy arrays, one row per flow: first_seen_ms, duration_ms, src_ip, dst_ip, "
             "src_port, dst_port, protocol, packets, bytes, syn_packets, fin_packets, rst_packets, "
             "ack_packets, psh_packets, window (row in `windows`, or -1)",
    "windows": "dict of numpy arrays, one row per detector window: key (the source address), "
               "predicted (class), confidence, n_flows",
    "intent": "this intent as a dict: text, action, sources, hosts, services, attack, rate_pps, "
              "min_confidence, expires_s",
    "class_names": "the detector's classes, benign first",
    "alert_threshold": "the confidence at or above which a non-benign window alerts today",
}
Action = Literal["block_source", "rate_limit_source", "raise_class_threshold", "isolate_host",
                 "allow_list_service", "suppress_alerts"]
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
Prose = Annotated[str, Field(max_length=2000)]
Comparator = Literal["<=", ">=", "<", ">", "=="]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KPI(_Model):
    """A twin KPI (see llm_agents.twin.model.KPI_CATALOGUE) and the target it must meet."""

    name: str = Field(max_length=64)
    comparator: Comparator
    target: float = Field(allow_inf_nan=False)
    why: Prose = ""

    @model_validator(mode="after")
    def _known(self) -> "KPI":
        if self.name not in KPI_CATALOGUE:
            raise ValueError(f"unknown KPI {self.name!r}; the twin reports: {', '.join(KPI_CATALOGUE)}")
        return self

    def __str__(self) -> str:
        return f"{self.name} {self.comparator} {self.target:g}"


class Step(_Model):
    name: Identifier
    kind: Literal["functional", "operational"]
    inputs: list[Identifier] = Field(max_length=12)
    outputs: list[Identifier] = Field(min_length=1, max_length=8)
    formula: Prose = Field(min_length=1)
    explanation: Prose = Field(min_length=1)


class Intent(_Model):
    """What an operator (or an alert aggregate) asks for, with the fields a policy needs."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["edgeloop.intent/1"] = Field(INTENT_SCHEMA, alias="schema")
    text: str = Field(min_length=1, max_length=2000)
    origin: Literal["operator", "alert"] = "operator"
    action: Action | None = None
    sources: list[Network] = Field(default_factory=list, max_length=64)
    hosts: list[Address] = Field(default_factory=list, max_length=64)
    services: list[Service] = Field(default_factory=list, max_length=64)
    attack: str | None = Field(None, max_length=64)
    rate_pps: float | None = Field(None, gt=0, allow_inf_nan=False)
    min_confidence: float | None = Field(None, ge=0, le=1)
    expires_s: int = Field(3600, ge=60, le=7 * 86400)
    targets: list[KPI] = Field(default_factory=list, max_length=16)

    def for_code(self) -> dict[str, Any]:
        """The intent as the `intent` input of step functions (plain JSON)."""
        return self.model_dump(mode="json", exclude={"schema_", "targets"})

    def signature(self) -> tuple[str, tuple[str, ...]]:
        """What kind of intent this is, for reuse: the action and which targets it names."""
        kinds = tuple(k for k in ("sources", "hosts", "services", "attack", "rate_pps", "min_confidence")
                      if getattr(self, k))
        return (self.action or "unknown", kinds)

    def required_kpis(self) -> list[KPI]:
        """The operator's targets, else the defaults for the action."""
        return list(self.targets) or [KPI(**k) for k in DEFAULT_TARGETS.get(self.action or "", [])]


DEFAULT_TARGETS: dict[str, list[dict[str, Any]]] = {
    "block_source": [dict(name="attack_flows_stopped_frac", comparator=">=", target=0.95),
                     dict(name="benign_flows_hurt_frac", comparator="<=", target=0.01)],
    "rate_limit_source": [dict(name="attack_packets_stopped_frac", comparator=">=", target=0.5),
                          dict(name="benign_flows_hurt_frac", comparator="<=", target=0.01)],
    "raise_class_threshold": [dict(name="false_alert_reduction_frac", comparator=">=", target=0.5),
                              dict(name="true_alerts_kept_frac", comparator=">=", target=0.8)],
    "isolate_host": [dict(name="attack_flows_stopped_frac", comparator=">=", target=0.9)],
    "allow_list_service": [dict(name="false_alert_reduction_frac", comparator=">=", target=0.3),
                           dict(name="true_alerts_kept_frac", comparator=">=", target=0.9),
                           dict(name="benign_flows_hurt", comparator="<=", target=0)],
    "suppress_alerts": [dict(name="false_alert_reduction_frac", comparator=">=", target=0.3),
                        dict(name="true_alerts_kept_frac", comparator=">=", target=0.8)],
}


class BlueprintDraft(_Model):
    """A blueprint without its intent: the shape the Designer's LLM answers with."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="blueprint")

    name: Identifier
    action: Action
    assumptions: list[Prose] = Field(max_length=12)
    steps: list[Step] = Field(min_length=1, max_length=12)
    kpis: list[KPI] = Field(min_length=1, max_length=12)


class Blueprint(BlueprintDraft):
    """A versioned blueprint: the draft plus the intent it answers."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, title="edgeloop_blueprint")

    schema_: Literal["edgeloop.blueprint/1"] = Field(BLUEPRINT_SCHEMA, alias="schema")
    intent: Intent

    @model_validator(mode="after")
    def _dataflow(self) -> "Blueprint":
        problems = dataflow_problems(self.steps)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def from_draft(cls, draft: BlueprintDraft, intent: Intent) -> "Blueprint":
        return cls(intent=intent, **draft.model_dump())

    def draft(self) -> BlueprintDraft:
        return BlueprintDraft(**self.model_dump(exclude={"schema_", "intent"}))

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def dataflow_problems(steps: list[Step]) -> list[str]:
    """What is wrong with how the steps feed each other (empty when nothing is)."""
    problems, known, names = [], set(GIVEN), set()
    for i, step in enumerate(steps):
        if step.name in names or step.name in GIVEN:
            problems.append(f"step {step.name!r}: name used twice or shadows a given value")
        names.add(step.name)
        unknown = [x for x in step.inputs if x not in known]
        if unknown:
            problems.append(f"step {step.name!r}: inputs {unknown} are neither given nor outputs of earlier steps")
        if step.kind == "functional" and "policy" in step.outputs:
            problems.append(f"step {step.name!r}: only an operational step may output `policy`")
        clash = [x for x in step.outputs if x in GIVEN]
        if clash:
            problems.append(f"step {step.name!r}: outputs {clash} overwrite given values")
        known.update(step.outputs)
    last = steps[-1] if steps else None
    if last is None or last.kind != "operational" or "policy" not in last.outputs:
        problems.append("the last step must be operational and output `policy`")
    return problems


def kpi_problems(blueprint: Blueprint) -> list[str]:
    """Required KPIs of the intent that the blueprint drops or weakens."""
    problems = []
    have = {(k.name, k.comparator): k.target for k in blueprint.kpis}
    for req in blueprint.intent.required_kpis():
        got = have.get((req.name, req.comparator))
        if got is None:
            problems.append(f"KPI {req} required by the intent is missing")
        elif (req.comparator in (">=", ">") and got < req.target) or (req.comparator in ("<=", "<") and got > req.target):
            problems.append(f"KPI {req.name} target {got:g} is weaker than the intent's {req}")
    return problems


# -- intents from text and from alerts ---------------------------------------------------------
_IP_RE = re.compile(r"(?<![\w.:])((?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?)(?::(\d{1,5}))?(?:/(tcp|udp))?(?![\w.])")
_PORT_RE = re.compile(r"\bport\s+(\d{1,5})(?:/(tcp|udp))?", re.IGNORECASE)
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:pps|packets?\s*(?:/|per)\s*s(?:ec(?:ond)?)?)", re.IGNORECASE)
_CONF_RE = re.compile(r"(?:confidence|threshold)\D{0,20}(0?\.\d+|1\.0)", re.IGNORECASE)
_ACTION_WORDS = (
    ("allow_list_service", r"allow[- ]?list|whitelist|never block|exempt"),
    ("isolate_host", r"\bisolat|quarantin|cut off"),
    ("rate_limit_source", r"rate[- ]?limit|throttl|\blimit\b"),
    ("raise_class_threshold", r"threshold|false (?:alerts|positives)|noisy|low[- ]confidence"),
    ("suppress_alerts", r"suppress|silence|\bmute"),
    ("block_source", r"\bblock|\bstop|\bdrop|\bban\b|deny"),
)


def parse_intent(text: str, *, classes: tuple[str, ...] = (), origin: str = "operator",
                 targets: list[KPI] | None = None) -> Intent:
    """A best-effort structured reading of operator text (the LLM Designer reads the text too)."""
    action = next((a for a, pat in _ACTION_WORDS if re.search(pat, text, re.IGNORECASE)), None)
    sources, hosts, services = [], [], []
    for m in _IP_RE.finditer(text):
        addr, port, proto = m.group(1), m.group(2), m.group(3)
        try:
            net = str(ipaddress.ip_network(addr, strict=False))
        except ValueError:
            continue
        net = net.removesuffix("/32")
        if port:
            services.append(Service(ip=net, port=int(port), proto=proto or "tcp"))
        elif action in ("isolate_host", "allow_list_service") and "/" not in net:
            hosts.append(net)
        else:
            sources.append(net)
    if action == "allow_list_service" and not services:
        port = _PORT_RE.search(text)
        if port and hosts:
            services = [Service(ip=h, port=int(port.group(1)), proto=port.group(2) or "tcp") for h in hosts]
    attack = next((c for c in classes if re.search(rf"\b{re.escape(c)}\b", text)), None)
    rate = _RATE_RE.search(text)
    conf = _CONF_RE.search(text)
    return Intent(text=text, origin=origin, action=action, sources=sources, hosts=hosts,
                  services=services, attack=attack, rate_pps=float(rate.group(1)) if rate else None,
                  min_confidence=float(conf.group(1)) if conf else None, targets=targets or [])


def intent_from_alert(alert: Any, action: str = "block_source", *, targets: list[KPI] | None = None) -> Intent:
    """An intent derived from an alert aggregate (contracts.records.Alert or its dict)."""
    a = alert.model_dump() if hasattr(alert, "model_dump") else dict(alert)
    srcs = [s for s in a.get("src_ips", []) if _is_ip(s)] or ([a["key"]] if _is_ip(a.get("key", "")) else [])
    text = (f"{action.replace('_', ' ')} for alert {a.get('alert_id', '?')}: {a.get('windows', 0)} windows of "
            f"{a.get('attack')} from {', '.join(srcs) or a.get('key')} at confidence up to "
            f"{float(a.get('max_confidence', 0)):.2f}")
    hosts = srcs if action == "isolate_host" else []
    return Intent(text=text, origin="alert", action=action, sources=[] if hosts else srcs, hosts=hosts,
                  attack=a.get("attack"), targets=targets or [])


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


# -- rendering for people ----------------------------------------------------------------------
def render_markdown(bp: Blueprint) -> str:
    """The blueprint as Markdown: intent, assumptions, a section per step, the KPI table."""
    lines = [f"# Blueprint `{bp.name}` ({bp.schema_})", "", f"**Intent** ({bp.intent.origin}): {bp.intent.text}",
             "", f"**Action:** {bp.action}", "", "## Assumptions", ""]
    lines += [f"- {a}" for a in bp.assumptions] or ["- (none stated)"]
    lines += ["", "## Steps", ""]
    for i, s in enumerate(bp.steps, 1):
        lines += [f"### {i}. `{s.name}` ({s.kind})", "",
                  f"- inputs: {', '.join(f'`{x}`' for x in s.inputs) or '(none)'}",
                  f"- outputs: {', '.join(f'`{x}`' for x in s.outputs)}",
                  f"- formula: {s.formula}", f"- explanation: {s.explanation}", ""]
    lines += ["## KPIs", "", "| KPI | target | why |", "| --- | --- | --- |"]
    lines += [f"| {k.name} | {k.comparator} {k.target:g} | {k.why.replace('|', '/')} |" for k in bp.kpis]
    return "\n".join(lines) + "\n"


def render_yaml(bp: Blueprint) -> str:
    """The blueprint as YAML (block style; strings quoted unless plainly safe)."""
    return "\n".join(_yaml(bp.dump(), 0)) + "\n"


_PLAIN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ./()+-]*$")
_RESERVED = {"yes", "no", "true", "false", "on", "off", "null", "y", "n", "~"}


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    s = str(v)
    if _PLAIN_RE.match(s) and s.lower() not in _RESERVED and not s.endswith(" ") and ": " not in s:
        return s
    return json.dumps(s)


def _yaml(v: Any, indent: int) -> list[str]:
    pad = "  " * indent
    if isinstance(v, dict):
        if not v:
            return [pad + "{}"]
        out = []
        for k, item in v.items():
            key = _scalar(k)
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{key}:")
                out += _yaml(item, indent + 1)
            else:
                out.append(f"{pad}{key}: {_inline(item)}")
        return out
    if isinstance(v, list):
        if not v:
            return [pad + "[]"]
        out = []
        for item in v:
            if isinstance(item, (dict, list)) and item:
                sub = _yaml(item, indent + 1)
                out.append(f"{pad}- {sub[0].lstrip()}")
                out += sub[1:]
            else:
                out.append(f"{pad}- {_inline(item)}")
        return out
    return [pad + _inline(v)]


def _inline(v: Any) -> str:
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return _scalar(v)
