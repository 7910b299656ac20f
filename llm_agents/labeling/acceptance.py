"""Whether an LLM's label for a window can go into the dataset without a person looking.

DESIGN: a label is accepted only if it is valid and confident and an independent check
agrees. Everything else goes to review with a reason code:

    invalid             no such window, confidence not a number in [0, 1], empty label
    unknown_class       not a known class and not a well-formed `novel:<name>`
    low_confidence      confidence under `min_confidence`
    disagrees_knn       the labelled neighbours say another class
    disagrees_detector  no neighbour evidence, and the label is not in the detector's top 2
    novel_unconfirmed   a new class without enough consistent windows behind it (below)
    unverified          valid and confident, but no check could be run (no evidence)
    accepted

Known classes are the detector's classes plus every class already in the labelled store.
An answer `novel:<name>` whose name is known is read as that class.

The checks, in order (features are z-scored over store and batch together):
1. Neighbours. Among the k nearest labelled windows, only those in range count. A
   neighbour is in range within the store's `radius` (`radius_scale` x the
   `radius_quantile` of the store's own k-th neighbour distances) and within its own
   class's spread: `local_scale` x that neighbour's own k-th neighbour distance (floored
   at the store's tightest spreads, so exact duplicates still vouch for near windows). A tight class (a brute force repeats one request)
   does not vouch for a window that sits well outside it, however close it is by the
   store's wide yardstick: a slow HTTP DoS is nearer to an HTTP brute force than the
   benign traffic's spread, but several times farther than the brute force's own.
   A window far from everything labelled has no neighbour evidence.
   With at least `knn_min_neighbours` in range, they decide: accepted if at least
   `knn_min_share` of them carry the label, else disagrees_knn. This check goes first
   because it is the stronger one: for an unsure window the detector's top 2 often holds
   the wrong class too, which is what an injected "label this benign" aims at.
2. Detector ranking, when neighbour evidence is thin (fewer than `knn_min_neighbours`
   in range, none of them contradicting) and the detector knows the class: the label must
   be among the detector's top `detector_top` probabilities. A window with no labelled
   neighbour at all in range, while the store is big enough to judge, is unlike anything
   labelled; there the detector is no check (it is unsure by definition, and a model
   that calls new traffic "benign" agrees with a detector that has no other word for it),
   so the label is `unverified` unless `detector_for_far_windows` is set. With a store
   too small to judge, the detector's ranking is the check.
3. Novel classes cannot be checked against a detector that lacks them. A proposed
   `novel:<name>` is accepted when it forms a cluster of its own: at least
   `novel_min_support` windows in the judged set carry the same name with enough
   confidence, and each counted window is nearer to another member of its group than to
   any labelled window, within the store's radius. An invented name given at random
   never gathers that support; a made-up name stuck on windows of a known class fails
   the "nearer its own group than the store" test (or neighbours contradict it first).
   Pass pending novel proposals from the review queue back in with new ones so the
   support can build up across batches. Once some are accepted, the class is in the
   store and later windows are judged by neighbours like any other class.

    >>> judge(proposals, window_vectors(windows), store_features=X, store_labels=y,
    ...       known_classes=detector_classes, rankings=windows)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Iterable, Protocol, Sequence

import numpy as np

from inference.features import FLOW_FEATURES, flow_features, raw_matrix

_NOVEL_NAME = re.compile(r"^[a-z][a-z0-9_]{2,47}$")


class Reason(StrEnum):
    ACCEPTED = "accepted"
    LOW_CONFIDENCE = "low_confidence"
    UNKNOWN_CLASS = "unknown_class"
    DISAGREES_KNN = "disagrees_knn"
    DISAGREES_DETECTOR = "disagrees_detector"
    NOVEL_UNCONFIRMED = "novel_unconfirmed"
    UNVERIFIED = "unverified"
    INVALID = "invalid"


class ProposalLike(Protocol):
    window_id: str
    label: str
    confidence: float


class RankingLike(Protocol):
    class_names: list[str]
    probabilities: list[float]


@dataclass(frozen=True)
class AcceptancePolicy:
    min_confidence: float = 0.7
    k: int = 5
    knn_min_neighbours: int = 3
    knn_min_share: float = 0.6
    radius_quantile: float = 0.9
    radius_scale: float = 1.5
    # A neighbour vouches only within this multiple of its own k-th neighbour distance.
    local_scale: float = 3.0
    detector_top: int = 2
    novel_min_support: int = 4
    novel_prefix: str = "novel:"
    # A window with no labelled neighbour in range is unlike anything labelled: the
    # detector (unsure there by definition) is weak evidence for a known class.
    detector_for_far_windows: bool = False


@dataclass(frozen=True)
class Acceptance:
    """The decision on one proposal. `label` is the normalised class (None when unreadable)."""

    window_id: str
    proposed: str
    label: str | None
    confidence: float
    accepted: bool
    reason: Reason
    novel: bool = False
    detail: str = ""

    @property
    def needs_review(self) -> bool:
        return not self.accepted


def window_vector(flow_feats: np.ndarray) -> np.ndarray:
    """One vector per window for neighbour checks: mean and max of each flow feature.

    Takes the window's per-flow features [n, F] (F >= len(FLOW_FEATURES); only the flow
    features are used, so windowing's context columns may be passed along).
    """
    f = np.asarray(flow_feats, dtype=np.float64)[:, :len(FLOW_FEATURES)]
    if len(f) == 0:
        return np.zeros(2 * len(FLOW_FEATURES))
    return np.concatenate([f.mean(axis=0), f.max(axis=0)])


def window_vectors(windows: Sequence[object]) -> np.ndarray:
    """`window_vector` for windows holding FlowRecords (UncertainWindow): [n, 2F]."""
    rows = [window_vector(flow_features(raw_matrix(w.flows))) for w in windows]  # type: ignore[attr-defined]
    return np.vstack(rows) if rows else np.zeros((0, 2 * len(FLOW_FEATURES)))


def tensor_vectors(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`window_vector` for stacked, unnormalised windows x [n, F, K] with mask [n, K]."""
    return np.vstack([window_vector(x[i].T[mask[i].astype(bool)]) for i in range(len(x))]) \
        if len(x) else np.zeros((0, 2 * len(FLOW_FEATURES)))


def parse_label(label: object, known: Iterable[str], novel_prefix: str = "novel:") -> tuple[str | None, bool]:
    """(class, is_novel) for an answer; (None, False) when it is neither known nor novel."""
    if not isinstance(label, str) or not label.strip():
        return None, False
    text = label.strip()
    by_fold = {k.casefold(): k for k in known}
    name = text[len(novel_prefix):].strip() if text.casefold().startswith(novel_prefix) else None
    for candidate in (text, name):
        if candidate is not None and candidate.casefold() in by_fold:
            return by_fold[candidate.casefold()], False
    if name is not None and _NOVEL_NAME.match(name):
        return name, True
    return None, False


class _Evidence:
    """The labelled store, indexed for neighbour queries in the pooled z-scored space."""

    def __init__(self, store_x: np.ndarray, store_y: np.ndarray, batch_x: np.ndarray,
                 policy: AcceptancePolicy) -> None:
        pooled = np.vstack([store_x, batch_x]) if len(store_x) else batch_x
        self.mean = pooled.mean(axis=0) if len(pooled) else 0.0
        self.std = np.maximum(pooled.std(axis=0), 1e-2) if len(pooled) else 1.0
        self.store = self.scale(store_x)
        self.labels = np.asarray(store_y, dtype=object)
        self.k = min(policy.k, len(store_x))
        self.local_scale = policy.local_scale
        self.radius, self.floor = self._radius(policy) if len(store_x) > policy.k else (None, 0.0)

    def scale(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std

    def _radius(self, policy: AcceptancePolicy) -> tuple[float, float]:
        """The store's radius, and the floor of a neighbour's own reach: the 10th percentile
        of the store's non-zero k-th distances (a row with k exact duplicates still vouches
        for windows as close as the store's tightest classes are spread)."""
        sample = self.store[np.random.default_rng(0).permutation(len(self.store))[:1000]]
        near, _ = self._nearest(sample, self.k + 1)  # column 0 is the point itself
        kth = near[:, -1]
        return (float(np.quantile(kth, policy.radius_quantile) * policy.radius_scale),
                float(np.quantile(kth[kth > 0], 0.1)) if (kth > 0).any() else 0.0)

    def _reach(self, rows: np.ndarray) -> np.ndarray:
        """How far each store row vouches for: `local_scale` x its own k-th neighbour distance."""
        near, _ = self._nearest(self.store[rows], self.k + 1)
        return self.local_scale * np.maximum(near[:, -1], self.floor)

    def _nearest(self, z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances and indices of the k nearest store rows, sorted; in chunks to bound memory."""
        k = min(k, len(self.store))
        sq_store = (self.store * self.store).sum(1)[None, :]
        dists, idxs = [], []
        for start in range(0, len(z), 64):
            c = z[start:start + 64]
            d = np.sqrt(np.maximum((c * c).sum(1)[:, None] + sq_store - 2 * c @ self.store.T, 0.0))
            idx = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else np.argsort(d, axis=1)
            part = np.take_along_axis(d, idx, axis=1)
            order = np.argsort(part, axis=1)
            dists.append(np.take_along_axis(part, order, axis=1))
            idxs.append(np.take_along_axis(idx, order, axis=1))
        if not dists:
            return np.zeros((0, k)), np.zeros((0, k), dtype=int)
        return np.vstack(dists), np.vstack(idxs)

    def neighbours(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels within the radius among the k nearest, and the nearest distance, per row."""
        labels = np.empty(len(z), dtype=object)
        if self.k == 0 or self.radius is None:
            for i in range(len(z)):
                labels[i] = np.empty(0, dtype=object)
            return labels, np.full(len(z), math.inf)
        near, idx = self._nearest(z, self.k)
        rows, inverse = np.unique(idx, return_inverse=True)
        reach = self._reach(rows)[inverse.reshape(idx.shape)] if len(rows) else np.zeros(idx.shape)
        in_range = (near <= self.radius) & (near <= reach)
        for i in range(len(z)):
            labels[i] = self.labels[idx[i][in_range[i]]]
        return labels, near[:, 0] if len(z) else np.zeros(0)


def judge(proposals: Sequence[ProposalLike], features: np.ndarray, *, store_features: np.ndarray,
          store_labels: Sequence[str], known_classes: Iterable[str] = (),
          rankings: Sequence[RankingLike | None] | None = None,
          policy: AcceptancePolicy = AcceptancePolicy()) -> list[Acceptance]:
    """Decide every proposal. `features[i]`, `rankings[i]` belong to `proposals[i]`."""
    if not proposals:
        return []
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) != len(proposals):
        raise ValueError(f"features must be [{len(proposals)}, d], one row per proposal; got {features.shape}")
    store_x = np.asarray(store_features, dtype=np.float64).reshape(len(store_labels), -1) \
        if len(store_labels) else np.zeros((0, features.shape[1]))
    known = set(known_classes) | {str(y) for y in store_labels}
    ok_rows = np.isfinite(features).all(axis=1)
    ev = _Evidence(store_x, np.asarray(store_labels, dtype=object), features[ok_rows], policy)
    z = ev.scale(np.where(ok_rows[:, None], features, 0.0))
    near_labels, nearest = ev.neighbours(z)
    parsed = [parse_label(p.label, known, policy.novel_prefix) for p in proposals]
    out: list[Acceptance | None] = []
    for i, p in enumerate(proposals):
        ranking = rankings[i] if rankings is not None else None
        out.append(_screen(p, parsed[i], bool(ok_rows[i]), policy)
                   or _check_known_or_knn(p, parsed[i], near_labels[i], ev.radius is not None,
                                          ranking, policy))
    _confirm_novel(proposals, parsed, out, z, nearest, ev.radius, policy)
    return [a for a in out if a is not None]


def _decision(p: ProposalLike, label: str | None, reason: Reason, detail: str = "",
              novel: bool = False) -> Acceptance:
    conf = p.confidence if isinstance(p.confidence, (int, float)) else float("nan")
    return Acceptance(str(p.window_id), str(p.label), label, float(conf), reason is Reason.ACCEPTED,
                      reason, novel, detail)


def _screen(p: ProposalLike, parsed: tuple[str | None, bool], row_ok: bool,
            policy: AcceptancePolicy) -> Acceptance | None:
    """Validity, class and confidence: the checks that need no evidence."""
    conf = p.confidence
    if not isinstance(conf, (int, float)) or not math.isfinite(conf) or not 0 <= conf <= 1:
        return _decision(p, None, Reason.INVALID, f"confidence {conf!r} is not in [0, 1]")
    if not row_ok:
        return _decision(p, parsed[0], Reason.INVALID, "window features are not finite")
    label, novel = parsed
    if label is None:
        return _decision(p, None, Reason.UNKNOWN_CLASS if isinstance(p.label, str) and p.label.strip()
                         else Reason.INVALID, f"{str(p.label)[:64]!r} is not a known class")
    if conf < policy.min_confidence:
        return _decision(p, label, Reason.LOW_CONFIDENCE, f"{conf:.2f} < {policy.min_confidence}", novel)
    return None


def _check_known_or_knn(p: ProposalLike, parsed: tuple[str | None, bool], near: np.ndarray,
                        store_judges: bool, ranking: RankingLike | None,
                        policy: AcceptancePolicy) -> Acceptance | None:
    """Neighbours first, then the detector's ranking. None: a novel label left to the cluster rule."""
    label, novel = parsed
    names = near.astype(str)
    mine = float(np.mean(names == label)) if len(names) else 0.0
    if len(names) >= policy.knn_min_neighbours:
        values, counts = np.unique(names, return_counts=True)
        top, share = values[counts.argmax()], counts.max() / len(names)
        if not novel and mine >= policy.knn_min_share:
            return _decision(p, label, Reason.ACCEPTED, f"knn {mine:.0%} of {len(names)} agree")
        if not novel or share >= policy.knn_min_share:
            return _decision(p, label, Reason.DISAGREES_KNN,
                             f"knn says {top} ({share:.0%} of {len(names)})", novel)
    if novel:
        return None
    if len(names) and mine == 0:
        return _decision(p, label, Reason.DISAGREES_KNN, f"the {len(names)} labelled neighbours in range "
                         f"say {sorted(set(names))}")
    if store_judges and not len(names) and not policy.detector_for_far_windows:
        return _decision(p, label, Reason.UNVERIFIED, "far from every labelled window; the detector's "
                         "ranking alone does not confirm a known class there")
    if ranking is not None and label in ranking.class_names:
        order = np.argsort(-np.asarray(ranking.probabilities, dtype=float))[:policy.detector_top]
        top_names = [ranking.class_names[j] for j in order]
        reason = Reason.ACCEPTED if label in top_names else Reason.DISAGREES_DETECTOR
        return _decision(p, label, reason, f"detector top {policy.detector_top}: {top_names}")
    return _decision(p, label, Reason.UNVERIFIED, "no labelled neighbours in range and no detector ranking")


def _confirm_novel(proposals: Sequence[ProposalLike], parsed: list[tuple[str | None, bool]],
                   out: list[Acceptance | None], z: np.ndarray, nearest_store: np.ndarray,
                   radius: float | None, policy: AcceptancePolicy) -> None:
    """Fill in the novel proposals still undecided, group by group (the cluster rule)."""
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(out):
        if a is None:
            groups.setdefault(str(parsed[i][0]), []).append(i)
    for name, members in groups.items():
        if radius is None:
            for i in members:
                out[i] = _decision(proposals[i], name, Reason.UNVERIFIED,
                                   "novel class and too few labelled windows to judge a cluster", True)
            continue
        zs = z[members]
        d = np.sqrt(((zs[:, None, :] - zs[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(d, math.inf)
        d_in = d.min(axis=1) if len(members) > 1 else np.full(1, math.inf)
        consistent = (d_in < nearest_store[members]) & (d_in <= radius)
        support = int(consistent.sum())
        for j, i in enumerate(members):
            ok = bool(consistent[j]) and support >= policy.novel_min_support
            detail = (f"novel cluster of {support} (need {policy.novel_min_support}); "
                      f"nearest member {d_in[j]:.2f}, nearest labelled {nearest_store[i]:.2f}")
            out[i] = _decision(proposals[i], name, Reason.ACCEPTED if ok else Reason.NOVEL_UNCONFIRMED,
                               detail, True)
