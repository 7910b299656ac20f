"""Training a detector bundle from labelled flows, or straight from windows (`train` extra).

Flows are windowed by `streams.windowing.windows_from_frame`, the code the edge runs, and
each window takes `window_label` of its flows' labels, so training sees exactly the tensors
a detector will see. Then: feature statistics from the training windows, a class-weighted
WindowCNN with early stopping on validation macro-F1, a temperature fitted on validation
logits, thresholds, ONNX export checked against torch, optional static int8, and a bundle.

    >>> b = train_bundle(flows_df, k=8, seed=0, out_dir="out/model")     # -> Bundle
    >>> b = train_windows(x, mask, labels, class_names=names, out_dir=d)  # from windows

Same seed, same data: same weights, same ONNX bytes and the same bundle version (timings
live in `metrics`, which the version ignores). torch is imported when a function runs,
never at import, so this module is cheap to import.
"""
from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from inference.bundle import Bundle, BundleMeta, OnnxFile, Thresholds, WindowSpec, write_bundle
from inference.calibration import (energy_threshold, expected_calibration_error, fit_temperature,
                                   nll)
from inference.features import FeatureSchema
from inference.onnx_detector import calibrate
from inference.scores import accuracy, confusion_matrix, macro_f1
from streams.errors import ModelError
from streams.windowing import KeyMode, stack_windows, window_label, windows_from_frame


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and threshold settings. All of it is recorded in bundle.json."""

    epochs: int = 60
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 10
    val_fraction: float = 0.2
    channels: int = 64
    hidden: int = 64
    dropout: float = 0.1
    max_class_weight: float = 20.0
    confidence: float = 0.8
    ood_quantile: float = 0.995
    max_int8_drop: float = 0.005  # int8 is kept only within 0.5 accuracy points of fp32
    threads: int = 2


@dataclass
class Windows:
    """Training input: raw (unnormalised) x [n, F, K], mask [n, K] and string labels."""

    x: np.ndarray
    mask: np.ndarray
    labels: list[str]


def frame_windows(df: Any, k: int = 8, seconds: float = 10.0, key: KeyMode = "src",
                  benign: str = "benign") -> Windows:
    """Window a labelled flow DataFrame exactly as the edge does and label each window."""
    closed = windows_from_frame(df, k=k, seconds=seconds, key=key, label_column="label")
    x, mask = stack_windows(closed, k)
    return Windows(x, mask, [window_label(w.labels, benign) for w in closed])


def train_bundle(train_df: Any, *, val_df: Any = None, k: int = 8, seconds: float = 10.0,
                 key: KeyMode = "src", seed: int = 0, epochs: int | None = None,
                 class_names: Sequence[str] | None = None, exclude_classes: Sequence[str] = (),
                 int8: bool = False, progress: bool = True, out_dir: str | Path | None = None,
                 benign: str = "benign", dataset: str = "", config: TrainConfig | None = None,
                 name: str = "edgeloop-cnn") -> Bundle:
    """Train on labelled flows (FlowRecord columns + `label`) and write a bundle to out_dir.

    `exclude_classes` drops those classes' flows before windowing, so the detector never
    sees them (for OOD experiments). Without `val_df`, a stratified `val_fraction` of the
    training windows validates. `out_dir=None` writes to a fresh temporary directory.
    """
    t0 = time.perf_counter()
    drop = set(exclude_classes)
    if drop:
        train_df = train_df[~train_df["label"].isin(drop)]
        val_df = None if val_df is None else val_df[~val_df["label"].isin(drop)]
    tr = frame_windows(train_df, k, seconds, key, benign)
    val = None if val_df is None else frame_windows(val_df, k, seconds, key, benign)
    source = {"dataset": dataset, "train_flows": int(len(train_df)),
              "val_flows": None if val_df is None else int(len(val_df)),
              "excluded_classes": sorted(drop)}
    return train_windows(tr.x, tr.mask, tr.labels, val=val, class_names=class_names,
                         window=WindowSpec(k=k, seconds=seconds, key=key), seed=seed,
                         epochs=epochs, int8=int8, progress=progress, out_dir=out_dir,
                         benign=benign, source=source, config=config, name=name, t0=t0)


def train_windows(x: np.ndarray, mask: np.ndarray, labels: Sequence[str], *,
                  class_names: Sequence[str] | None = None, val: Windows | None = None,
                  window: WindowSpec | None = None, seed: int = 0, epochs: int | None = None,
                  int8: bool = False, progress: bool = True, out_dir: str | Path | None = None,
                  benign: str = "benign", source: dict[str, Any] | None = None,
                  config: TrainConfig | None = None, name: str = "edgeloop-cnn",
                  t0: float | None = None) -> Bundle:
    """Train from raw windows x [n, F, K], mask [n, K] and one string label per window.

    For the retraining loop: real and synthetic windows can be mixed freely, provided they
    were built by the edge's windowing (or match it) and the mask marks real flows.
    """
    t0 = time.perf_counter() if t0 is None else t0
    cfg = config or TrainConfig()
    cfg = replace(cfg, epochs=epochs) if epochs is not None else cfg
    window = window or WindowSpec(k=x.shape[2])
    if x.shape[2] != window.k or mask.shape != (x.shape[0], x.shape[2]):
        raise ModelError(f"windows {x.shape} / mask {mask.shape} do not match K={window.k}")
    names = list(class_names) if class_names else _default_classes(labels, benign)
    y = _encode(labels, names)
    rng = np.random.default_rng(seed)
    if val is None:
        tr_idx, va_idx = _stratified_split(y, cfg.val_fraction, rng)
        xv, mv, yv = x[va_idx], mask[va_idx], y[va_idx]
        x, mask, y = x[tr_idx], mask[tr_idx], y[tr_idx]
    else:
        xv, mv, yv = val.x, val.mask, _encode(val.labels, names)
    if len(y) == 0:
        raise ModelError("no training windows")
    schema = FeatureSchema.fit(x, mask)
    xn, xvn = schema.normalise(x, mask), schema.normalise(xv, mv)
    with _deterministic(seed, cfg.threads):
        fit = _fit(xn, mask, y, xvn, mv, yv, len(names), cfg, seed, progress)
        onnx_bytes = _export(fit.model, xvn if len(xvn) else xn, mv if len(xvn) else mask)
    return _assemble(fit, onnx_bytes, names, schema, window, cfg, seed, xn, mask, y, xvn, mv, yv,
                     int8, out_dir, benign, source or {}, name, t0)


def _default_classes(labels: Sequence[str], benign: str) -> list[str]:
    rest = sorted(set(labels) - {benign})
    return [benign, *rest]


def _encode(labels: Sequence[str], names: list[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ModelError(f"labels {unknown} are not in class_names {names}")
    return np.array([index[lab] for lab in labels], dtype=np.int64)


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a random `fraction` (at least one window, if the class has two) validates."""
    val: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        val.append(idx[:max(n_val, 1 if len(idx) > 1 else 0)])
    va = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    tr = np.setdiff1d(np.arange(len(y)), va)
    return tr, va


@contextmanager
def _deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seeded, deterministic torch on a fixed thread count; the previous state is restored."""
    import torch

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


def _class_weights(y: np.ndarray, n_classes: int, cap: float) -> np.ndarray:
    """Balanced weights n / (C * count), capped; classes absent from training get 0."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return np.minimum(w, cap)


def _fit(xn: np.ndarray, mask: np.ndarray, y: np.ndarray, xvn: np.ndarray, mv: np.ndarray,
         yv: np.ndarray, n_classes: int, cfg: TrainConfig, seed: int, progress: bool) -> _Fit:
    import torch

    from inference.export import torch_logits
    from inference.model import ModelConfig, WindowCNN

    model = WindowCNN(ModelConfig(xn.shape[1], n_classes, cfg.channels, cfg.hidden,
                                  dropout=cfg.dropout))
    weights = _class_weights(y, n_classes, cfg.max_class_weight)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    xt, mt, yt = torch.from_numpy(xn), torch.from_numpy(mask), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    batch = _batch_size(len(y), cfg.batch_size)
    best: tuple[float, float] = (-1.0, float("inf"))
    best_state, best_epoch, history = None, -1, []
    with _progress(progress, cfg.epochs) as step:
        for epoch in range(cfg.epochs):
            model.train()
            perm, total = torch.randperm(len(yt), generator=gen), 0.0
            for i in range(0, len(yt), batch):
                idx = perm[i:i + batch]
                opt.zero_grad()
                loss = loss_fn(model(xt[idx], mt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            sched.step()
            row = _validate(torch_logits(model, xvn, mv), yv, n_classes, total / len(yt), epoch)
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
    return _Fit(model, weights.tolist(), len(history), best_epoch, best[0], history,
                torch_logits(model, xvn, mv), torch_logits(model, xn, mask))


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


def _export(model: Any, x: np.ndarray, mask: np.ndarray) -> bytes:
    from inference.export import export_onnx

    return export_onnx(model, x, mask)


def _assemble(fit: _Fit, onnx_bytes: bytes, names: list[str], schema: FeatureSchema,
              window: WindowSpec, cfg: TrainConfig, seed: int, xn: np.ndarray, mask: np.ndarray,
              y: np.ndarray, xvn: np.ndarray, mv: np.ndarray, yv: np.ndarray, int8: bool,
              out_dir: str | Path | None, benign: str, source: dict[str, Any], name: str,
              t0: float) -> Bundle:
    has_val = len(yv) > 0
    cal_logits, cal_y = (fit.val_logits, yv) if has_val else (fit.train_logits, y)
    temperature = fit_temperature(cal_logits, cal_y)
    ood_logits = fit.val_logits if len(yv) >= 500 else np.concatenate([fit.train_logits, fit.val_logits])
    ood = energy_threshold(ood_logits, temperature, cfg.ood_quantile)
    int8_bytes, int8_info, speed = (_int8(onnx_bytes, xn, mask, y, xvn, mv, yv, cfg, seed)
                                    if int8 else (None, {"requested": False}, {}))
    training = {
        "seed": seed, "config": asdict(cfg), "source": source,
        "model": {"arch": "WindowCNN", "channels": cfg.channels, "hidden": cfg.hidden,
                  "kernel": 3, "n_features": int(xn.shape[1]), "n_classes": len(names)},
        "windows": {"train": _counts(y, names), "val": _counts(yv, names)},
        "class_weights": dict(zip(names, map(float, np.round(fit.class_weights, 6)))),
        "batch_size": _batch_size(len(y), cfg.batch_size), "epochs_run": fit.epochs_run, "best_epoch": fit.best_epoch + 1,
        "temperature": f"fitted on {'validation' if has_val else 'training'} logits by NLL "
                       f"(golden-section over 1/T)",
        "thresholds": {
            "confidence": f"fixed at {cfg.confidence} (calibrated max probability)",
            "ood": f"{cfg.ood_quantile:.1%} quantile of free energy on {len(ood_logits)} "
                   f"in-distribution {'validation' if len(yv) >= 500 else 'train+validation'} windows"},
        "int8": int8_info,
    }
    val_probs, _ = calibrate(fit.val_logits, temperature)
    raw_probs, _ = calibrate(fit.val_logits, 1.0)
    metrics = {"val_macro_f1": fit.best_val_f1, "history": fit.history,
               "val_ece_uncalibrated": expected_calibration_error(raw_probs, yv) if has_val else None,
               "val_ece": expected_calibration_error(val_probs, yv) if has_val else None,
               "int8_speed": speed}
    meta = BundleMeta(name=name, created_ms=int(time.time() * 1000), class_names=names,
                      benign_class=benign, window=window, features=schema.to_json(),
                      temperature=temperature,
                      thresholds=Thresholds(confidence=cfg.confidence, ood=ood),
                      onnx=OnnxFile(file="model.onnx", sha256=""), metrics=metrics,
                      training=training)
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="edgeloop-bundle-"))
    meta.metrics["train_seconds"] = round(time.perf_counter() - t0, 3)
    return write_bundle(out, onnx_bytes, meta, int8_bytes)


def _counts(y: np.ndarray, names: list[str]) -> dict[str, int]:
    return {n: int(c) for n, c in zip(names, np.bincount(y, minlength=len(names)))}


def _int8(onnx_bytes: bytes, xn: np.ndarray, mask: np.ndarray, y: np.ndarray, xvn: np.ndarray,
          mv: np.ndarray, yv: np.ndarray, cfg: TrainConfig, seed: int
          ) -> tuple[bytes | None, dict[str, Any], dict[str, Any]]:
    """Quantise on training windows; keep int8 only if validation accuracy holds."""
    from inference.export import run_onnx
    from inference.quantize import calibration_sample, measure_speed, quantize_int8

    xc, mc = calibration_sample(xn, mask, y, seed=seed)
    q = quantize_int8(onnx_bytes, xc, mc)
    xe, me, ye = (xvn, mv, yv) if len(yv) else (xn, mask, y)
    n = int(run_onnx(onnx_bytes, xe[:1], me[:1]).shape[1])
    acc = {tag: accuracy(confusion_matrix(ye, run_onnx(b, xe, me).argmax(axis=1), n))
           for tag, b in (("fp32", onnx_bytes), ("int8", q))}
    drop = acc["fp32"] - acc["int8"]
    keep = drop <= cfg.max_int8_drop
    info = {"requested": True, "included": keep, "calibration_windows": int(len(xc)),
            "method": "static QDQ, MinMax, uint8 activations / int8 per-channel weights",
            "val_accuracy_fp32": acc["fp32"], "val_accuracy_int8": acc["int8"],
            "rule": f"kept if validation accuracy drops by <= {cfg.max_int8_drop:.1%}"}
    speed = {tag: measure_speed(b, xe, me, batch_sizes=(256,), min_seconds=0.2)[0]
             for tag, b in (("fp32", onnx_bytes), ("int8", q))}
    return (q if keep else None), info, speed
