"""The edge detector engine: records in, windows closed, batches scored, outputs routed.

It knows nothing about Kafka: the faust worker (streams.worker) and offline scoring
(streams.score) drive the same engine, so a file and a stream give the same verdicts.

    >>> eng = EdgeDetector(OnnxDetector(bundle), config=DetectorConfig())
    >>> eng.ingest(records)
    >>> outputs = eng.tick()          # [(short topic, key, value bytes)], when a batch is due
    >>> outputs += eng.flush_all()    # end of input

Model swaps happen between batches (`swap`), so every window is scored exactly once,
by exactly one model.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from contracts.errors import BundleVerificationError
from contracts.records import DetectionRow, FlowRecord, encode, encode_detection_batch, join_rows
from inference.onnx_detector import OnnxDetector
from inference.window_batch import arrow_columns, windows_column
from inference.windowing import ClosedBy, ClosedWindow, Windower
from streams.metrics import EdgeMetrics, observe_many
from streams.routing import AlertAggregator, UncertainRouter, audit_pick


class Output(NamedTuple):
    topic: str  # short name: detections, uncertain, alerts, deadletter
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class DetectorConfig:
    seconds: float = 10.0
    key: str = "src"
    max_open: int = 200_000
    memory_mb: float | None = 192.0
    batch_max: int = 256
    batch_wait_ms: float = 5.0
    uncertain_rate_per_s: float = 50.0
    audit_sample: float = 0.01
    alert_min_windows: int = 2
    alert_interval_s: float = 5.0
    worker: str = ""
    idle_s: float | None = None
    max_hosts: int = 50_000
    host_history: str = "auto"
    # At most this long scoring per tick: thousands of windows closing at once (an idle
    # expiry after a flood) are scored over several ticks, not in one stall of the loop.
    tick_budget_ms: float = 100.0

    @classmethod
    def from_settings(cls, s: object) -> "DetectorConfig":
        return cls(**{f: getattr(s, n) for f, n in (
            ("seconds", "window_seconds"), ("key", "window_key"), ("max_open", "max_open_windows"),
            ("batch_max", "batch_max"), ("batch_wait_ms", "batch_wait_ms"),
            ("uncertain_rate_per_s", "uncertain_rate_per_s"), ("audit_sample", "audit_sample"),
            ("alert_min_windows", "alert_min_windows"), ("alert_interval_s", "alert_interval_s"),
            ("worker", "worker_id"), ("idle_s", "window_idle_s"), ("max_hosts", "max_hosts"),
            ("host_history", "host_history"),
            ("memory_mb", "window_memory_mb"))})


class EdgeDetector:
    def __init__(self, model: OnnxDetector, config: DetectorConfig = DetectorConfig(),
                 metrics: EdgeMetrics | None = None, clock: Callable[[], float] = time.monotonic,
                 on_scored: Callable[[list[Any]], None] | None = None) -> None:
        self.model, self.cfg, self.metrics, self.clock = model, config, metrics, clock
        self.on_scored = on_scored
        # Windows are cut exactly as the model's were in training (its K, T and views);
        # `check_window` is where settings that disagree are refused.
        spec = model.window
        self.windower = Windower(k=spec.k, seconds=spec.seconds, key=spec.views[0],  # type: ignore[arg-type]
                                 max_open=config.max_open, clock=clock, views=spec.views,
                                 max_hosts=config.max_hosts, idle_s=config.idle_s,
                                 host_history=config.host_history,
                                 max_bytes=None if config.memory_mb is None else int(config.memory_mb * 2**20))
        self.router = UncertainRouter(config.uncertain_rate_per_s, config.audit_sample, config.worker)
        benign = model.bundle.meta.benign_class
        self.alerts = AlertAggregator(benign, config.alert_min_windows, config.alert_interval_s,
                                      config.worker, clock)
        self.pending: list[ClosedWindow] = []
        self._pending_since = 0.0
        self._released: list[Any] = []  # origins of flows in windows scored since take_released
        self.overrides: Any = None  # streams.active_policies.DetectorOverrides from active policies
        if metrics:
            metrics.set_model(model.version, model.precision)
            metrics.host_history_info.labels(engine=self.windower.history_engine).set(1)

    def swap(self, model: OnnxDetector) -> None:
        """Use `model` from the next batch on. Refuses a bundle whose windows are cut
        differently (K, T, views): the open windows and host history were built for the
        running one."""
        if not model.window.same_cut(self.model.window):
            raise BundleVerificationError(model.version, f"window spec {model.window.describe()} differs "
                                          f"from the running model's {self.model.window.describe()}")
        self.model = model
        if self.metrics:
            self.metrics.set_model(model.version, model.precision)
            self.metrics.model_swaps.inc()

    def set_overrides(self, overrides: Any) -> None:
        """Apply the detector side of the active policies (thresholds, suppression) from now on."""
        self.overrides = None if overrides is None or overrides.empty else overrides

    def ingest(self, records: Sequence[FlowRecord], origin: Any = None) -> None:
        """Add records; `origin` (an offset-ledger token) rides with each of them and comes
        back from `take_released` once every window holding them was scored."""
        self._push(records, None if origin is None else [origin] * len(records))

    def ingest_many(self, parts: Sequence[tuple[Sequence[FlowRecord], Any]]) -> None:
        """`ingest` for several messages' records in one push, each message with its origin:
        the same windows as one push each (membership depends only on each key's own
        flows), for a fraction of the per-push cost when messages are small."""
        if len(parts) == 1:
            self.ingest(*parts[0])
        else:
            self._push(join_rows([r for r, _ in parts]), [o for r, o in parts for _ in range(len(r))])

    def _push(self, records: Sequence[FlowRecord], origins: list[Any] | None) -> None:
        closed = self.windower.push_records(records, origins)
        if self.metrics:
            self.metrics.flows_in.inc(len(records))
        self._add_pending(closed)

    def ingest_arrow(self, table: Any, origin: Any = None) -> None:
        """`ingest` for a pyarrow Table of good flows (contracts.arrow_flows): the columns
        go to the windower as they are, no record objects made."""
        self._push_arrow(table, None if origin is None else [origin] * table.num_rows)

    def ingest_arrow_many(self, parts: Sequence[tuple[Any, Any]]) -> None:
        """`ingest_many` for Arrow tables: one push of their rows, each with its table's origin."""
        if len(parts) == 1:
            self.ingest_arrow(*parts[0])
        else:
            import pyarrow as pa

            self._push_arrow(pa.concat_tables([t for t, _ in parts]),
                             [o for t, o in parts for _ in range(t.num_rows)])

    def _push_arrow(self, table: Any, origins: list[Any] | None) -> None:
        ids, src, dst, raw, extra = arrow_columns(table)
        n = len(ids)
        if n == 0:
            return
        closed = self.windower.push(src, dst, ids, raw, extra=extra, origins=origins)
        if self.metrics:
            self.metrics.flows_in.inc(n)
        self._add_pending(closed)

    def _add_pending(self, closed: list[ClosedWindow]) -> None:
        if closed and not self.pending:
            self._pending_since = self.clock()
        self.pending.extend(closed)

    def due(self) -> bool:
        if not self.pending:
            return False
        return (len(self.pending) >= self.cfg.batch_max
                or (self.clock() - self._pending_since) * 1000 >= self.cfg.batch_wait_ms)

    def tick(self, now: bool = False) -> list[Output]:
        """Periodic work: close idle windows, score due batches (for at most the tick budget;
        the rest waits for the next tick), emit due alerts. `now`: score what is pending
        without waiting for batch_wait (its flows already waited to be windowed)."""
        self._add_pending(self.windower.expire())
        out: list[Output] = []
        deadline = time.perf_counter() + self.cfg.tick_budget_ms / 1000.0
        while self.pending and (now or self.due()):
            out += self.score_pending()
            if self.pending and time.perf_counter() > deadline:
                if self.metrics:
                    self.metrics.tick_deferred.inc()
                break
        out += self._alerts(force=False)
        if self.metrics:
            self.metrics.open_windows.set(len(self.windower))
            self.metrics.open_window_bytes.set(self.windower.open_bytes)
        return out

    def flush_all(self, closed_by: ClosedBy = "flush") -> list[Output]:
        """End of input (or partitions given up, closed_by="revoke"): close every window,
        score everything, emit every alert."""
        self.close_all(closed_by)
        out: list[Output] = []
        while self.pending:
            out += self.score_pending()
        return out + self.final_alerts()

    def close_all(self, closed_by: ClosedBy = "revoke") -> int:
        """Close every open window into the pending batches (score them with score_pending
        and `final_alerts`, a batch at a time); the number of windows now pending."""
        self._add_pending(self.windower.flush(closed_by))
        return len(self.pending)

    def final_alerts(self) -> list[Output]:
        """Every alert now (end of input, partitions given up)."""
        return self._alerts(force=True)

    def discard_all(self) -> int:
        """Drop every open and pending window unscored (this worker was fenced: its
        partitions already belong to another member, which reads those flows again from
        the last commit); the number of windows dropped."""
        n = len(self.pending) + self.windower.clear()
        self.pending = []
        self._released = []
        return n

    def take_released(self) -> list[Any]:
        """The origins of every flow scored since the last call, one per window membership.
        Call it right after the tick/flush whose outputs are being produced."""
        out, self._released = self._released, []
        return out

    def _alerts(self, force: bool) -> list[Output]:
        alerts = self.alerts.drain(self.model.version, force=force)
        if self.metrics:
            for a in alerts:
                self.metrics.alerts.labels(attack=a.attack).inc()
        return [Output("alerts", a.key.encode(), encode(a)) for a in alerts]

    def score_pending(self) -> list[Output]:
        """Score up to batch_max pending windows with the current model."""
        batch, self.pending = self.pending[:self.cfg.batch_max], self.pending[self.cfg.batch_max:]
        if self.pending:
            self._pending_since = self.clock()
        model, m = self.model, self.metrics
        t0 = time.perf_counter()
        s = model.score_windows(batch)
        if m:
            m.inference_seconds.observe(time.perf_counter() - t0)
            m.batch_windows.observe(len(batch))
            for gate, hit in s.gates.items():
                if (n := int(hit.sum())):
                    m.uncertain_gates.labels(gate=gate).inc(n)
            if s.reranked is not None and (n := int(s.reranked.sum())):
                m.windows_reranked.labels(rule="one_service").inc(n)
        now_ms = int(time.time() * 1000)
        names, version = model.class_names, model.version
        # Python values once per batch, not numpy scalars per window; rounded for the wire
        # in one numpy pass (k / 10^d, the same double as round(x, d) gives).
        predicted = [names[p] for p in s.predicted.tolist()]
        unsure = s.uncertain.tolist()
        probs = np.round(s.probabilities.astype(np.float64), 5).tolist()
        conf_r = np.round(s.confidence.astype(np.float64), 5).tolist()
        ood = np.round(s.ood.astype(np.float64), 4).tolist()
        dets = [DetectionRow(
                    window_id=w.window_id, key=w.key, flow_ids=w.flow_ids, first_seen_ms=w.first_seen_ms,
                    last_seen_ms=w.last_seen_ms, predicted=p, probabilities=pr, confidence=c, ood_score=o,
                    uncertain=u, closed_by=w.closed_by, model_version=version, produced_ms=w.produced_ms or None,
                    scored_ms=now_ms, view=w.view)
                for w, p, pr, c, o, u in zip(batch, predicted, probs, conf_r, ood, unsure)]
        self._released.extend(chain.from_iterable(w.origins for w in batch))
        out = [Output("detections", None, encode_detection_batch(self.cfg.worker, version, names, dets))]
        out += self._route(batch, dets, s)
        self._alert(batch, dets, s)
        if m:
            self._observe(dets, now_ms)
        if self.on_scored:
            self.on_scored(dets)
        return out

    def _route(self, batch: list[ClosedWindow], dets: list[Any], s: Any) -> list[Output]:
        """The batch's `uncertain` messages, in window order: every uncertain window goes to
        the router (rate limit, covered), a confident one only when the audit sample picks it.
        The flows are rebuilt as records only for a window that goes out."""
        m, router, names = self.metrics, self.router, self.model.class_names
        fraction = router.audit_fraction
        unsure = s.uncertain
        if fraction > 0:
            picks = [i for i in np.flatnonzero(~unsure).tolist() if audit_pick(dets[i].window_id, fraction)]
            rows = sorted(np.flatnonzero(unsure).tolist() + picks) if picks else np.flatnonzero(unsure).tolist()
        else:
            rows = np.flatnonzero(unsure).tolist()
        low = s.low_confidence
        covered = s.covered
        out = []
        for i in rows:
            w, d = batch[i], dets[i]
            cov = bool(covered[i]) if covered is not None else False
            u = router.route(d, bool(low[i]), lambda w=w: w.items, names, lambda w=w: w.history, covered=cov)
            if u is not None:
                out.append(Output("uncertain", w.key.encode(), encode(u)))
                if m:
                    m.uncertain.labels(reason=u.reason).inc()
            elif d.uncertain and m:
                (m.uncertain_covered if cov else m.uncertain_rate_limited).inc()
        return out

    def _alert(self, batch: list[ClosedWindow], dets: list[Any], s: Any) -> None:
        """Confident attack windows into the alert aggregates, a group per (view, key, attack)
        in one call with its columns laid end to end; windows the active policies mute are
        counted instead."""
        names, benign = self.model.class_names, self.alerts.benign
        confident = ~s.uncertain
        alerting = np.flatnonzero(confident & (s.predicted != names.index(benign)) if benign in names
                                  else confident).tolist()
        if not alerting:
            return
        groups: dict[tuple[str, str, str], list[int]] = {}
        overrides, m = self.overrides, self.metrics
        conf = s.confidence
        for i in alerting:
            d = dets[i]
            if overrides is not None:
                muted = overrides.mutes(d.predicted, float(conf[i]), d.key, _services(batch[i]))
                if muted is not None:
                    if m:
                        m.alerts_muted.labels(reason=muted).inc()
                    continue
            k = (d.view, d.key, d.predicted)
            g = groups.get(k)
            if g is None:
                groups[k] = [i]
            else:
                g.append(i)
        for k, rows in groups.items():
            ws = [batch[i] for i in rows]
            if len(rows) == 1:
                w = ws[0]
                src, dst = w.src, w.dst
            else:
                src = list(chain.from_iterable(w.src for w in ws))
                dst = list(chain.from_iterable(w.dst for w in ws))
            ports = windows_column(ws, "dst_port")
            self.alerts.add_group(k, len(rows), sum(len(w.flow_ids) for w in ws),
                                  min(w.first_seen_ms for w in ws), max(w.last_seen_ms for w in ws),
                                  max(dets[i].confidence for i in rows), src, dst, ports)

    def _observe(self, dets: list[Any], now_ms: int) -> None:  # DetectionRows
        m = self.metrics
        assert m is not None
        # One labelled increment per label value and batch: a labels() lookup costs more
        # than the rest of a window's bookkeeping.
        for how, n in Counter(d.closed_by for d in dets).items():
            m.windows_scored.labels(closed_by=how).inc(n)
        for cls, n in Counter(d.predicted for d in dets).items():
            m.detections.labels(predicted=cls).inc(n)
        observe_many(m.confidence, [d.confidence for d in dets])
        observe_many(m.end_to_end_seconds, [max(0.0, (now_ms - d.produced_ms) / 1000) for d in dets
                                            if d.produced_ms and d.closed_by == "k"])
        m.uncertain_ratio.set(sum(d.uncertain for d in dets) / len(dets))


def _services(w: ClosedWindow) -> list[tuple[str, int, int]]:
    """(destination, port, protocol) of each flow of the window, from its columns."""
    return list(zip(w.column("dst_ip"), w.column("dst_port"), w.column("protocol")))
