"""What is in force: the `policies.active` records, the set they make, and the detector side.

`policies.active` carries two records, keyed by policy id, both written only by
`edgeloop policy approve|revoke` (llm_agents.policies.cli):

    edgeloop.policy_activation/1   an approved Policy, who approved it, when it expires
    edgeloop.policy_revocation/1   a policy taken back, by whom and why

A follower reads the topic from the beginning (no consumer group: every node sees every
record) into `ActivePolicies`: activations not revoked and not yet expired. Replaying the
topic after a restart rebuilds the same set.

The detector's part of a policy is `detector_overrides(policy)`: class thresholds,
suppressions and allow-listed services as `DetectorOverrides`, whose `mutes(...)` says
whether a scored window may alert. `PolicyWatcher` follows the topic inside an asyncio
worker and hands over the merged overrides of all active policies on every change:

    >>> watcher = PolicyWatcher(bootstrap, topics.policies_active, on_change=set_overrides)
    >>> await watcher.run()
    >>> reason = overrides.mutes(d.predicted, d.confidence, d.key, flows)   # None: may alert

The network part is streams.enforce (nftables, the guard).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Annotated, Awaitable, Callable, Iterable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import RecordError
from contracts.policy_model import Policy
from contracts.records import loads, validate
from streams.nftables import IPNetwork, parse_address, parse_network

log = logging.getLogger("edgeloop.policies")

ACTIVATION_SCHEMA = "edgeloop.policy_activation/1"
REVOCATION_SCHEMA = "edgeloop.policy_revocation/1"
PolicyId = Annotated[str, Field(min_length=1, max_length=64)]
Who = Annotated[str, Field(min_length=1, max_length=200)]


def _now_ms() -> int:
    return int(time.time() * 1000)


class PolicyActivation(BaseModel):
    """An approved policy in force until `expires_ms` (approval time + policy.expires_s)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    schema_: Literal["edgeloop.policy_activation/1"] = Field(ACTIVATION_SCHEMA, alias="schema")
    policy_id: PolicyId
    policy: Policy
    approved_by: Who
    approved_ms: int = Field(ge=0)
    expires_ms: int = Field(ge=0)
    code_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    proposal_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    provenance: str = Field(max_length=200)
    note: str = Field("", max_length=2000)
    broad_reason: str = Field("", max_length=500)  # the operator's reason for broad actions (streams.guard)
    signer: str = Field("", max_length=16)       # key id (streams/signing.py); empty: unsigned
    signature: str = Field("", max_length=128)


class PolicyRevocation(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    schema_: Literal["edgeloop.policy_revocation/1"] = Field(REVOCATION_SCHEMA, alias="schema")
    policy_id: PolicyId
    revoked_by: Who
    revoked_ms: int = Field(ge=0)
    reason: str = Field("", max_length=2000)
    signer: str = Field("", max_length=16)
    signature: str = Field("", max_length=128)


ActiveRecord = PolicyActivation | PolicyRevocation


def encode_active(record: ActiveRecord) -> bytes:
    return record.model_dump_json(by_alias=True).encode()


def decode_active(raw: bytes | str) -> ActiveRecord:
    """A `policies.active` value; RecordError (with a reason code) for anything else."""
    obj = loads(raw)
    schema = obj.get("schema") if isinstance(obj, dict) else None
    kinds: dict[object, type[BaseModel]] = {ACTIVATION_SCHEMA: PolicyActivation, REVOCATION_SCHEMA: PolicyRevocation}
    cls = kinds.get(schema)
    if cls is None:
        raise RecordError("schema_version", f"schema {schema!r} is not a policies.active record")
    return validate(cls, obj)  # type: ignore[arg-type]


class ActivePolicies:
    """Activations not revoked and not expired, built by replaying `policies.active` in order."""

    def __init__(self) -> None:
        self.entries: dict[str, PolicyActivation] = {}
        self.revoked: set[str] = set()

    def apply(self, rec: ActiveRecord, now_ms: int | None = None) -> bool:
        """Take one record into account; True when the active set changed."""
        now = _now_ms() if now_ms is None else now_ms
        if isinstance(rec, PolicyRevocation):
            self.revoked.add(rec.policy_id)
            return self.entries.pop(rec.policy_id, None) is not None
        if rec.policy_id in self.revoked or rec.expires_ms <= now or rec.policy_id in self.entries:
            return False
        self.entries[rec.policy_id] = rec
        return True

    def expire(self, now_ms: int | None = None) -> list[str]:
        now = _now_ms() if now_ms is None else now_ms
        gone = [pid for pid, a in self.entries.items() if a.expires_ms <= now]
        for pid in gone:
            del self.entries[pid]
        return gone

    def current(self) -> list[PolicyActivation]:
        return sorted(self.entries.values(), key=lambda a: (a.approved_ms, a.policy_id))

    def overrides(self) -> "DetectorOverrides":
        return merge_overrides(detector_overrides(a.policy) for a in self.current())


# -- the detector side ----------------------------------------------------------------------
@dataclass(frozen=True)
class SuppressRule:
    attack: str | None
    network: IPNetwork | None

    def matches(self, predicted: str, key: str) -> bool:
        if self.attack is not None and predicted != self.attack:
            return False
        return self.network is None or any(_in(part, self.network) for part in key.split(">"))


def _in(text: str, net: IPNetwork) -> bool:
    try:
        return ipaddress.ip_address(text) in net
    except ValueError:
        return False


@dataclass(frozen=True)
class DetectorOverrides:
    """What active policies change in the detector: which scored windows may alert.

    per_class_confidence: a window predicted `c` alerts only at confidence >= the value.
    suppress: windows matching a rule (class, key inside a network, or both) never alert.
    allow_services: (address, port, proto number or 0 for any) whose windows, when every
    flow of the window goes to one of them, never alert.
    """

    per_class_confidence: dict[str, float] = field(default_factory=dict)
    suppress: list[SuppressRule] = field(default_factory=list)
    allow_services: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.per_class_confidence or self.suppress or self.allow_services)

    def mutes(self, predicted: str, confidence: float, key: str,
              services: Sequence[tuple[str, int, int]] = ()) -> str | None:
        """Why this window must not alert ("threshold", "suppressed", "allow_listed"), or None.
        `services`: (destination, port, protocol) of each of the window's flows."""
        need = self.per_class_confidence.get(predicted)
        if need is not None and confidence < need:
            return "threshold"
        if any(r.matches(predicted, key) for r in self.suppress):
            return "suppressed"
        if services and self.allow_services and all(self._allowed(*f) for f in services):
            return "allow_listed"
        return None

    def _allowed(self, dst_ip: str, dst_port: int, protocol: int) -> bool:
        return any(dst_ip == ip and dst_port == port and proto in (0, protocol)
                   for ip, port, proto in self.allow_services)


def detector_overrides(policy: Policy) -> DetectorOverrides:
    """The detector-side part of one policy (pure; addresses parsed strictly)."""
    rules = [SuppressRule(m.attack, parse_network(m.key) if m.key else None) for m in policy.suppress_alerts]
    services = [(str(parse_address(s.ip)), int(s.port), s.proto_number) for s in policy.allow_services]
    return DetectorOverrides(dict(policy.thresholds), rules, services)


def merge_overrides(items: Iterable[DetectorOverrides]) -> DetectorOverrides:
    """Several policies at once: the strictest threshold per class, every rule and service."""
    thr: dict[str, float] = {}
    rules: list[SuppressRule] = []
    services: list[tuple[str, int, int]] = []
    for o in items:
        for c, v in o.per_class_confidence.items():
            thr[c] = max(v, thr.get(c, 0.0))
        rules += [r for r in o.suppress if r not in rules]
        services += [s for s in o.allow_services if s not in services]
    return DetectorOverrides(thr, rules, services)



class PolicyWatcher:
    """Follow `policies.active` inside an asyncio worker; hand over overrides on each change.

        >>> watcher = PolicyWatcher(bootstrap, topics.policies_active, on_change=engine_set_overrides)
        >>> await watcher.run()
    """

    def __init__(self, bootstrap: str, topic: str,
                 on_change: Callable[[DetectorOverrides], Awaitable[None] | None],
                 clock: Callable[[], int] = _now_ms, *, guard: Any | None = None,
                 on_refused: Callable[[bytes, Exception], Awaitable[None] | None] | None = None,
                 trusted: Any | None = None) -> None:
        """With `trusted` keys (streams.signing.TrustedKeys), a record not signed by one of
        them is never applied; with a `guard` (streams.guard.Guard), neither is an activation
        it refuses. `on_refused(raw, exc)` gets both (the worker counts and dead-letters them)."""
        self.bootstrap, self.topic, self.on_change, self.clock = bootstrap, topic, on_change, clock
        self.guard, self.on_refused, self.trusted = guard, on_refused, trusted
        self.state = ActivePolicies()
        self.bad = 0
        self.refused = 0

    async def handle(self, raw: bytes) -> bool:
        try:
            rec = decode_active(raw)
        except RecordError as exc:
            self.bad += 1
            log.error("bad record on %s: %s", self.topic, exc)
            return False
        refusal: Exception | None = None
        if self.trusted is not None:
            try:
                self.trusted.verify(rec)
            except RecordError as exc:
                refusal = exc
        if refusal is None and self.guard is not None and isinstance(rec, PolicyActivation):
            problems = self.guard.problems(rec.policy, broad_reason=rec.broad_reason)
            if problems:
                from streams.guard import PolicyRefused

                refusal = PolicyRefused(rec.policy_id, problems)
        if refusal is not None:
            self.refused += 1
            log.error("refused on %s: %s", self.topic, refusal)
            if self.on_refused is not None:
                res = self.on_refused(raw, refusal)
                if asyncio.iscoroutine(res):
                    await res
            return False
        return self.state.apply(rec, self.clock())

    async def changed(self) -> None:
        res = self.on_change(self.state.overrides())
        if asyncio.iscoroutine(res):
            await res

    async def run(self) -> None:
        from streams.topics import follow_topic

        async def on_poll(values: list[bytes]) -> None:
            changed = False
            for raw in values:
                changed |= await self.handle(raw)
            changed |= bool(self.state.expire(self.clock()))
            if changed:
                await self.changed()

        await follow_topic(self.bootstrap, self.topic, on_poll)
