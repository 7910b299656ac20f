"""Training a detector bundle from labelled flows, or straight from windows (`train` extra).

Flows are windowed by `inference.windowing.windows_from_frame`, the code the edge runs, and
each window takes `window_label` of its flows' labels, so training sees exactly the tensors
a detector will see. Then: feature statistics from the training windows (near-constant
features neutralised), a class-weighted WindowCNN trained with nuisance augmentation (port
classes randomised, input noise) and early stopping on validation macro-F1, a temperature
fitted on validation logits, thresholds, ONNX export checked against torch, optional
static int8, and a bundle. The validation windows are by default each class's latest ones,
so early stopping and calibration see traffic later than what the network learned from.

    >>> b = train_bundle(flows_df, k=8, seed=0, out_dir="out/model")     # -> Bundle
    >>> b = train_windows(x, mask, labels, class_names=names, out_dir=d)  # from windows

Same seed, same data, same machine and libraries: same weights, same ONNX bytes and the same
bundle version (timings live in `metrics`, which the version ignores). Elsewhere the float64
class-distance buffers can differ in their last bits: the default bundle 7ef2386b (shipped
until 2026-12-06), retrained at the commit that made it on 2026-12-06, came out as 3241fbcd,
with identical weights, thresholds and temperature and one buffer (members.2.proj) 2.7e-15
off. torch is imported when a function runs, never at import, so this module is cheap to
import.
"""
from __future__ import annotations

import math
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from contracts.errors import ModelError
from contracts.window import WindowSpec
from inference.bundle import Bundle, BundleMeta, OnnxFile, Thresholds, write_bundle
from inference.calibration import (T_MAX, T_MIN, energy_threshold, expected_calibration_error,
                                   fit_temperature, nll)
from inference.datasets.lab import CARRIES, RECORDED_DST, RECORDED_SRC
from inference.features import N_FEATURES, FeatureSchema
from inference.history import N_HISTORY
from inference.onnx_detector import calibrate
from inference.scores import accuracy, confusion_matrix, macro_f1
from inference.support import SUPPORT_FEATURES, flow_support
from inference.windowing import KeyMode, stack_windows, window_label, windows_from_frame

# Port-class features and the raw values each class takes (see port_class_dropout).
PORT_CLASSES: tuple[tuple[tuple[str, ...], tuple[tuple[float, ...], ...]], ...] = (
    (("dst_port_wellknown", "dst_port_registered"), ((1, 0), (0, 1), (0, 0))),
    (("src_port_wellknown",), ((1,), (0,))),
)
IGNORED_STD = 1e4
MIN_OOD_WINDOWS = 50


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and threshold settings. All of it is recorded in bundle.json."""

    epochs: int = 60
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 10
    val_fraction: float = 0.2
    # "tail": each class's last val_fraction of windows (in the given, i.e. time, order)
    # validate, so validation is a later stretch of traffic, close to a run never seen;
    # "random": a random stratified fraction (for shuffled inputs, e.g. real + synthetic).
    val_split: str = "tail"
    # Gaussian noise (in standard deviations) added to real positions of training windows.
    input_noise: float = 0.1
    channels: int = 64
    hidden: int = 64
    dropout: float = 0.3
    max_class_weight: float = 20.0
    # Chance that a training window's destination-port class (well-known / registered /
    # dynamic), and independently its source-port class, is replaced by a random one:
    # attackers choose both ports (a scan of 1-350 from source port 123 is still a scan),
    # so a port class seen with one attack in training must not decide the verdict.
    port_class_dropout: float = 0.5
    # A feature whose training std is below this carries no learnable signal; its std is set
    # to IGNORED_STD so it normalises to ~0 and cannot swing a verdict when it does vary
    # (e.g. a scan sent from source port 123 when training never had a well-known one).
    min_feature_std: float = 0.05
    confidence: float = 0.8
    # The floor for an attack verdict, if other than `confidence` (which then holds for
    # benign): a window passes as benign only when the detector is sure, while an attack
    # class at a lower confidence still raises its alert instead of waiting for a person.
    attack_confidence: float | None = None
    ood_quantile: float = 0.995
    # Per-protocol flow support (inference.support): the largest training flow of each
    # protocol, plus this margin in log space (log 2: twice the packets or bytes), bounds
    # what the model may call anything; beyond it a window is uncertain. None: no gate.
    support_margin: float | None = round(math.log(2), 4)
    max_int8_drop: float = 0.005  # int8 is kept only within 0.5 accuracy points of fp32
    threads: int = 2
    # Outlier exposure: benign windows whose host history is made `outlier_rate` times as
    # intense (flows, new peers, new services) are trained towards a uniform prediction
    # with this weight, so "benign flows at attack rates" is not benign. 0 turns it off.
    outlier_weight: float = 0.5
    # How much more intense than the most intense benign host seen (its 99.9th percentile,
    # per history feature) an outlier is: log-uniform in this range. Relative to the top of
    # benign, not to each window, so no intensity a benign host really had is taught away.
    outlier_rate: tuple[float, float] = (1.5, 30.0)
    # Which benign windows are intensified: "src" (a host's own activity only) or "all"
    # (also a host's fan-in, the dst view). "all" by default: with "src" only, floods seen
    # from the victim (icmp, udp, ftp brute force) were called benign in 47-78% of held-out
    # windows; with "all" 1-17%, at the same benign false-alert rate (experiment open-world).
    outlier_views: str = "all"
    # Link conditions stretch or squeeze a window's times (round trips, rate limits): each
    # training window's time features are shifted together by N(0, timing_jitter) in log
    # space (1.0: times x e^N(0,1)). 0 turns it off.
    timing_jitter: float = 0.0
    # Members of the ensemble (inference.model.Ensemble), each trained with its own seed
    # (seed * 1000 + i); their logits are averaged in the exported graph.
    members: int = 3
    # The member-disagreement gate (inference.onnx_detector): the share of the validation
    # windows that are benign and called benign whose lowest member's p(benign) may fall
    # under the gate's tau (0.005: tau is that score's 0.5% quantile there, the budget the
    # energy gate's ood_quantile spends on all windows). The graph then also returns the
    # members' logits. None (or one member): no gate.
    member_gate: float | None = None
    # Copies of every attack run re-rendered as other tools, settings and links would have
    # sent it (inference.datasets.variation: pace, round trip, sizes, lost answers, probe
    # flags), windowed by the edge's code beside the real runs; train_bundle only. 0: off.
    run_variants: int = 0
    # Beside each lab capture with its attack runs apart (each from a host of its own), its
    # attack windows as the lab recorded them: one attacker address running its attacks one
    # after another, so a host's history holds its earlier attacks beside a later one, as an
    # intruder that keeps its address looks (data/openworld/lab-heldout-as-recorded.toml).
    # Only windows holding a flow whose address the separation moved are added (the rest are
    # the same windows twice). Needs the recorded addresses (inference.datasets.lab.load_lab
    # with separate_runs); train_bundle only. False: off.
    recorded_attacks: bool = False
    # A copy of this share of the real attack windows (with `recorded_attacks`, those too)
    # whose host-history features are another attack class's window's, label kept: the
    # window's own flows must decide its class when the host's past was another attack (a
    # SYN flood from an address that scanned a minute before). train_bundle only. 0: off.
    history_swap: float = 0.0
    # Copies of each lab capture's benign flows over longer round trips (the attack copies'
    # 0-300 ms; inference.datasets.variation.benign_link_copies), beside the attack copies.
    # 0: off.
    benign_link_copies: int = 0


CAPTURE_COLUMN = "capture"
# How the shipped default bundle is trained (`edgeloop train`, the open-world experiment).
RECIPE = TrainConfig(run_variants=3, confidence=0.9, attack_confidence=0.6, recorded_attacks=True)


@dataclass
class Windows:
    """Training input: raw (unnormalised) x [n, F, K], mask [n, K] and string labels."""

    x: np.ndarray
    mask: np.ndarray
    labels: list[str]
    flow_ids: list[list[str]] | None = None  # per window, when built from flows

    def take(self, idx: np.ndarray) -> "Windows":
        return Windows(self.x[idx], self.mask[idx], [self.labels[i] for i in idx],
                       None if self.flow_ids is None else [self.flow_ids[i] for i in idx])

    def plus(self, other: "Windows") -> "Windows":
        """These windows, then `other`'s (training input only: flow ids are not kept)."""
        return Windows(np.concatenate([self.x, other.x]), np.concatenate([self.mask, other.mask]),
                       self.labels + other.labels)


def frame_windows(df: Any, k: int = 8, seconds: float = 10.0, key: KeyMode = "src",
                  benign: str = "benign", views: Sequence[str] | None = None) -> Windows:
    """Window a labelled flow DataFrame exactly as the edge does and label each window.

    Rows with different values in a `capture` column are separate captures (separate
    networks, separate days): each is windowed on its own, so no host history runs from
    one into the next."""
    parts = ([g for _, g in df.groupby(CAPTURE_COLUMN, sort=False)]
             if CAPTURE_COLUMN in getattr(df, "columns", ()) else [df])
    closed, labels = [], []
    for part in parts:
        if CARRIES in part.columns and part[CARRIES].notna().all():
            got = principal_windows(part, k, seconds, key, benign, views)
        else:
            ws = windows_from_frame(part, k=k, seconds=seconds, key=key, label_column="label", views=views)
            got = [(w, window_label(w.labels, benign)) for w in ws]
        closed += [w for w, _ in got]
        labels += [lab for _, lab in got]
    x, mask = stack_windows(closed, k)
    return Windows(x, mask, labels, [list(w.flow_ids) for w in closed])


def principal_windows(part: Any, k: int, seconds: float, key: KeyMode, benign: str,
                       views: Sequence[str] | None) -> list[tuple[Any, str]]:
    """Windows of a capture whose flows say in which views they carry their attack
    (inference.datasets.lab.CARRIES), judged as the open-world evaluation judges them:
    a window is labelled with the attacks its own flows carry in its view, or, when it
    carries none, with its raw label if attack flows are at least 2 and half of it (a
    one-source flood seen from its victim). A window with fewer (a sweep target's
    destination window with one probe among its clients' flows, or alone), and a benign
    destination window of a host receiving an attack then, are left out: no detector can
    be right about them, and training on their raw labels teaches that one SYN from a new
    peer is a sweep."""
    from inference.openworld_captures import attacked_times
    from inference.openworld_verdicts import ATTACK_LOOKBACK_MS

    tagged = part.assign(_wl=part["label"].astype(str) + "\x1f" + part[CARRIES].astype(str))
    ws = windows_from_frame(tagged, k=k, seconds=seconds, key=key, label_column="_wl", views=views)
    attacked = attacked_times(part, benign)
    out = []
    for w in ws:
        letter = {"src": "s", "dst": "d"}.get(w.view, "")
        pairs = [str(t).split("\x1f", 1) for t in w.labels]
        carried = [lab for lab, c in pairs if lab != benign and (not letter or letter in c)]
        if carried:
            out.append((w, window_label(carried, benign)))
            continue
        attack = [lab for lab, _ in pairs if lab != benign]
        if len(attack) >= max(2, len(pairs) / 2):
            out.append((w, window_label(attack, benign)))  # mostly the attack: a flood's victim
            continue
        if attack:
            continue                                  # collateral: a stray probe among benign flows
        ts = attacked.get(str(w.key)) if w.view == "dst" else None
        if ts is not None:
            j = np.searchsorted(ts, w.first_seen_ms - ATTACK_LOOKBACK_MS)
            if j < len(ts) and ts[j] <= w.last_seen_ms:
                continue                              # benign flows of a host under attack
        out.append((w, benign))
    return out


def train_bundle(train_df: Any, *, val_df: Any = None, k: int = 8, seconds: float = 10.0,
                 key: KeyMode = "src", views: Sequence[str] | None = None, seed: int = 0,
                 epochs: int | None = None,
                 class_names: Sequence[str] | None = None, exclude_classes: Sequence[str] = (),
                 int8: bool = False, progress: bool = True, out_dir: str | Path | None = None,
                 benign: str = "benign", dataset: str = "", config: TrainConfig | None = None,
                 name: str = "edgeloop-cnn") -> Bundle:
    """Train on labelled flows (FlowRecord columns + `label`) and write a bundle to out_dir.

    `exclude_classes` drops those classes' flows before windowing, so the detector never
    sees them (for OOD experiments). Without `val_df`, `val_fraction` of each class's
    training windows validates (the latest ones by default; see TrainConfig.val_split). `out_dir=None` writes to a fresh temporary directory.
    """
    t0 = time.perf_counter()
    drop = set(exclude_classes)
    if drop:
        train_df = train_df[~train_df["label"].isin(drop)]
        val_df = None if val_df is None else val_df[~val_df["label"].isin(drop)]
    views = list(views or (key,))
    cfg = config or TrainConfig()
    tr = frame_windows(train_df, k, seconds, key, benign, views)
    val = None if val_df is None else frame_windows(val_df, k, seconds, key, benign, views)
    n_variants = 0
    if cfg.run_variants > 0 or cfg.benign_link_copies > 0 or cfg.recorded_attacks or cfg.history_swap > 0:
        tr, val, n_variants = _with_variants(train_df, tr, val, cfg, seed, (k, seconds, key, benign, views))
    source = {"dataset": dataset, "train_flows": int(len(train_df)), "variant_flows": n_variants,
              **({"variation": _variation_record()} if n_variants else {}),
              "val_flows": None if val_df is None else int(len(val_df)),
              "excluded_classes": sorted(drop)}
    return train_windows(tr.x, tr.mask, tr.labels, val=val, class_names=class_names,
                         window=WindowSpec(k=k, seconds=seconds, key=views[0], views=views), seed=seed,
                         epochs=epochs, int8=int8, progress=progress, out_dir=out_dir,
                         benign=benign, source=source, config=config, name=name, t0=t0)


def _variation_record() -> dict[str, Any]:
    from inference.datasets.variation import Variation

    return asdict(Variation())


def _with_variants(df: Any, tr: Windows, val: Windows | None, cfg: TrainConfig, seed: int,
                   spec: tuple) -> tuple[Windows, Windows, int]:
    """Training windows plus those of `cfg.run_variants` re-rendered copies of each attack
    run (inference.datasets.variation); validation stays real. Without `val`, the usual
    split of the real windows validates, and no flow of a validation window is copied, so
    validation never meets a near twin of itself in training."""
    from inference.datasets.variation import run_variants

    if val is None:
        y = np.array(tr.labels, dtype=object)
        tr_idx, va_idx = _stratified_split(_encode(list(y), sorted(set(tr.labels))), cfg.val_fraction,
                                           np.random.default_rng(seed), tail=cfg.val_split == "tail")
        tr, val = tr.take(tr_idx), tr.take(va_idx)
        held = {f for ids in (val.flow_ids or []) for f in ids}
        df = df[~df["flow_id"].astype(str).isin(held)]
    if CAPTURE_COLUMN not in df.columns:
        df = df.assign(**{CAPTURE_COLUMN: "capture"})
    extra = run_variants(df, copies=cfg.run_variants, seed=seed, benign=spec[3])
    if cfg.benign_link_copies > 0:
        import pandas as pd

        from inference.datasets.variation import Variation, benign_link_copies

        slow = benign_link_copies(df, cfg.benign_link_copies, seed, Variation().rtt_ms, benign=spec[3])
        extra = pd.concat([extra, slow], ignore_index=True) if len(slow) else extra
    n_rec = 0
    if cfg.recorded_attacks:
        rec, n_rec = recorded_attack_windows(df, spec)
        tr = tr.plus(rec)
    if cfg.history_swap > 0:
        tr = tr.plus(history_swapped(tr, cfg.history_swap, np.random.default_rng(seed + 7919), spec[3]))
    if not len(extra):
        return tr, val, n_rec
    return tr.plus(frame_windows(extra, *spec)), val, int(len(extra)) + n_rec


def history_swapped(w: Windows, share: float, rng: np.random.Generator, benign: str = "benign") -> Windows:
    """Copies of `share` of `w`'s attack windows, each with the host-history features of a
    window of another attack class (flow by flow; past the donor's last flow, its last
    flow's), its own flows, mask and label kept (TrainConfig.history_swap)."""
    labels = np.array(w.labels, dtype=object)
    attack = np.flatnonzero(labels != benign)
    n = int(round(share * len(attack)))
    if n == 0 or len(set(labels[attack])) < 2:
        return Windows(w.x[:0], w.mask[:0], [], [])
    take = rng.choice(attack, size=n, replace=False)
    donors = np.empty(n, dtype=np.int64)
    for i, t in enumerate(take):
        while True:  # another class: at least two attack classes, so this ends
            d = attack[rng.integers(len(attack))]
            if labels[d] != labels[t]:
                donors[i] = d
                break
    k = w.x.shape[2]
    last = np.maximum(w.mask[donors].sum(axis=1).astype(np.int64) - 1, 0)
    pos = np.minimum(np.arange(k)[None, :], last[:, None])  # [n, K] donor flow per position
    x = w.x[take].copy()
    hist = slice(N_FEATURES - N_HISTORY, N_FEATURES)
    x[:, hist, :] = np.take_along_axis(w.x[donors][:, hist, :], pos[:, None, :], axis=2)
    return Windows(x, w.mask[take].copy(), [str(lab) for lab in labels[take]], None)


def recorded_attack_windows(df: Any, spec: tuple) -> tuple[Windows, int]:
    """The attack windows of the lab captures in `df` as recorded (TrainConfig.recorded_attacks):
    each capture whose attack runs were set apart, windowed again with its recorded addresses,
    keeping the attack windows that hold a flow the separation moved. Returns them and how
    many flows were windowed for them."""
    k, seconds, key, benign, views = spec
    none = Windows(np.zeros((0, N_FEATURES, k), np.float32), np.zeros((0, k), np.float32), [], [])
    if RECORDED_SRC not in df.columns:
        return none, 0
    lab = df[df[RECORDED_SRC].notna()]
    moved = ((lab[RECORDED_SRC].astype(str) != lab["src_ip"].astype(str))
             | (lab[RECORDED_DST].astype(str) != lab["dst_ip"].astype(str))).to_numpy()
    if not moved.any():
        return none, 0
    if CAPTURE_COLUMN in lab.columns:  # only the captures whose runs were set apart
        keep = lab[CAPTURE_COLUMN].isin(set(lab.loc[moved, CAPTURE_COLUMN])).to_numpy()
        lab, moved = lab[keep], moved[keep]
    rec = lab.assign(src_ip=lab[RECORDED_SRC], dst_ip=lab[RECORDED_DST])
    moved_ids = set(rec.loc[moved, "flow_id"].astype(str))
    w = frame_windows(rec, k, seconds, key, benign, views)
    pick = np.array([lab_ != benign and any(f in moved_ids for f in ids)
                     for lab_, ids in zip(w.labels, w.flow_ids or [])], dtype=bool)
    return w.take(np.flatnonzero(pick)), int(len(rec))


def train_windows(x: np.ndarray, mask: np.ndarray, labels: Sequence[str], *,
                  class_names: Sequence[str] | None = None, val: Windows | None = None,
                  window: WindowSpec | None = None, seed: int = 0, epochs: int | None = None,
                  int8: bool = False, progress: bool = True, out_dir: str | Path | None = None,
                  benign: str = "benign", source: dict[str, Any] | None = None,
                  config: TrainConfig | None = None, name: str = "edgeloop-cnn",
                  t0: float | None = None) -> Bundle:
    """Train from raw windows x [n, F, K], mask [n, K] and one string label per window.

    For the retraining loop: real and synthetic windows can be mixed freely, provided they
    were built by the edge's windowing (or match it) and the mask marks real flows. Pass
    `val=` with real held-out windows then: without it, the default "tail" split validates
    on the last windows of each class, which would be the synthetic ones if appended last.
    """
    t0 = time.perf_counter() if t0 is None else t0
    cfg = config or TrainConfig()
    cfg = replace(cfg, epochs=epochs) if epochs is not None else cfg
    window = window or WindowSpec(k=x.shape[2])
    if x.shape[2] != window.k or mask.shape != (x.shape[0], x.shape[2]):
        raise ModelError(f"windows {x.shape} / mask {mask.shape} do not match K={window.k}")
    names = list(class_names) if class_names else _default_classes(labels, benign)
    y = _encode(labels, names)
    if val is None:
        tr_idx, va_idx = _stratified_split(y, cfg.val_fraction, np.random.default_rng(seed),
                                           tail=cfg.val_split == "tail")
        xv, mv, yv = x[va_idx], mask[va_idx], y[va_idx]
        x, mask, y = x[tr_idx], mask[tr_idx], y[tr_idx]
    else:
        xv, mv, yv = val.x, val.mask, _encode(val.labels, names)
    if len(y) == 0:
        raise ModelError("no training windows")
    schema, ignored = _fit_schema(x, mask, cfg.min_feature_std)
    support = flow_support(x, mask, cfg.support_margin) if cfg.support_margin is not None else {}
    tr = _Set(schema.normalise(x, mask), mask, y)
    va = _Set(schema.normalise(xv, mv), mv, yv)
    outliers = None
    if cfg.outlier_weight > 0 and benign in names:
        pick = y == names.index(benign)
        if cfg.outlier_views == "src":
            from inference.features import FEATURE_NAMES
            pick &= x[:, FEATURE_NAMES.index("view_dst"), 0] == 0
        ox, om = intensified(x[pick], mask[pick], np.random.default_rng(seed), cfg.outlier_rate)
        outliers = _Set(schema.normalise(ox, om), om, np.zeros(len(ox), np.int64))
    with _deterministic(seed, cfg.threads):
        fits = []
        for i in range(max(1, cfg.members)):
            member_seed = seed if cfg.members <= 1 else seed * 1000 + i
            import torch

            torch.manual_seed(member_seed)
            fits.append(_fit(tr, va, len(names), cfg, member_seed, progress, _port_codes(schema), outliers,
                             _time_rows(schema)))
        fit = fits[0] if len(fits) == 1 else _ensemble(fits, tr, va)
        gate = cfg.member_gate is not None and fit.member_val_logits is not None
        onnx_bytes = _export(fit.model, va if len(va.y) else tr, members=gate)
    int8_bytes, int8_info, speed = (_int8(onnx_bytes, tr, va, len(names), cfg, seed)
                                    if int8 else (None, {"requested": False}, {}))
    meta = _meta(fit, tr, va, names, schema, window, cfg, seed, benign, source or {}, name)
    meta.thresholds.support = support
    if support:
        meta.training["thresholds"]["support"] = (
            f"per protocol, the largest real flow of the training windows ({', '.join(SUPPORT_FEATURES)})"
            f" plus {cfg.support_margin} in log space")
    meta.training["int8"] = int8_info
    meta.training["ignored_features"] = ignored
    meta.metrics["int8_speed"] = speed
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="edgeloop-bundle-"))
    meta.metrics["train_seconds"] = round(time.perf_counter() - t0, 3)
    return write_bundle(out, onnx_bytes, meta, int8_bytes)


@dataclass
class _Set:
    """Normalised windows with their mask and class indices."""

    x: np.ndarray
    mask: np.ndarray
    y: np.ndarray


def _fit_schema(x: np.ndarray, mask: np.ndarray, min_std: float) -> tuple[FeatureSchema, list[str]]:
    """FeatureSchema.fit, with (near-)constant features neutralised (see min_feature_std)."""
    fitted = FeatureSchema.fit(x, mask)
    ignored = [n for n, sd in zip(fitted.names, fitted.std) if sd < min_std]
    std = tuple(IGNORED_STD if n in ignored else sd for n, sd in zip(fitted.names, fitted.std))
    return replace(fitted, std=std), ignored


def _default_classes(labels: Sequence[str], benign: str) -> list[str]:
    rest = sorted(set(labels) - {benign})
    return [benign, *rest]


def _encode(labels: Sequence[str], names: list[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ModelError(f"labels {unknown} are not in class_names {names}")
    return np.array([index[lab] for lab in labels], dtype=np.int64)


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator,
                      tail: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per class, `fraction` of the windows (at least one, if the class has two) validate:
    the last ones in order with `tail`, else a random choice."""
    val: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[::-1] if tail else rng.permutation(idx)
        n_val = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        val.append(idx[:max(n_val, 1 if len(idx) > 1 else 0)])
    va = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    tr = np.setdiff1d(np.arange(len(y)), va)
    return tr, va


@contextmanager
def _deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seeded, deterministic torch on a fixed thread count; the previous state is restored."""
    try:
        import torch
    except ImportError as exc:
        raise ModelError("training needs torch: pip install 'edgeloop[train]'") from exc

    prev = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(prev[0])
        torch.use_deterministic_algorithms(prev[1])


@dataclass
class _Fit:
    model: Any
    class_weights: list[float]
    epochs_run: int
    best_epoch: int
    best_val_f1: float
    history: list[dict[str, float]]
    val_logits: np.ndarray
    train_logits: np.ndarray
    # [M, n, C] per ensemble member (validation, training); None for a single network.
    member_val_logits: np.ndarray | None = None
    member_train_logits: np.ndarray | None = None


def _class_weights(y: np.ndarray, n_classes: int, cap: float) -> np.ndarray:
    """Balanced weights n / (C * count), capped; classes absent from training get 0."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return np.minimum(w, cap)


TIME_FEATURES = ("log_duration_ms", "log_mean_piat_ms", "log_stddev_piat_ms", "log_max_piat_ms", "log_gap_ms")


def _time_rows(schema: FeatureSchema) -> tuple[list[int], np.ndarray]:
    """Rows of the time features and 1 / their std: a log-space shift, normalised."""
    rows = [schema.names.index(n) for n in TIME_FEATURES]
    return rows, (1.0 / np.asarray(schema.std, dtype=np.float64)[rows]).astype(np.float32)


def _port_codes(schema: FeatureSchema) -> list[tuple[list[int], np.ndarray]]:
    """Per port-class group: its feature rows and their normalised values for each class."""
    mean, std = np.array(schema.mean), np.array(schema.std)
    out = []
    for names, raw in PORT_CLASSES:
        rows = [schema.names.index(n) for n in names]
        out.append((rows, ((np.array(raw, dtype=np.float64) - mean[rows]) / std[rows]).astype(np.float32)))
    return out


def _shuffle_port_class(xb: Any, mb: Any, groups: list[tuple[list[int], Any]], p: float,
                        gen: Any) -> Any:
    """Per group, with probability p per window, give all its flows one random port class."""
    import torch

    out, n = xb.clone(), xb.shape[0]
    for rows, codes in groups:
        hit = torch.rand(n, generator=gen) < p
        new = codes[torch.randint(0, len(codes), (n,), generator=gen)][:, :, None] * mb[:, None, :]
        out[:, rows, :] = torch.where(hit[:, None, None], new, out[:, rows, :])
    return out


def intensified(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                rate: tuple[float, float], top: float = 0.999) -> tuple[np.ndarray, np.ndarray]:
    """Copies of (benign) raw windows whose hosts act beyond any benign host in `x`: their
    flow counts, and for half of them their new peers and services too (fan-out), set to
    `r` times the `top` quantile of the benign values, r log-uniform in `rate`; and for half
    of them every flow failed (no answer). What such a window means, the model has not seen:
    it should not call it benign."""
    from inference.features import FEATURE_NAMES
    from inference.history import HISTORY_SCALES_S

    out = x.copy()
    n = len(out)
    real = mask.astype(bool)
    r = np.exp(rng.uniform(np.log(rate[0]), np.log(rate[1]), n))[:, None]
    fan = rng.random(n) < 0.5
    fail = rng.random(n) < 0.5
    for s in HISTORY_SCALES_S:
        idx = {stat: FEATURE_NAMES.index(f"h{int(s)}_{stat}") for stat in ("flows", "new_peers", "new_services")}
        for stat, rows in (("flows", slice(None)), ("new_peers", fan), ("new_services", fan)):
            i = idx[stat]
            hi = np.expm1(np.quantile(x[:, i, :][real], top)) if real.any() else 1.0
            out[rows, i, :] = np.log1p(np.maximum(np.expm1(out[rows, i, :]), hi) * r[rows])
        f = idx["flows"]  # a host cannot have more new peers than flows
        out[:, f, :] = np.maximum.reduce([out[:, f, :], out[:, idx["new_peers"], :], out[:, idx["new_services"], :]])
        out[fail, FEATURE_NAMES.index(f"h{int(s)}_failed"), :] = 1.0
    return out * mask[:, None, :], mask


def _fit(tr: _Set, va: _Set, n_classes: int, cfg: TrainConfig, seed: int, progress: bool,
         port_codes: list[tuple[list[int], np.ndarray]], outliers: _Set | None = None,
         time_rows: tuple[list[int], np.ndarray] | None = None) -> _Fit:
    import torch

    from inference.export import torch_logits
    from inference.model import ModelConfig, WindowCNN, fit_distance

    model = WindowCNN(ModelConfig(tr.x.shape[1], n_classes, cfg.channels, cfg.hidden,
                                  dropout=cfg.dropout))
    weights = _class_weights(tr.y, n_classes, cfg.max_class_weight)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    xt, mt, yt = torch.from_numpy(tr.x), torch.from_numpy(tr.mask), torch.from_numpy(tr.y)
    if outliers is not None:
        ox, om = torch.from_numpy(outliers.x), torch.from_numpy(outliers.mask)
    gen = torch.Generator().manual_seed(seed)
    batch = _batch_size(len(yt), cfg.batch_size)
    groups = [(rows, torch.from_numpy(codes)) for rows, codes in port_codes]
    best: tuple[float, float] = (-1.0, float("inf"))
    best_state, best_epoch, history = None, -1, []
    with _progress(progress, cfg.epochs) as step:
        for epoch in range(cfg.epochs):
            model.train()
            perm, total = torch.randperm(len(yt), generator=gen), 0.0
            for i in range(0, len(yt), batch):
                idx = perm[i:i + batch]
                xb, mb = xt[idx], mt[idx]
                if cfg.port_class_dropout > 0:
                    xb = _shuffle_port_class(xb, mb, groups, cfg.port_class_dropout, gen)
                if cfg.timing_jitter > 0 and time_rows is not None:
                    rows, inv = time_rows
                    shift = torch.randn(len(idx), generator=gen) * cfg.timing_jitter
                    xb = xb.clone()
                    xb[:, rows, :] += shift[:, None, None] * torch.from_numpy(inv)[None, :, None] * mb[:, None, :]
                if cfg.input_noise > 0:
                    xb = xb + cfg.input_noise * torch.randn(xb.shape, generator=gen) * mb[:, None, :]
                opt.zero_grad()
                loss = loss_fn(model(xb, mb), yt[idx])
                if outliers is not None:
                    oi = torch.randint(0, len(ox), (max(1, len(idx) // 4),), generator=gen)
                    z = model(ox[oi], om[oi])
                    loss = loss + cfg.outlier_weight * (torch.logsumexp(z, 1) - z.mean(1)).mean()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            sched.step()
            row = _validate(torch_logits(model, va.x, va.mask), va.y, n_classes, total / len(yt), epoch)
            history.append(row)
            if (row["val_macro_f1"], -row["val_nll"]) > (best[0], -best[1]):
                best, best_epoch = (row["val_macro_f1"], row["val_nll"]), epoch
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            step(row, best[0])
            if epoch - best_epoch >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        feats = model.features(torch.from_numpy(tr.x), torch.from_numpy(tr.mask)).numpy()
    shifted = fit_distance(model, feats, tr.y).eval()
    return _Fit(shifted, weights.tolist(), len(history), best_epoch, best[0], history,
                torch_logits(shifted, va.x, va.mask), torch_logits(shifted, tr.x, tr.mask))


def _ensemble(fits: list[_Fit], tr: _Set, va: _Set) -> _Fit:
    """One _Fit for the mean of the members' logits."""
    from inference.export import torch_logits
    from inference.model import Ensemble

    model = Ensemble([f.model for f in fits]).eval()
    return _Fit(model, fits[0].class_weights, sum(f.epochs_run for f in fits),
                fits[0].best_epoch, float(np.mean([f.best_val_f1 for f in fits])),
                [{"member": i, **row} for i, f in enumerate(fits) for row in f.history],
                torch_logits(model, va.x, va.mask) if len(va.y) else np.zeros((0, fits[0].val_logits.shape[1])),
                torch_logits(model, tr.x, tr.mask),
                np.stack([f.val_logits for f in fits]), np.stack([f.train_logits for f in fits]))


def _batch_size(n: int, largest: int) -> int:
    """Small sets get smaller batches (at least ~10 steps an epoch), so a few epochs learn."""
    return max(8, min(largest, -(-n // 10)))


def _validate(logits: np.ndarray, yv: np.ndarray, n_classes: int, train_loss: float,
              epoch: int) -> dict[str, float]:
    row = {"epoch": epoch + 1, "train_loss": round(train_loss, 6)}
    if len(yv) == 0:  # no validation: fall back to training loss for model selection
        return {**row, "val_macro_f1": 0.0, "val_nll": train_loss}
    cm = confusion_matrix(yv, logits.argmax(axis=1), n_classes)
    return {**row, "val_macro_f1": macro_f1(cm), "val_nll": nll(logits, yv)}


@contextmanager
def _progress(enabled: bool, epochs: int) -> Iterator[Any]:
    """A rich progress bar on stderr (one tick per epoch), or a no-op."""
    if not enabled:
        yield lambda row, best: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"))
    with Progress(*cols, console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=epochs)

        def step(row: dict[str, float], best: float) -> None:
            bar.update(task, advance=1, description=(
                f"loss {row['train_loss']:.4f}  val macro-F1 {row['val_macro_f1']:.4f}"
                f"  best {best:.4f}"))
        yield step


def _export(model: Any, sample: _Set, members: bool = False) -> bytes:
    from inference.export import export_onnx

    return export_onnx(model, sample.x, sample.mask, members=members)


def _meta(fit: _Fit, tr: _Set, va: _Set, names: list[str], schema: FeatureSchema,
          window: WindowSpec, cfg: TrainConfig, seed: int, benign: str, source: dict[str, Any],
          name: str) -> BundleMeta:
    """Temperature, thresholds and the record of how the bundle was made."""
    has_val = len(va.y) > 0
    cal_logits, cal_y = (fit.val_logits, va.y) if has_val else (fit.train_logits, tr.y)
    if np.any(cal_logits.argmax(axis=1) != cal_y):
        temperature = fit_temperature(cal_logits, cal_y)
        how = (f"fitted on {'validation' if has_val else 'training'} logits by NLL "
               f"(golden-section over 1/T in [{T_MIN}, {T_MAX}])")
    else:  # no errors: NLL keeps falling as T -> 0, so it has no minimum to fit
        temperature = 1.0
        how = (f"kept at 1.0: the {len(cal_y)} {'validation' if has_val else 'training'} windows "
               "have no errors, so NLL has no minimum over T")
    # Validation windows were not used to fit the network or the class distances, so their
    # scores are the honest in-distribution reference; training windows (closer to the
    # class means than anything new) are used only when there are too few.
    ood_on_val = len(va.y) >= MIN_OOD_WINDOWS
    ood_logits = fit.val_logits if ood_on_val else np.concatenate([fit.train_logits, fit.val_logits])
    ood = energy_threshold(ood_logits, temperature, cfg.ood_quantile)
    member_benign, gate_how = _member_gate(fit, tr, va, names.index(benign) if benign in names else None,
                                           temperature, cfg, ood, ood_on_val)
    training = {
        "seed": seed, "config": asdict(cfg), "source": source,
        "model": {"arch": "WindowCNN", "members": max(1, cfg.members), **fit.model.net.config.to_json(),
                  "ood_distance": "logits minus D log(1 + d/D), d the min-class squared Mahalanobis distance of "
                                  "the pooled features (class means, tied covariance of the "
                                  "training windows); softmax unchanged, energy raised"},
        "windows": {"train": _counts(tr.y, names), "val": _counts(va.y, names)},
        "class_weights": dict(zip(names, map(float, np.round(fit.class_weights, 6)))),
        "batch_size": _batch_size(len(tr.y), cfg.batch_size), "epochs_run": fit.epochs_run,
        "best_epoch": fit.best_epoch + 1,
        "temperature": how,
        "thresholds": {
            "confidence": f"fixed at {cfg.confidence} (calibrated max probability)"
                          + ("" if cfg.attack_confidence is None
                             else f"; {cfg.attack_confidence} for attack classes"),
            "ood": f"{cfg.ood_quantile:.1%} quantile of free energy (incl. the distance term) on {len(ood_logits)} in-distribution "
                   f"{'validation' if ood_on_val else 'train+validation'} windows",
            **({"member_benign": gate_how} if gate_how else {})},
    }
    metrics: dict[str, Any] = {"val_macro_f1": fit.best_val_f1, "history": fit.history}
    if has_val:
        metrics["val_ece_uncalibrated"] = expected_calibration_error(calibrate(fit.val_logits, 1.0)[0], va.y)
        metrics["val_ece"] = expected_calibration_error(calibrate(fit.val_logits, temperature)[0], va.y)
    return BundleMeta(name=name, created_ms=int(time.time() * 1000), class_names=names,
                      benign_class=benign, window=window, features=schema.to_json(),
                      temperature=temperature,
                      thresholds=Thresholds(confidence=cfg.confidence, ood=ood, member_benign=member_benign,
                                            per_class=(
                          {} if cfg.attack_confidence is None
                          else {c: cfg.attack_confidence for c in names if c != benign})),
                      onnx=OnnxFile(file="model.onnx", sha256=""), metrics=metrics,
                      training=training)


def _member_gate(fit: _Fit, tr: _Set, va: _Set, benign: int | None, temperature: float,
                 cfg: TrainConfig, ood: float | None, on_val: bool) -> tuple[float | None, str]:
    """The member-disagreement gate's tau and how it was set (TrainConfig.member_gate);
    (None, "") when there is no gate."""
    from inference.calibration import member_benign_threshold

    if cfg.member_gate is None or fit.member_val_logits is None or benign is None:
        return None, ""
    z, y = fit.member_val_logits, va.y
    if not on_val:  # as for the energy gate: too few validation windows, so training too
        z, y = np.concatenate([fit.member_train_logits, z], axis=1), np.concatenate([tr.y, y])
    tau, n = member_benign_threshold(z, y, temperature, benign, cfg.confidence, ood, cfg.member_gate)
    if tau is None:
        return None, "none: no benign window was called benign, so nothing to set it from"
    return tau, (f"{cfg.member_gate:.1%} quantile of the lowest member's p(benign) on the {n} benign "
                 f"{'validation' if on_val else 'train+validation'} windows called benign")


def _counts(y: np.ndarray, names: list[str]) -> dict[str, int]:
    return {n: int(c) for n, c in zip(names, np.bincount(y, minlength=len(names)))}


def _int8(onnx_bytes: bytes, tr: _Set, va: _Set, n_classes: int, cfg: TrainConfig, seed: int
          ) -> tuple[bytes | None, dict[str, Any], dict[str, Any]]:
    """Quantise on training windows; keep int8 only if validation accuracy holds."""
    from inference.export import run_onnx
    from inference.quantize import calibration_sample, measure_speed, quantize_int8

    xc, mc = calibration_sample(tr.x, tr.mask, tr.y, seed=seed)
    q = quantize_int8(onnx_bytes, xc, mc)
    ev = va if len(va.y) else tr
    acc = {tag: accuracy(confusion_matrix(ev.y, run_onnx(b, ev.x, ev.mask).argmax(axis=1), n_classes))
           for tag, b in (("fp32", onnx_bytes), ("int8", q))}
    keep = acc["fp32"] - acc["int8"] <= cfg.max_int8_drop
    info = {"requested": True, "included": keep, "calibration_windows": int(len(xc)),
            "method": "static QDQ, MinMax, uint8 activations / int8 per-channel weights",
            "val_accuracy_fp32": acc["fp32"], "val_accuracy_int8": acc["int8"],
            "rule": f"kept if validation accuracy drops by <= {cfg.max_int8_drop:.1%}"}
    speed = {tag: measure_speed(b, ev.x, ev.mask, batch_sizes=(256,), min_seconds=0.2)[0]
             for tag, b in (("fp32", onnx_bytes), ("int8", q))}
    return (q if keep else None), info, speed
