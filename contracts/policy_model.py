"""A policy: the concrete actions a validated blueprint asks the network and the detector for.

A Policy is what running a blueprint's code produces, what the digital twin evaluates,
and what an enforcer applies once a person approves it. A PolicyProposal wraps it with
the evidence a person needs: the intent, the blueprint, the hash of the code that made
it, the twin's KPIs and where it came from (an LLM model or `library:<name>`).

    >>> p = Policy(block_sources=["10.9.0.66"], expires_s=900)
    >>> Policy.model_validate_json(p.model_dump_json(by_alias=True)) == p
    True

Every address is parsed strictly with `ipaddress` (no hostnames, no host bits set in a
CIDR). Every collection is a list of small objects, not a free-form dict, so the same
models double as strict JSON schemas for structured LLM output.
"""
from __future__ import annotations

import ipaddress
import uuid
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, field_validator,
                      model_validator)

POLICY_SCHEMA = "edgeloop.policy/1"
PROPOSAL_SCHEMA = "edgeloop.policy_proposal/1"
MAX_ENTRIES = 256
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "any": 0}


def _network(text: str) -> str:
    """A canonical address or CIDR; ValueError for anything else (hostnames, host bits set)."""
    if not isinstance(text, str) or not text or len(text) > 64 or text.strip() != text:
        raise ValueError(f"not an IP address or CIDR: {text!r}")
    net = ipaddress.ip_network(text, strict=True)
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def _address(text: str) -> str:
    """A canonical single IP address."""
    if not isinstance(text, str) or "/" in text or text.strip() != text:
        raise ValueError(f"not a single IP address: {text!r}")
    return str(ipaddress.ip_address(text))


Network = Annotated[str, AfterValidator(_network)]
Address = Annotated[str, AfterValidator(_address)]
ClassName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Model):
    """At most `packets_per_s` packets per second from the sources of one entry, together."""

    sources: list[Network] = Field(min_length=1, max_length=MAX_ENTRIES)
    packets_per_s: float = Field(gt=0, le=1e9, allow_inf_nan=False)


class ClassThreshold(_Model):
    """Windows predicted `attack` alert only at `min_confidence` or above."""

    attack: ClassName
    min_confidence: float = Field(ge=0, le=1, allow_inf_nan=False)


class AlertMatch(_Model):
    """Alerts to suppress: of class `attack`, for window key `key` (an address or CIDR), or both."""

    attack: ClassName | None = None
    key: Network | None = None

    @model_validator(mode="after")
    def _some(self) -> "AlertMatch":
        if self.attack is None and self.key is None:
            raise ValueError("an alert match needs an attack class, a key, or both")
        return self


class Service(_Model):
    """One service: destination address, port and transport protocol."""

    ip: Address
    port: int = Field(ge=0, le=65535)
    proto: Literal["tcp", "udp", "any"] = "tcp"

    @property
    def proto_number(self) -> int:
        return PROTOCOLS[self.proto]

    def __str__(self) -> str:
        ip = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{ip}:{self.port}/{self.proto}"


class PolicyActions(_Model):
    """The actions, without the envelope: the shape an LLM answers with (schema `policy`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="policy")

    block_sources: list[Network] = Field(default_factory=list, max_length=MAX_ENTRIES)
    rate_limit_sources: list[RateLimit] = Field(default_factory=list, max_length=MAX_ENTRIES)
    class_thresholds: list[ClassThreshold] = Field(default_factory=list, max_length=64)
    suppress_alerts: list[AlertMatch] = Field(default_factory=list, max_length=MAX_ENTRIES)
    isolate_hosts: list[Address] = Field(default_factory=list, max_length=MAX_ENTRIES)
    allow_services: list[Service] = Field(default_factory=list, max_length=MAX_ENTRIES)
    expires_s: int = Field(3600, ge=60, le=7 * 86400)

    @field_validator("class_thresholds")
    @classmethod
    def _one_per_class(cls, v: list[ClassThreshold]) -> list[ClassThreshold]:
        names = [t.attack for t in v]
        if len(set(names)) != len(names):
            raise ValueError("one threshold per class")
        return v


class Policy(PolicyActions):
    """A versioned policy (`edgeloop.policy/1`): what the twin evaluates and enforcers apply.

    Block stops new flows initiated by the sources. Rate-limit caps the packets the sources
    of each entry send per second. Class thresholds and suppression change which windows
    alert. Isolate cuts every flow to or from a host. Allow-listed services are exempt from
    the network actions of this policy, and windows whose flows all go to them do not alert.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, title="edgeloop_policy")

    schema_: Literal["edgeloop.policy/1"] = Field(POLICY_SCHEMA, alias="schema")

    @classmethod
    def from_actions(cls, actions: PolicyActions | dict[str, Any]) -> "Policy":
        data = actions.model_dump() if isinstance(actions, PolicyActions) else dict(actions)
        data.pop("schema", None)
        data.pop("schema_", None)
        return cls.model_validate(data)

    @property
    def thresholds(self) -> dict[str, float]:
        return {t.attack: t.min_confidence for t in self.class_thresholds}

    def is_empty(self) -> bool:
        return not (self.block_sources or self.rate_limit_sources or self.class_thresholds
                    or self.suppress_alerts or self.isolate_hosts or self.allow_services)

    def describe(self) -> list[str]:
        """One line per action, for people."""
        lines = [f"block new flows from {s}" for s in self.block_sources]
        lines += [f"rate-limit {', '.join(r.sources)} to {r.packets_per_s:g} packets/s"
                  for r in self.rate_limit_sources]
        lines += [f"alert on {t.attack} only at confidence >= {t.min_confidence:.2f}"
                  for t in self.class_thresholds]
        lines += [f"suppress alerts{' of ' + m.attack if m.attack else ''}"
                  f"{' for key ' + m.key if m.key else ''}" for m in self.suppress_alerts]
        lines += [f"isolate host {h}" for h in self.isolate_hosts]
        lines += [f"allow-list service {s}" for s in self.allow_services]
        return lines + [f"expires after {self.expires_s} s"]

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class PolicyProposal(BaseModel):
    """A policy with its evidence, published on `policies.proposed` for a person to approve.

    `blueprint` is the validated blueprint as JSON (see llm_agents.blueprints.schema),
    `code_sha256` the hash of the step functions that produced `policy`, `kpis` the twin's
    report, `provenance` "llm:<model>", "library:<name>" or "repository:<id>".
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["edgeloop.policy_proposal/1"] = Field(PROPOSAL_SCHEMA, alias="schema")
    policy_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=64)
    intent: dict[str, Any]
    blueprint: dict[str, Any]
    code_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    policy: Policy
    kpis: dict[str, Any]
    provenance: str = Field(min_length=1, max_length=200)
    created_ms: int = Field(ge=0)

    def dump_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()
