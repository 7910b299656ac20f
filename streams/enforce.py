"""Enforcement at the edge: approved policies from `policies.active`, applied and rolled back.

`Enforcer` keeps the node's own nftables table (streams.nftables) equal to the active
policies (streams.active_policies): it renders the table, checks it with `nft -c`,
applies it atomically, and renders it again without a policy when the policy is revoked
or expires. Before a policy gets that far, `Guard` refuses it if it would block,
rate-limit or isolate protected infrastructure: the brokers, the node's management and
own addresses, loopback and the configured allow-list. A policy nft itself rejects is
refused alone; the others still apply.

    >>> guard = Guard.build(bootstrap="10.0.0.5:9092", mgmt_addrs=["10.0.0.2"], allow_list=["10.1.0.0/16"])
    >>> enforcer = Enforcer(Nft(netns="el-1-vic"), guard, status_path=Path("var/enforce/status.json"),
    ...                     metrics=EnforcerMetrics(registry))
    >>> follow(enforcer, bootstrap, topics.policies_active)          # until stop(); once=True: bounded

Enforcement outlives the enforcer: every address sits in a set whose elements time out
when the policy expires, so the kernel lifts a block even if nobody is left to do it.

The detector side (`detector_overrides`, `DetectorOverrides`, `PolicyWatcher`) lives in
streams.active_policies and is re-exported here.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from contracts.errors import BrokerError, RecordError
from contracts.policy_model import Policy
from streams.active_policies import (ActivePolicies, ActiveRecord, DetectorOverrides, PolicyActivation,
                                     PolicyRevocation, PolicyWatcher, SuppressRule, decode_active,
                                     detector_overrides, encode_active, merge_overrides)
from streams.guard import ALWAYS_PROTECTED, Guard, PolicyRefused, broker_hosts, local_addresses
from streams.kafka_security import kafka_python_options
from streams.metrics import EnforcerMetrics
from streams.nftables import (DEFAULT_TABLE, AddressError, EnforceError, IPNetwork, Nft, NftEntry, NftError,
                              network_actions, parse_address, parse_network, render_ruleset)

__all__ = ["ActivePolicies", "DetectorOverrides", "Enforcer", "Guard", "PolicyActivation", "PolicyRefused",
           "PolicyRevocation", "PolicyWatcher", "SuppressRule", "decode_active", "detector_overrides",
           "encode_active", "follow", "local_addresses", "merge_overrides"]

log = logging.getLogger("edgeloop.enforce")

ALWAYS_PROTECTED = {"127.0.0.0/8": "loopback", "::1/128": "loopback"}


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- the network side -----------------------------------------------------------------------
@dataclass
class Applied:
    approved_ms: int
    applied_ms: int
    expires_ms: int
    approved_by: str

    @property
    def latency_ms(self) -> int:
        return self.applied_ms - self.approved_ms


class Enforcer:
    """Keeps the node's nftables table equal to the active, guarded policies."""

    def __init__(self, nft: Nft, guard: Guard, *, table: str = DEFAULT_TABLE, dry_run: bool = False,
                 status_path: Path | None = None, clock: Callable[[], int] = _now_ms,
                 metrics: EnforcerMetrics | None = None, trusted: Any | None = None) -> None:
        self.nft, self.guard, self.table, self.dry_run = nft, guard, table, dry_run
        self.trusted = trusted  # streams.signing.TrustedKeys: only records they sign are applied
        self.status_path, self.clock, self.metrics = status_path, clock, metrics
        self.state = ActivePolicies()
        self.applied: dict[str, Applied] = {}
        self.refused: dict[str, str] = {}
        self.last_ruleset = ""

    def handle(self, rec: ActiveRecord) -> bool:
        """Take a record in (signature, then guard); True when the table must be re-rendered.

        With trusted keys, a record they do not sign is refused and raised (SignatureRefused,
        a RecordError: `follow` dead-letters it)."""
        if self.trusted is not None:
            try:
                self.trusted.verify(rec)
            except RecordError as exc:
                self._refuse(rec.policy_id, str(exc), exc.reason)
                raise
        if isinstance(rec, PolicyActivation) and rec.policy_id not in self.state.revoked:
            try:
                self.guard.check(rec.policy_id, rec.policy, broad_reason=rec.broad_reason)
            except (PolicyRefused, AddressError) as exc:
                self._refuse(rec.policy_id, str(exc), "guard")
                return False
        return self.state.apply(rec, self.clock())

    def tick(self) -> bool:
        """Drop expired policies; True when that changed the table."""
        gone = self.state.expire(self.clock())
        for pid in gone:
            log.warning("policy %s expired: rolling back", pid)
        return bool(gone)

    def _refuse(self, policy_id: str, why: str, reason: str) -> None:
        if policy_id not in self.refused:
            log.error("policy %s refused (%s): %s", policy_id, reason, why)
            if self.metrics:
                self.metrics.policies_refused.labels(reason=reason).inc()
        self.refused[policy_id] = why

    def reconcile(self) -> str:
        """Render, check and apply the table for the active policies; returns the ruleset.

        Raises EnforceError (the previous table stays in force), counted as an error."""
        try:
            text = self._reconcile()
        except EnforceError:
            if self.metrics:
                self.metrics.reconciles.labels(outcome="error").inc()
            raise
        if self.metrics:
            self.metrics.reconciles.labels(outcome="ok").inc()
        return text

    def _reconcile(self) -> str:
        entries = self._entries()
        text = render_ruleset(entries, now_ms=self.clock(), table=self.table)
        try:
            self.nft.check(text)
        except NftError as exc:
            entries = self._isolate_failures(entries, exc)
            text = render_ruleset(entries, now_ms=self.clock(), table=self.table)
            self.nft.check(text)
        if self.dry_run:
            self.last_ruleset = text
            return text
        self.nft.apply(text)  # atomic: on NftError the previous table stays in force
        self.last_ruleset = text
        self._record(entries)
        return text

    def _entries(self) -> list[NftEntry]:
        return [NftEntry(a.policy_id, a.policy, a.expires_ms) for a in self.state.current()
                if a.policy_id not in self.refused]

    def _isolate_failures(self, entries: list[NftEntry], exc: NftError) -> list[NftEntry]:
        """Check each policy alone; refuse those nft rejects, keep the rest."""
        keep = []
        for e in entries:
            try:
                self.nft.check(render_ruleset([e], now_ms=self.clock(), table=self.table))
                keep.append(e)
            except (NftError, EnforceError) as one:
                self._refuse(e.policy_id, f"nft -c: {one}", "nft")
        if len(keep) == len(entries):
            raise exc
        return keep

    def _record(self, entries: list[NftEntry]) -> None:
        now, ids = self.clock(), {e.policy_id for e in entries}
        for pid in [p for p in self.applied if p not in ids]:
            why = "revoked" if pid in self.state.revoked else "expired"
            log.warning("policy %s rolled back (%s)", pid, why)
            del self.applied[pid]
            if self.metrics:
                self.metrics.rollbacks.labels(why=why).inc()
        for a in self.state.current():
            if a.policy_id in ids and a.policy_id not in self.applied:
                self.applied[a.policy_id] = Applied(a.approved_ms, now, a.expires_ms, a.approved_by)
                kind = "nftables" if network_actions(a.policy) else "detector-side only, no rules"
                log.warning("policy %s applied (%s) %d ms after approval by %s", a.policy_id, kind,
                            now - a.approved_ms, a.approved_by)
                if self.metrics:
                    self.metrics.apply_latency.observe(max(0, now - a.approved_ms) / 1000)
        self._enforced_changed()

    def clear(self) -> None:
        if not self.dry_run:
            self.nft.delete_table(self.table)
        self.applied.clear()
        self._enforced_changed()

    def _enforced_changed(self) -> None:
        if self.metrics:
            self.metrics.policies_enforced.set(len(self.applied))
        self.write_status()

    def status(self) -> dict[str, Any]:
        return {"table": f"inet {self.table}", "netns": self.nft.netns or "", "updated_ms": self.clock(),
                "applied": {pid: {**a.__dict__, "latency_ms": a.latency_ms} for pid, a in self.applied.items()},
                "refused": dict(self.refused)}

    def write_status(self) -> None:
        if self.status_path is None:
            return
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.status(), indent=1))
        tmp.replace(self.status_path)


# -- following the topic --------------------------------------------------------------------
def _consumer(bootstrap: str, topic: str):  # noqa: ANN202 - kafka-python has no types
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        c = KafkaConsumer(bootstrap_servers=bootstrap, **kafka_python_options(),
                          group_id=None, enable_auto_commit=False,
                          fetch_max_wait_ms=100, max_poll_interval_ms=10_000, request_timeout_ms=15_000,
                          bootstrap_timeout_ms=15_000)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or {0})]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    return c, tps


def follow(enforcer: Enforcer, bootstrap: str, topic: str, *, once: bool = False,
           stop: Callable[[], bool] = lambda: False, tick_s: float = 1.0,
           on_bad: Callable[[Exception, Any], None] | None = None) -> None:
    """Read `policies.active` from the start; catch up, apply, then follow until `stop()`.

    With `once`, return after the records present at start are applied (a bounded run).
    A record that cannot be decoded goes to `on_bad(exc, message)` and is skipped.
    """
    from kafka.errors import KafkaError

    c, tps = _consumer(bootstrap, topic)
    try:
        _follow(c, tps, enforcer, topic, once, stop, tick_s, on_bad)
    except KafkaError as exc:
        raise BrokerError(f"following {topic} at {bootstrap} failed: {exc}") from exc
    finally:
        c.close()


def _follow(c: Any, tps: list[Any], enforcer: Enforcer, topic: str, once: bool, stop: Callable[[], bool],
            tick_s: float, on_bad: Callable[[Exception, Any], None] | None) -> None:
    end = c.end_offsets(tps)
    caught_up = retry = False
    next_tick = time.monotonic() + tick_s
    while not stop():
        changed, retry = retry, False
        for msgs in c.poll(timeout_ms=100, max_records=500).values():
            for m in msgs:
                try:
                    changed |= enforcer.handle(decode_active(m.value))
                except RecordError as exc:
                    log.error("bad record on %s@%s: %s", topic, m.offset, exc)
                    if on_bad:
                        on_bad(exc, m)
        if not caught_up and all(c.position(tp) >= end[tp] for tp in tps):
            caught_up, changed = True, True
            if enforcer.metrics:
                enforcer.metrics.caught_up.set(1)
            log.warning("caught up with %s: %d active policies", topic, len(enforcer.state.entries))
        if time.monotonic() >= next_tick:
            changed |= enforcer.tick()
            next_tick = time.monotonic() + tick_s
        if caught_up and changed:
            try:
                enforcer.reconcile()
            except EnforceError as exc:  # the previous table stays; try again next round
                if once:
                    raise
                log.error("could not apply the policies: %s", exc)
                retry = True
                time.sleep(min(tick_s, 1.0))
        if once and caught_up:
            return
