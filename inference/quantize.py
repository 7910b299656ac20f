"""Static int8 quantisation of the detector graph, and the speed check that justifies it.

Static (not dynamic) quantisation: activation ranges are calibrated once on real training
windows, so inference runs integer kernels without computing ranges per batch. The graph
is written in QDQ form (QuantizeLinear/DequantizeLinear pairs around Conv/Gemm) with uint8
activations and int8 weights, the pairing x86 kernels are fastest with. DESIGN.md warns
that int8 is often *slower* on small CPU graphs, so `measure_speed` times both models on
the same windows and the report carries the figures, not an assumption.

    >>> int8 = quantize_int8(fp32_bytes, x_norm, mask)
    >>> measure_speed(int8, x_norm, mask, batch_sizes=(1, 32, 256))

Nothing here needs torch.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from contracts.errors import ModelError
from inference.onnx_detector import make_session

# The convolutions and the head's Gemms; the feature-distance MatMul stays float so the
# OOD term keeps its precision.
QUANTISED_OPS = ("Conv", "Gemm")


def calibration_sample(x: np.ndarray, mask: np.ndarray, y: np.ndarray | None = None,
                       n: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to n windows, stratified by class when labels are given, so rare attacks set ranges too."""
    rng = np.random.default_rng(seed)
    if len(x) <= n:
        return x, mask
    if y is None:
        idx = rng.choice(len(x), n, replace=False)
    else:
        classes = np.unique(y)
        per = max(1, n // len(classes))
        idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in classes])
    idx = np.sort(idx)
    return x[idx], mask[idx]


def quantize_int8(onnx_bytes: bytes, x: np.ndarray, mask: np.ndarray, *,
                  per_channel: bool = True, batch: int = 256) -> bytes:
    """Static QDQ int8 model calibrated (MinMax) on normalised windows x with mask."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quant_pre_process, quantize_static)

    class WindowReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(
                [{"windows": x[i:i + batch], "mask": mask[i:i + batch]}
                 for i in range(0, len(x), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    reader = WindowReader()
    with tempfile.TemporaryDirectory(prefix="edgeloop-quant-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(onnx_bytes)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTISED_OPS), per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:  # onnxruntime's quantiser raises untyped errors
            raise ModelError(f"static int8 quantisation failed: {exc}") from exc
        return out.read_bytes()


def time_batches(fn: Any, x: np.ndarray, mask: np.ndarray, batch: int,
                 min_seconds: float = 0.3, max_batches: int = 2000) -> dict[str, float]:
    """Call fn(x_batch, mask_batch) repeatedly on consecutive batches; windows/s and latency."""
    n = len(x)
    starts = [(i * batch) % max(1, n - batch + 1) for i in range(max_batches)]
    fn(x[:batch], mask[:batch])  # warm-up: first run allocates
    lat: list[float] = []
    t_end = time.perf_counter() + min_seconds
    for s in starts:
        t0 = time.perf_counter()
        fn(x[s:s + batch], mask[s:s + batch])
        lat.append(time.perf_counter() - t0)
        if t0 > t_end and len(lat) >= 20:
            break
    arr = np.array(lat)
    rows = min(batch, n)
    return {"batch": batch, "windows_per_s": float(rows * len(arr) / arr.sum()),
            "p50_ms": float(np.percentile(arr, 50) * 1e3), "p99_ms": float(np.percentile(arr, 99) * 1e3),
            "batches": len(arr)}


def measure_speed(model: bytes | str | Path, x: np.ndarray, mask: np.ndarray,
                  batch_sizes: tuple[int, ...] = (1, 32, 256), threads: int = 1,
                  min_seconds: float = 0.3) -> list[dict[str, float]]:
    """Bare onnxruntime throughput and batch latency of one model at each batch size."""
    # The edge's own session settings (one intra-op thread by default); it takes bytes too.
    sess = make_session(model if isinstance(model, bytes) else str(model), threads)

    def run(xb: np.ndarray, mb: np.ndarray) -> Any:
        return sess.run(["logits"], {"windows": xb, "mask": mb})

    return [time_batches(run, x, mask, b, min_seconds) for b in batch_sizes]
