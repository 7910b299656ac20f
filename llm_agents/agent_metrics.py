"""Prometheus metrics of the agent service (`edgeloop agent`), defined in one place.

    >>> m = build_agent_metrics(registry)            # or build_agent_metrics(registry, "x")
    >>> m.windows_received.inc()

    <p>_agent_windows_received_total              uncertain windows decoded
    <p>_agent_windows_labelled_total              windows the LLM answered for
    <p>_agent_windows_accepted_total              labels accepted into the dataset store
    <p>_agent_windows_parked_total{reason}        windows sent to the review queue
    <p>_agent_windows_deadlettered_total{reason}  undecodable `uncertain` values
    <p>_agent_windows_skipped_total{why}          already decided (redelivery) or already
                                                  labelled in the store
    <p>_agent_label_decisions_total{reason}       acceptance outcomes (accepted or the code)
    <p>_agent_labels_published_total              Label records published on `labels`
    <p>_agent_llm_retries_total{kind}             batches put back after a transient failure
    <p>_agent_review_queue_depth                  pending review items
    <p>_agent_pending_windows                     windows read but not yet finished
    <p>_agent_batch_seconds                       one labelling batch, LLM call included
    <p>_agent_uncertain_ratio                     uncertain share of detections (drift window)
    <p>_agent_retrains_total{trigger}             retrains started: labels, drift, request
    <p>_agent_promotions_total                    challengers promoted
    <p>_agent_promotion_rejections_total{reason}  challengers kept out, by gate reason
    <p>_agent_synthetic_windows_total{outcome}    synthetic windows kept or dropped
    <p>_agent_retrain_seconds                     one retrain, end to end
    <p>_agent_alerts_received_total               alerts read by the policy proposer
    <p>_agent_alerts_deadlettered_total{reason}   undecodable `alerts` values
    <p>_agent_policy_proposals_total{status}      per alert considered: proposed, covered
                                                  (a live policy already names its sources),
                                                  failed (nothing validated on the twin);
                                                  error: a whole batch failed
    <p>_agent_proposal_seconds                    one batch of alerts: twin read back,
                                                  blueprint loop, store and publish
    <p>_deadletter_records_total{reason,topic}    every dead letter the agent sends, on the
                                                  series detectors and enforcers use (one
                                                  alert rule, one dashboard panel for all)

plus the LLM client metrics (`llm_agents.metrics`) on the same registry and prefix.
Built once per (registry, prefix), like the LLM metrics.

The policy store (data_dir/policies) is read at scrape time by `PolicyStoreCollector`,
so its figures are those of the durable store, whoever changed it (the proposer, a person
running `edgeloop policy approve`), and survive restarts:

    <p>_policies{state}                           proposed, approved, active, rejected,
                                                  revoked, expired
    <p>_policy_oldest_proposed_age_seconds        how long the oldest proposal has waited
                                                  for a person (0: none waiting)
    <p>_policy_decisions_total{action}            audit rows: propose, approve, reject,
                                                  activate, revoke, expire, refuse, ...
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llm_agents.metrics import LLMMetrics, build_llm_metrics
from streams.metrics import deadletter_counter

BATCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
RETRAIN_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@dataclass(frozen=True)
class AgentMetrics:
    windows_received: Counter
    windows_labelled: Counter
    windows_accepted: Counter
    windows_parked: Counter
    windows_deadlettered: Counter
    windows_skipped: Counter
    label_decisions: Counter
    labels_published: Counter
    llm_retries: Counter
    review_queue_depth: Gauge
    pending_windows: Gauge
    batch_seconds: Histogram
    uncertain_ratio: Gauge
    retrains: Counter
    promotions: Counter
    promotion_rejections: Counter
    synthetic_windows: Counter
    retrain_seconds: Histogram
    alerts_received: Counter
    alerts_deadlettered: Counter
    policy_proposals: Counter
    proposal_seconds: Histogram
    sandbox_available: Gauge
    deadletters: Counter
    llm: LLMMetrics


_built: "weakref.WeakKeyDictionary[CollectorRegistry, dict[str, AgentMetrics]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def build_agent_metrics(registry: CollectorRegistry, prefix: str = "edgeloop") -> AgentMetrics:
    """The agent's metrics registered in `registry` under `prefix`; built once per pair."""
    with _lock:
        per_prefix = _built.setdefault(registry, {})
        if prefix not in per_prefix:
            per_prefix[prefix] = _define(registry, prefix)
        return per_prefix[prefix]


def _define(registry: CollectorRegistry, prefix: str) -> AgentMetrics:
    p, r = f"{prefix}_agent", {"registry": registry}
    return AgentMetrics(
        windows_received=Counter(f"{p}_windows_received", "Uncertain windows decoded.", **r),
        windows_labelled=Counter(f"{p}_windows_labelled", "Windows the LLM proposed a label for.", **r),
        windows_accepted=Counter(f"{p}_windows_accepted", "Labels accepted into the dataset store.", **r),
        windows_parked=Counter(f"{p}_windows_parked", "Windows parked for review, by reason.",
                               ["reason"], **r),
        windows_deadlettered=Counter(f"{p}_windows_deadlettered", "Undecodable uncertain values sent "
                                     "to the dead-letter topic, by reason.", ["reason"], **r),
        windows_skipped=Counter(f"{p}_windows_skipped", "Windows not labelled again: already decided "
                                "(redelivered) or already labelled in the store.", ["why"], **r),
        label_decisions=Counter(f"{p}_label_decisions", "Acceptance decisions on LLM labels, by reason.",
                                ["reason"], **r),
        labels_published=Counter(f"{p}_labels_published", "Label records published on the labels topic.", **r),
        llm_retries=Counter(f"{p}_llm_retries", "Labelling batches put back after a transient LLM "
                            "failure, by kind.", ["kind"], **r),
        review_queue_depth=Gauge(f"{p}_review_queue_depth", "Review items waiting for a person.", **r),
        pending_windows=Gauge(f"{p}_pending_windows", "Windows read but not yet labelled, parked or "
                              "dead-lettered (their offsets are uncommitted).", **r),
        batch_seconds=Histogram(f"{p}_batch_seconds", "Time to decide one labelling batch, LLM call "
                                "included.", buckets=BATCH_BUCKETS, **r),
        uncertain_ratio=Gauge(f"{p}_uncertain_ratio", "Share of detections that were uncertain over "
                              "the drift window.", **r),
        retrains=Counter(f"{p}_retrains", "Retrains started, by trigger.", ["trigger"], **r),
        promotions=Counter(f"{p}_promotions", "Challengers promoted and released.", **r),
        promotion_rejections=Counter(f"{p}_promotion_rejections", "Challengers not promoted, by gate "
                                     "reason.", ["reason"], **r),
        synthetic_windows=Counter(f"{p}_synthetic_windows", "Synthetic windows kept for training or "
                                  "dropped by the checks.", ["outcome"], **r),
        retrain_seconds=Histogram(f"{p}_retrain_seconds", "One retrain: data, synthesis, training, "
                                  "evaluation and release.", buckets=RETRAIN_BUCKETS, **r),
        alerts_received=Counter(f"{p}_alerts_received", "Alerts read by the policy proposer.", **r),
        alerts_deadlettered=Counter(f"{p}_alerts_deadlettered", "Undecodable alerts values sent to the "
                                    "dead-letter topic, by reason.", ["reason"], **r),
        policy_proposals=Counter(f"{p}_policy_proposals", "Alerts considered for a policy, by outcome: "
                                 "proposed, covered, failed; error when a whole batch failed.", ["status"], **r),
        proposal_seconds=Histogram(f"{p}_proposal_seconds", "One batch of alerts: twin read back, blueprint "
                                   "loop, store and publish.", buckets=BATCH_BUCKETS, **r),
        sandbox_available=Gauge(f"{p}_sandbox_available", "1 when the blueprint sandbox confines step "
                                "code here and the agent proposes policies; 0 when it cannot start, so the "
                                "agent only labels. Set at start, by sandbox mode (root or userns); absent with --no-propose.",
                                ["mode"], **r),
        deadletters=deadletter_counter(registry, prefix),
        llm=build_llm_metrics(registry, prefix),
    )


class PolicyStoreCollector:
    """Policy figures read from the durable store at each scrape (see the module docstring).

        >>> registry.register(PolicyStoreCollector(PolicyStore(data_dir / "policies")))

    A store that cannot be read (locked past its timeout, a broken file) gives a scrape
    without these samples and a log line, never a failed scrape.
    """

    def __init__(self, store: Any, prefix: str = "edgeloop") -> None:
        self.store, self.prefix = store, prefix

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
        p = self.prefix
        return (GaugeMetricFamily(f"{p}_policies", "Policies in the store, by state (an active policy past "
                                  "its expiry counts as expired).", labels=["state"]),
                GaugeMetricFamily(f"{p}_policy_oldest_proposed_age_seconds", "Age of the oldest proposal "
                                  "waiting for approval (0: none waiting)."),
                CounterMetricFamily(f"{p}_policy_decisions", "Audit log rows by action (propose, approve, "
                                    "reject, activate, revoke, expire, refuse, publish).", labels=["action"]))

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        states, oldest, decisions = self._families()
        try:
            c = self.store.counts()
        except (sqlite3.Error, OSError) as exc:
            logging.getLogger("edgeloop.agent").warning("policy store %s unreadable for metrics: %s",
                                                        self.store.directory, exc)
            return iter(())
        for state, n in sorted(c.states.items()):
            states.add_metric([state], n)
        now_ms = self.store.clock()
        oldest.add_metric([], 0.0 if c.oldest_proposed_ms is None else max(0, now_ms - c.oldest_proposed_ms) / 1000)
        for action, n in sorted(c.actions.items()):
            decisions.add_metric([action], n)
        return iter((states, oldest, decisions))
