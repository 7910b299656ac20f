"""Scores windows with an ONNX Runtime session: normalise, run, calibrate, flag the unsure.

    >>> det = OnnxDetector(Bundle.load(path))          # or OnnxDetector(bundle, session=fake)
    >>> s = det.score_windows(closed_windows)
    >>> s.predicted, s.confidence, s.uncertain

Confidence is the temperature-scaled max probability. The OOD score is the free energy
-T*logsumexp(logits/T): high when no class fits well. A window is uncertain when its
confidence is under the bundle's threshold (or its class's own floor), its OOD score is
above the bundle's OOD threshold, one of its flows is bigger than any flow of its protocol
in training (the bundle's support, inference.support), or it is a destination window called
a class only a source's windows can show (contracts.window.SOURCE_ONLY_CLASSES: a host
sweep), or a destination window whose flows all come from one peer called a class whose
attacker opens the flows (contracts.window.ONE_PEER_SOURCE_CLASSES: that peer's source
windows show it), or, where the bundle sets `member_benign`, it is called benign while one
of the ensemble's members gives benign less than that (the members disagree, as they do on
what none of them learned: the graph's "member_logits"), or it is a destination window
called benign with the shape of a spoofed flood (`flood_shaped`: a full window of one-packet,
unanswered flows from changing peers within contracts.window.FLOOD_SHAPE_SPAN_MS), or a
source window called benign with the shape of repeated sessions (`repeat_shaped`: one
client's answered TCP sessions to one service, alike in size: contracts.window.REPEAT_SHAPE_*);
each of the last seven goes out with reason "ood". One rule replaces a call instead of
deferring it: a source window of at least 4 flows to one service called a port scan or a
host sweep (contracts.window.MANY_SERVICE_CLASSES, which no such window can show) takes the
best class it can show (`one_service`, `rerank`; Scores.reranked), where the detector is told
to apply it (on by default since rule 27; rule 23); where that best class is benign, the window is
deferred instead (gate "one_service"): a rule never turns an attack call into a benign one
(rule 24: unknown UDP floods called udp_scan became confident benign). The destination rules are
`covered`: every flow of such a window sits in a source window that is judged on its own,
so the edge counts them and does not spend the agent's rate-limited channel on them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from contracts.errors import ModelError
from contracts.window import (FLOOD_SHAPE_SPAN_MS, MANY_SERVICE_CLASSES, ONE_PEER_SOURCE_CLASSES,
                              ONE_SERVICE_MIN_FLOWS, REPEAT_SHAPE_ANSWERED, REPEAT_SHAPE_MIN_FLOWS,
                              REPEAT_SHAPE_SPREAD, DEFAULT_SHAPE_RULES, SOURCE_ONLY_CLASSES,
                              parse_shape_rules)
from inference.bundle import Bundle
from inference.export import MEMBERS_OUTPUT
from inference.support import beyond_support


# What Scores.gates may hold: the checks that can make a window uncertain.
UNCERTAIN_GATES: tuple[str, ...] = ("low_confidence", "energy", "support", "member", "flood_shape", "repeat_shape",
                                     "destination", "one_service")


@dataclass
class Scores:
    probabilities: np.ndarray  # [n, C]
    predicted: np.ndarray  # [n] class index
    confidence: np.ndarray  # [n]
    ood: np.ndarray  # [n]
    uncertain: np.ndarray  # [n] bool
    low_confidence: np.ndarray  # [n] bool (else the reason is OOD)
    # [n] bool: uncertain because it is a destination window whose flows its sources' windows
    # carry and name (the two destination rules above), whatever else it is unsure of; the
    # edge does not send these to the agent, since those source windows go on their own
    # merits. None: no window is.
    covered: np.ndarray | None = None
    # Which gates deferred which windows ([n] bool each, keys from UNCERTAIN_GATES; a window
    # can be under several, and a gate never run is absent; "destination": the covered ones).
    # The edge counts them by gate.
    gates: dict[str, np.ndarray] = field(default_factory=dict)
    # [n] bool: windows whose call the one-service rule replaced (a scan or sweep call on a
    # window to one service; see `rerank`); None: none was.
    reranked: np.ndarray | None = None


def make_session(path: str | bytes, threads: int = 1, conv_matmul: bool = True) -> Any:
    """An ONNX Runtime session on one core. With `conv_matmul` (the default) the graph is
    rewritten for serving in a child process (inference.conv_matmul.serving_rewrite): its 1-D
    convolutions run as batch-wide matrix products (1.8x the windows/s of the shipped model
    here) and its window axis takes any length (OnnxDetector.run_by_length), same answers to
    float rounding; the file is not changed."""
    import onnxruntime as ort

    if conv_matmul:
        from inference.conv_matmul import try_conv_as_matmul

        model = path if isinstance(path, bytes) else Path(path).read_bytes()
        path, _ = try_conv_as_matmul(model)
    opts = ort.SessionOptions()
    # One edge worker per core: a single intra-op thread avoids oversubscription.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def calibrate(logits: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Temperature-scaled softmax and free-energy OOD score."""
    z = logits.astype(np.float64) / temperature
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=1, keepdims=True)
    probs = e / s
    energy = -temperature * (zmax[:, 0] + np.log(s[:, 0]))
    return probs.astype(np.float32), energy.astype(np.float32)


def member_min_benign(member_logits: np.ndarray, temperature: float, benign: int) -> np.ndarray:
    """[n]: the lowest member's calibrated p(benign), from member logits [M, n, C]."""
    return np.min([calibrate(z, temperature)[0][:, benign] for z in member_logits], axis=0)


class OnnxDetector:
    def __init__(self, bundle: Bundle, session: Any = None, int8: bool = False, threads: int = 1,
                 shape_rules: str | Sequence[str] = DEFAULT_SHAPE_RULES, by_length: bool = True) -> None:
        """`shape_rules`: which of contracts.window.SHAPE_RULES to apply (EDGELOOP_SHAPE_RULES);
        a ValueError names one that is not a shape rule. `by_length=False`: every batch runs
        padded to K (the benchmarks' baseline; see run_by_length)."""
        self.bundle = bundle
        self.shape_rules = parse_shape_rules(shape_rules)
        self.precision = "int8" if int8 else "fp32"
        meta = bundle.meta
        self.version = bundle.version
        self.class_names = list(meta.class_names)
        self.k = meta.window.k
        self.window = meta.window
        self.schema = bundle.feature_schema
        self.temperature = meta.temperature
        self.thresholds = meta.thresholds
        self._floors = np.array([meta.thresholds.per_class.get(c, meta.thresholds.confidence)
                                 for c in self.class_names], dtype=np.float32)
        # The view_dst feature (1 on a destination window), where the schema has one, and
        # which classes a destination window cannot show.
        names = tuple(self.schema.names)
        self._view_dst = names.index("view_dst") if "view_dst" in names else None
        self._source_only = np.array([c in SOURCE_ONLY_CLASSES for c in self.class_names], dtype=bool)
        self._peer_changed = names.index("peer_changed") if "peer_changed" in names else None
        self._one_peer_source = np.array([c in ONE_PEER_SOURCE_CLASSES for c in self.class_names], dtype=bool)
        self._flood_shape = (None if FLOOD_SHAPE_SPAN_MS is None or "flood_shape" not in self.shape_rules
                             or not {"view_dst", "peer_changed", "log_gap_ms", "log_packets",
                                     "log_bwd_packets"} <= set(names)
                             else tuple(names.index(f) for f in ("log_packets", "log_bwd_packets",
                                                                 "peer_changed", "log_gap_ms")))
        self._repeat_shape = (None if REPEAT_SHAPE_MIN_FLOWS is None or "repeat_shape" not in self.shape_rules
                              or not {"view_dst", "proto_tcp", "peer_changed", "dst_port_changed",
                                      "log_bwd_packets", "log_fwd_bytes"} <= set(names)
                              else tuple(names.index(f) for f in ("proto_tcp", "peer_changed", "dst_port_changed",
                                                                  "log_bwd_packets", "log_fwd_bytes")))
        many = np.array([c in MANY_SERVICE_CLASSES for c in self.class_names], dtype=bool)
        self._one_service = (None if ONE_SERVICE_MIN_FLOWS is None or "one_service" not in self.shape_rules
                             or not many.any() or many.all()
                             or not {"peer_changed", "dst_port_changed"} <= set(names)
                             else (names.index("peer_changed"), names.index("dst_port_changed")))
        self._many_service = many
        # The constants each rule runs with, read once here and passed on every call, so that
        # `shape_settings` (which a report records) is what the rules applied.
        self._shape_params = {
            "flood_shape": {"span_ms": FLOOD_SHAPE_SPAN_MS} if self._flood_shape is not None else None,
            "repeat_shape": ({"min_flows": REPEAT_SHAPE_MIN_FLOWS, "answered": REPEAT_SHAPE_ANSWERED,
                              "spread": REPEAT_SHAPE_SPREAD} if self._repeat_shape is not None else None),
            "one_service": {"min_flows": ONE_SERVICE_MIN_FLOWS} if self._one_service is not None else None}
        self._member_tau = meta.thresholds.member_benign
        self._benign = self.class_names.index(meta.benign_class) if meta.benign_class in self.class_names else None
        try:
            # The int8 graph's convolutions take their weights from DequantizeLinear nodes, which
            # the rewrite leaves alone; its window axis becomes dynamic all the same (nDPI
            # windows: 1.48x the windows/s of one padded int8 run, no verdict moved).
            self.session = session or make_session(str(bundle.onnx_path(int8)), threads)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"bundle {self.version}: cannot load ONNX model: {exc}") from exc
        # A session whose window axis is dynamic (inference.conv_matmul.any_window_length)
        # runs short windows on their real positions only (run_by_length).
        inputs = getattr(self.session, "get_inputs", lambda: [])()
        self._any_length = by_length and bool(inputs) and not isinstance(inputs[0].shape[-1], int)
        self._lengths = tuple(sorted({2 ** i for i in range(self.k.bit_length()) if 2 ** i < self.k} | {self.k}))
        self._outputs = ["logits"]
        if self._member_tau is not None and self._benign is not None:
            names = [o.name for o in self.session.get_outputs()]
            if MEMBERS_OUTPUT not in names:
                raise ModelError(f"bundle {self.version}: thresholds.member_benign is set but the graph has "
                                 f"no {MEMBERS_OUTPUT!r} output (it has {names})")
            self._outputs.append(MEMBERS_OUTPUT)

    def run(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Raw logits for already-normalised input."""
        return self.run_by_length(x, mask, ["logits"])[0]

    # A length group smaller than this runs with the next longer one: a run costs about
    # 80 us before its first window (a padded window about 30 here).
    MIN_GROUP = 16

    def run_by_length(self, x: np.ndarray, mask: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        """The session's `outputs` for normalised windows x [n, F, K], mask [n, K].

        Where the session takes any window length, the windows are grouped by their length
        (the last real position, rounded up to 1, 2, 4, ..., K; a group under MIN_GROUP
        windows joins the next) and each group runs on its first positions only: the same
        answers to float rounding (the rewrite's check), for a fraction of the rows. Real
        traffic's windows are mostly one or two flows; a flood's are full, and run as one."""
        n, k = mask.shape
        if not self._any_length or n < 2 * self.MIN_GROUP:
            return self.session.run(outputs, {"windows": x, "mask": mask})
        real = mask > 0
        length = np.where(real.any(axis=1), k - np.argmax(real[:, ::-1], axis=1), 1)
        group = np.searchsorted(np.asarray(self._lengths), length)  # index of the length it runs at
        sizes = np.bincount(group, minlength=len(self._lengths))
        for g in range(len(sizes) - 1):  # a small group runs with the next
            if sizes[g] < self.MIN_GROUP:
                group[group == g] = g + 1
                sizes[g + 1] += sizes[g]
                sizes[g] = 0
        if sizes.max() == n:  # one group: one run, no copies
            cut = self._lengths[int(sizes.argmax())]
            return self.session.run(outputs, {"windows": x if cut == k else np.ascontiguousarray(x[:, :, :cut]),
                                              "mask": mask if cut == k else np.ascontiguousarray(mask[:, :cut])})
        got: list[np.ndarray] | None = None
        for g, cut in enumerate(self._lengths):
            if not sizes[g]:
                continue
            rows = np.flatnonzero(group == g)
            part = self.session.run(outputs, {"windows": np.ascontiguousarray(x[rows, :, :cut]),
                                              "mask": np.ascontiguousarray(mask[rows, :cut])})
            if got is None:  # logits [n, C]; member logits [M, n, C]: windows on the next-to-last axis
                got = [np.empty(p.shape[:-2] + (n,) + p.shape[-1:], dtype=p.dtype) for p in part]
            for o, p in zip(got, part):
                o[(slice(None),) * (p.ndim - 2) + (rows,)] = p
        assert got is not None
        return got

    def score(self, x_raw: np.ndarray, mask: np.ndarray) -> Scores:
        """Score unnormalised windows x [n, F, K] with mask [n, K]."""
        if len(x_raw) == 0:
            z = np.zeros(0, dtype=np.float32)
            return Scores(np.zeros((0, len(self.class_names)), np.float32), z.astype(int), z, z,
                          z.astype(bool), z.astype(bool))
        x = self.schema.normalise(x_raw, mask)
        out = self.run_by_length(x, mask, self._outputs)
        probs, energy = calibrate(out[0], self.temperature)
        dst = x_raw[:, self._view_dst, 0] > 0.5 if self._view_dst is not None else None
        pred = probs.argmax(axis=1)
        reranked = to_benign = None
        if self._one_service is not None:
            called = self._many_service[pred]
            if dst is not None:
                called &= ~dst
            rows = np.flatnonzero(called)
            if len(rows):
                rows = rows[one_service(x_raw[rows], mask[rows], self._one_service,
                                        self._shape_params["one_service"]["min_flows"])]
                probs[rows] = rerank(probs[rows], self._many_service)
                pred[rows] = probs[rows].argmax(axis=1)
                reranked = np.zeros(len(probs), dtype=bool)
                reranked[rows] = True
                if self._benign is not None:
                    to_benign = reranked & (pred == self._benign)
        conf = probs[np.arange(len(pred)), pred]
        low = conf < self._floors[pred]
        thr = self.thresholds.ood
        gates = {"low_confidence": low}
        ood = energy > thr if thr is not None else np.zeros(len(pred), dtype=bool)
        gates["energy"] = ood.copy()
        gates["support"] = beyond_support(x_raw, mask, self.thresholds.support)
        ood |= gates["support"]
        if to_benign is not None:  # an attack call re-ranked to benign: deferred, never benign
            gates["one_service"] = to_benign
            ood |= to_benign

        def defer_benign(gate: str, where: np.ndarray | None, test: Any) -> np.ndarray:
            """The windows `test(rows)` flags among those called benign, confidently and not
            yet uncertain (and `where`), under `gate`: only benign calls move."""
            called = (pred == self._benign) & ~low & ~ood
            rows = np.flatnonzero(called if where is None else called & where)
            hit = np.zeros(len(pred), dtype=bool)
            if len(rows):
                hit[rows[test(rows)]] = True
            gates[gate] = hit
            return hit

        if len(out) > 1:  # the member-disagreement gate
            ood |= defer_benign("member", None, lambda r: member_min_benign(
                out[1][:, r], self.temperature, self._benign) < self._member_tau)
        if self._flood_shape is not None and self._benign is not None:
            ood |= defer_benign("flood_shape", dst, lambda r: flood_shaped(
                x_raw[r], mask[r], self._flood_shape, self._shape_params["flood_shape"]["span_ms"]))
        if self._repeat_shape is not None and self._benign is not None:
            ood |= defer_benign("repeat_shape", ~dst, lambda r: repeat_shaped(x_raw[r], mask[r], self._repeat_shape,
                                                                              **self._shape_params["repeat_shape"]))
        covered = None
        if dst is not None:
            covered = self._source_only[pred] & dst
            if self._peer_changed is not None:
                # peer_changed is 0 on a window's first flow and 1 where the peer differs
                # from the flow before: no 1 on a real flow means one peer.
                one_peer = ~((x_raw[:, self._peer_changed, :] > 0.5) & (mask > 0)).any(axis=1)
                covered |= self._one_peer_source[pred] & dst & one_peer
            ood |= covered
            gates["destination"] = covered
        return Scores(probs, pred, conf, energy, low | ood, low, covered, gates, reranked)

    @property
    def shape_settings(self) -> dict[str, Any]:
        """Each shape rule this detector applies, with the constants it runs with
        (contracts.window); a rule named but not applicable to this bundle's features, or
        turned off by its constant, is absent."""
        return {rule: dict(p) for rule, p in self._shape_params.items() if p is not None}

    def score_windows(self, windows: Sequence[Any]) -> Scores:
        from inference.windowing import stack_windows

        x, mask = stack_windows(windows, self.k)
        return self.score(x, mask)


def one_service(x_raw: np.ndarray, mask: np.ndarray, cols: tuple[int, int],
                min_flows: int | None = ONE_SERVICE_MIN_FLOWS) -> np.ndarray:
    """[n] bool: raw windows x [n, F, K] of at least `min_flows` real flows, none after the
    first to another peer or another destination port than the flow before: every flow to
    one service. `cols`: the schema's indices of peer_changed and dst_port_changed."""
    changed, port_changed = cols
    real = mask > 0
    moved = ((x_raw[:, changed, :] > 0.5) | (x_raw[:, port_changed, :] > 0.5)) & real
    return (real.sum(axis=1) >= (min_flows or 1)) & ~moved.any(axis=1)


def rerank(probs: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Probabilities [n, C] with the `excluded` classes ([C] bool) set to 0 and each row
    renormalised over the rest: the best call among the classes the window can show. A row
    with nothing left is returned as it was."""
    out = np.where(excluded[None, :], np.float32(0.0), probs)
    left = out.sum(axis=1, keepdims=True)
    ok = left[:, 0] > 0
    out[ok] /= left[ok]
    out[~ok] = probs[~ok]
    return out.astype(np.float32, copy=False)


def flood_shaped(x_raw: np.ndarray, mask: np.ndarray, cols: tuple[int, int, int, int],
                 span_ms: float) -> np.ndarray:
    """[n] bool: raw windows x [n, F, K] that are full (K real flows), each flow one packet
    with none back, the peer changing at every flow after the first, and the last flow
    starting within `span_ms` of the first. `cols`: the schema's indices of log_packets,
    log_bwd_packets, peer_changed and log_gap_ms (log1p of the gap to the flow before)."""
    packets, bwd, changed, gap = cols
    real = mask > 0
    one = (x_raw[:, packets, :] < np.log1p(1.5)) & (x_raw[:, bwd, :] == 0)
    peers = (x_raw[:, changed, 1:] > 0.5).all(axis=1)
    span = np.expm1(x_raw[:, gap, 1:].astype(np.float64)).sum(axis=1)
    return real.all(axis=1) & one.all(axis=1) & peers & (span <= span_ms)


def repeat_shaped(x_raw: np.ndarray, mask: np.ndarray, cols: tuple[int, int, int, int, int],
                  min_flows: int | None = REPEAT_SHAPE_MIN_FLOWS, answered: float = REPEAT_SHAPE_ANSWERED,
                  spread: float = REPEAT_SHAPE_SPREAD) -> np.ndarray:
    """[n] bool: raw windows x [n, F, K] of at least `min_flows` real flows, every one TCP
    with the peer and the destination port of the flow before, at least `answered` of them
    with 3 packets or more back, whose bytes sent per flow have a median absolute deviation
    of at most `spread` x their median. `cols`: the schema's indices of proto_tcp,
    peer_changed, dst_port_changed, log_bwd_packets and log_fwd_bytes."""
    tcp, changed, port_changed, bwd, fwd_bytes = cols
    real = mask > 0
    n = real.sum(axis=1)
    out = n >= (min_flows or 1)
    alike = (~real | ((x_raw[:, tcp, :] > 0.5) & (x_raw[:, changed, :] < 0.5)
                      & (x_raw[:, port_changed, :] < 0.5))).all(axis=1)
    back = ((x_raw[:, bwd, :] >= np.log1p(2.5)) & real).sum(axis=1) >= answered * n
    out &= alike & back
    if out.any():
        rows = np.flatnonzero(out)
        sent = np.where(real[rows], np.expm1(x_raw[rows, fwd_bytes, :].astype(np.float64)), np.nan)
        med = row_medians(sent)
        mad = row_medians(np.abs(sent - med[:, None]))
        out[rows] = mad <= spread * np.maximum(med, 1.0)
    return out


def row_medians(a: np.ndarray) -> np.ndarray:
    """np.nanmedian(a, axis=1) for rows of NaN-padded float64 numbers (at least one in each row),
    the same doubles: the two middle values summed and halved. nanmedian takes numpy's
    masked-array path for arrays this small, about 0.3 ms a call: half of a tick's scoring at
    100-flow pushes (tests/bench/bench_edge.py --push-cost)."""
    s = np.sort(a, axis=1)  # NaNs last
    n = (~np.isnan(a)).sum(axis=1)
    hi = n // 2
    lo = np.where(n % 2 == 1, hi, hi - 1)
    r = np.arange(len(a))
    return (s[r, lo] + s[r, hi]) / 2.0
