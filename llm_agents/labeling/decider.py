"""Deciding a batch of uncertain windows: label with the LLM, judge, store or park, record.

Kafka-free, so the agent service (llm_agents.agent) drives it from its consumer loop and
unit tests drive it directly:

    >>> state = AgentState.open(data_dir)
    >>> out = Decider(state, client).decide(windows, attempts={}, max_attempts=4)
    >>> out.finished      # window_id -> accepted | parked | known | <earlier outcome>
    >>> out.retry         # window_id -> failure kind, for a transient LLM failure

A window already in the ledger is not decided again; one the store or review queue has
but the ledger lacks (a crash between the two writes) is recorded from what they hold.

Classes the detector does not have yet. Acceptance checks a known class against its
labelled neighbours, and a new one by the cluster rule (`novel:<name>`; see
llm_agents.labeling.acceptance). A class accepted into the store but not yet learned by the
detector that sent the window stays "new" here: its proposals are judged as
`novel:<name>`, with the windows already stored under that name counted as members of
its group rather than as contrary evidence, and the store evidence limited to classes the
detector knows. After a retrain teaches the detector the class, its windows come with it
in `class_names` and are judged by neighbours like any other.

One more guard on new classes (`_consistent`): an accepted novel label must agree with
the names the model gave the windows nearest to it.

Truth for the promotion gate. An accepted LLM label whose window falls on the retrainer's
holdout side (store.holdout_mask, `verify_fraction` = the retrainer's holdout_fraction) is
parked as `verify` instead of stored: a person confirms or corrects it in `edgeloop review`,
and only then does it judge challengers (llm_agents.retrain: LLM labels never count as
truth). The other accepted labels are stored and train. `verify_fraction=0` stores them all
(no LLM-found class can then be promoted until a person labels some of its windows).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from contracts.records import Label, UncertainWindow, encode
from llm_agents.labeling.acceptance import Acceptance, AcceptancePolicy, Reason, judge, window_vectors
from llm_agents.agent_metrics import AgentMetrics
from llm_agents.audit import AuditLog, Decision, LabelLedger, now_ms
from llm_agents.labeling.labeler import Labeler, LabelProposal
from llm_agents.labeling.review import Parked, ReviewItem, ReviewQueue
from llm_agents.store import HOLDOUT_FRACTION, DatasetStore, holdout_mask, windows_rows

TRANSIENT = ("rate_limit", "timeout", "connection")
VERIFY = "verify"        # parked: accepted, but on the promotion gate's holdout side
MAX_WAITING = 200        # pending review items re-judged with each batch
MAX_MEMBERS = 200        # stored windows of a new class counted as its group's members


@dataclass
class AgentState:
    """The durable state under the data directory that the agent and `edgeloop review` share."""

    store: DatasetStore
    review: ReviewQueue
    audit: AuditLog
    ledger: LabelLedger

    @classmethod
    def open(cls, data_dir: str | Path) -> "AgentState":
        d = Path(data_dir)
        audit = AuditLog(d / "audit.sqlite")
        return cls(DatasetStore(d / "datasets"), ReviewQueue(d / "review.sqlite"), audit, LabelLedger(audit))


@dataclass
class Outcome:
    """What `Decider.decide` did with a batch: finished ids, and ids to retry (with the kind)."""

    finished: dict[str, str] = field(default_factory=dict)  # window_id -> outcome
    retry: dict[str, str] = field(default_factory=dict)     # window_id -> failure kind


def strip_truth(w: UncertainWindow) -> UncertainWindow:
    """The window without its flows' ground-truth `label`: the agent must never read it."""
    if all(f.label is None for f in w.flows):
        return w
    return w.model_copy(update={"flows": [f.model_copy(update={"label": None}) for f in w.flows]})


def _conf(x: object) -> float:
    return float(x) if isinstance(x, (int, float)) and 0 <= x <= 1 else 0.0  # NaN fails both


def _name(label: object, prefix: str) -> str:
    text = str(label).strip()
    return text[len(prefix):].strip() if text.casefold().startswith(prefix) else text


class Decider:
    """Labels, judges and records one batch of windows; see the module docstring."""

    def __init__(self, state: AgentState, client: Any = None, *, policy: AcceptancePolicy = AcceptancePolicy(),
                 batch_size: int = 20, metrics: AgentMetrics | None = None,
                 verify_fraction: float = HOLDOUT_FRACTION) -> None:
        self.s, self.client, self.policy = state, client, policy
        self.verify_fraction = verify_fraction
        self.batch_size, self.metrics = batch_size, metrics
        self._evidence: tuple[int, Any, Any] | None = None

    def decide(self, windows: Sequence[UncertainWindow], attempts: dict[str, int], max_attempts: int) -> Outcome:
        out = Outcome()
        windows = self._unfinished(windows, out)
        if not windows:
            return out
        if self.client is None:
            self._park([Parked(w, "offline") for w in windows], out)
            return out
        det = list(dict.fromkeys(c for w in windows for c in w.class_names))
        _, sy = self._store_evidence()
        classes = det + sorted(set(sy.tolist()) - set(det))  # accepted new classes, so names stay stable
        batch = Labeler(self.client, classes, batch_size=self.batch_size).label_batch(windows)
        by_id = {w.window_id: w for w in windows}
        parked: list[Parked] = []
        for wid, kind in batch.failed.items():
            n = attempts.get(wid, 0) + 1
            if kind in TRANSIENT and n < max_attempts:
                out.retry[wid] = kind
            else:
                parked.append(Parked(by_id[wid], f"llm_{kind}", detail=f"after {n} attempts"))
        parked += [Parked(by_id[wid], "unanswered") for wid in batch.unanswered]
        if self.metrics:
            self.metrics.windows_labelled.inc(len(batch.proposals))
        self._park(parked, out)
        self._judge(batch.proposals, by_id, det, out)
        return out

    def _unfinished(self, windows: Sequence[UncertainWindow], out: Outcome) -> list[UncertainWindow]:
        """Drop windows already decided; record those the store or queue has but the ledger lacks."""
        done = self.s.ledger.decided([w.window_id for w in windows])
        out.finished.update(done)
        rest = [w for w in windows if w.window_id not in done]
        stored = self.s.store.lookup([w.window_id for w in rest])
        queued = self.s.review.by_window([w.window_id for w in rest if w.window_id not in stored])
        decisions = []
        for w in rest:
            if w.window_id in stored:
                st = stored[w.window_id]
                rec = self._label(w, st["label"], st["label_source"], st["confidence"], True, "already_labelled")
                decisions.append(Decision(w.window_id, "known" if st["kind"] == "reference" else "accepted",
                                          st["label"], action="label_known", figures=st, publish=encode(rec)))
            elif w.window_id in queued:
                decisions.append(Decision(w.window_id, "parked", None, action="label_parked",
                                          figures={"reason": queued[w.window_id].reason, "recovered": True}))
        if decisions:
            self.s.ledger.commit(decisions)
            out.finished.update({d.window_id: d.outcome for d in decisions})
        if self.metrics:
            self.metrics.windows_skipped.labels(why="redelivered").inc(len(done))
            self.metrics.windows_skipped.labels(why="already_labelled").inc(len(decisions))
        return [w for w in rest if w.window_id not in out.finished]

    def _store_evidence(self) -> tuple[np.ndarray, np.ndarray]:
        seq = self.s.store.seq
        if self._evidence is None or self._evidence[0] != seq:
            x, y, _ = self.s.store.evidence()
            self._evidence = (seq, x, y)
        return self._evidence[1], self._evidence[2]

    def _judge(self, proposals: list[LabelProposal], by_id: dict[str, UncertainWindow], det: list[str],
               out: Outcome) -> None:
        if not proposals:
            return
        sx, sy = self._store_evidence()
        prefix = self.policy.novel_prefix
        new = {c.casefold(): c for c in set(sy.tolist()) - set(det)}
        # Earlier proposals of new classes still in the queue join in, so support can build up.
        waiting = [i for i in self.s.review.pending(MAX_WAITING)
                   if i.window_id not in by_id and i.proposed and (i.novel or (i.label or "") in new.values())]
        judged = [*proposals, *(LabelProposal(i.window_id, i.proposed or "", i.confidence or 0.0, "", "", i.source)
                                for i in waiting)]
        wins = [by_id[p.window_id] for p in proposals] + [i.window for i in waiting]
        asked = [replace(p, label=f"{prefix}{new[_name(p.label, prefix).casefold()]}")
                 if _name(p.label, prefix).casefold() in new else p for p in judged]
        wanted = {_name(p.label, prefix) for p in asked} & set(new.values())
        members = np.flatnonzero(np.isin(sy, list(wanted)))[-MAX_MEMBERS:] if wanted else np.zeros(0, int)
        feats = window_vectors(wins)
        if len(members):
            feats = np.vstack([feats, sx[members]])
        keep = ~np.isin(sy, list(new.values()))
        verdicts = judge([*asked, *(LabelProposal(f"store:{j}", f"{prefix}{sy[j]}", 1.0, "", "", "store")
                                    for j in members)],
                         feats, store_features=sx[keep] if len(sy) else sx, store_labels=sy[keep], known_classes=det,
                         rankings=[*wins, *([None] * len(members))], policy=self.policy)[:len(judged)]
        names = [_name(p.label, prefix).casefold() for p in asked] + [str(sy[j]).casefold() for j in members]
        verdicts = self._consistent(verdicts, feats, names)
        self._record(judged, wins, verdicts, by_id, waiting, out)

    def _consistent(self, verdicts: list[Acceptance], feats: np.ndarray, names: list[str]) -> list[Acceptance]:
        """A new class is kept only where the model names it consistently: among the `k`
        windows nearest to an accepted novel one (the batch, waiting items and the class's
        stored windows), at least `knn_min_share` carry the same name. A model that invents
        names at random can still pile four windows under one name over many batches;
        their neighbours, named otherwise, give it away."""
        accepted = [i for i, a in enumerate(verdicts) if a.accepted and a.novel]
        if not accepted:
            return verdicts
        z = (feats - feats.mean(axis=0)) / np.maximum(feats.std(axis=0), 1e-2)
        label = np.asarray(names, dtype=object)
        out = list(verdicts)
        for i in accepted:
            d = np.sqrt(((z - z[i]) ** 2).sum(axis=1))
            d[i] = np.inf
            near = np.argsort(d)[:min(self.policy.k, len(d) - 1)]
            share = float(np.mean(label[near] == label[i])) if len(near) else 0.0
            if share < self.policy.knn_min_share:
                out[i] = replace(out[i], accepted=False, reason=Reason.NOVEL_UNCONFIRMED,
                                 detail=f"named {label[i]!r} by {share:.0%} of its {len(near)} nearest judged "
                                        f"windows (need {self.policy.knn_min_share:.0%}); {out[i].detail}")
        return out

    def _record(self, judged: list[LabelProposal], wins: list[UncertainWindow], verdicts: list, by_id: dict,
                waiting: list[ReviewItem], out: Outcome) -> None:
        rows, parked, decisions = [], [], []
        held = holdout_mask([p.window_id for p in judged], self.verify_fraction) if judged else []
        for p, w, a, h in zip(judged, wins, verdicts, held):
            late = p.window_id not in by_id
            if self.metrics and not late:
                self.metrics.label_decisions.labels(reason=str(a.reason)).inc()
            if a.accepted and h:
                if late:            # a waiting item stays in the queue, for the person
                    continue
                a = replace(a, accepted=False, reason=VERIFY,
                            detail=f"accepted ({a.detail}); on the promotion gate's holdout side: "
                                   "a person confirms it before it counts as truth")
                parked.append(Parked(w, VERIFY, proposed=str(p.label)[:96], label=a.label, source=p.source,
                                     confidence=a.confidence if a.confidence == a.confidence else None,
                                     novel=a.novel, detail=a.detail))
            elif a.accepted:
                rows.append((w, a.label or "", p.source, a.confidence))
            elif late:
                continue
            else:
                parked.append(Parked(w, str(a.reason), proposed=str(p.label)[:96], label=a.label, source=p.source,
                                     confidence=a.confidence if a.confidence == a.confidence else None,
                                     novel=a.novel, detail=a.detail))
            # `novel` on the record: a class the detector that sent the window does not have.
            novel = a.novel or (a.label is not None and a.label not in w.class_names)
            rec = self._label(w, a.label or str(p.label)[:96], p.source, _conf(p.confidence), a.accepted,
                              str(a.reason), novel=novel, rationale=f"{p.rationale} [{a.detail}]".strip())
            decisions.append(Decision(w.window_id, "accepted" if a.accepted else "parked", a.label,
                                      actor=p.source or "agent", figures={
                                          "reason": str(a.reason), "detail": a.detail, "proposed": str(p.label)[:96],
                                          "confidence": _conf(p.confidence), "novel": novel, "late": late},
                                      publish=encode(rec)))
        # in `waiting` order; one on the holdout side is not closed (the person decides it)
        late = [replace(a, accepted=False) if a.accepted and h else a
                for p, a, h in zip(judged, verdicts, held) if p.window_id not in by_id]
        self._apply(rows, parked, decisions, waiting, late, out)

    def _apply(self, rows: list, parked: list[Parked], decisions: list[Decision], waiting: list,
               late: list, out: Outcome) -> None:
        """Durable effects in crash-safe order: store, queue, then the ledger (with the outbox)."""
        if rows:
            self.s.store.append("labelled", windows_rows(rows), note="agent")
        self.s.review.park(parked)
        for item, a in zip(waiting, late):
            if a.accepted:
                self.s.review.resolve(item.id, a.label, "agent:acceptance", "accepted")
        written = self.s.ledger.commit(decisions)
        n_acc = sum(d.outcome == "accepted" for d in written)  # a repeat of a decided window counts once
        out.finished.update({d.window_id: d.outcome for d in decisions if not d.figures.get("late")})
        if self.metrics:
            self.metrics.windows_accepted.inc(n_acc)
            for p in parked:
                self.metrics.windows_parked.labels(reason=p.reason).inc()

    def _park(self, parked: list[Parked], out: Outcome) -> None:
        if not parked:
            return
        self.s.review.park(parked)
        self.s.ledger.commit([Decision(p.window.window_id, "parked", None, figures={"reason": p.reason},
                                       detail=p.detail) for p in parked])
        out.finished.update({p.window.window_id: "parked" for p in parked})
        if self.metrics:
            for p in parked:
                self.metrics.windows_parked.labels(reason=p.reason).inc()

    @staticmethod
    def _label(w: UncertainWindow, label: str, source: str, confidence: float, accepted: bool, reason: str,
               novel: bool = False, rationale: str = "") -> Label:
        return Label(window_id=w.window_id, label=label, source=source or "agent", confidence=_conf(confidence),
                     accepted=accepted, reason=reason, novel=novel, model_version=w.model_version,
                     rationale=rationale[:2000], at_ms=now_ms())


