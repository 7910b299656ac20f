"""A model's 1-D convolutions as matrix products, rewritten in the ONNX graph at load time.

ONNX Runtime runs a Conv over a window of K = 8 flows as one small im2col and GEMM per
window: 65 GFLOP/s on one core here, against 157 for the same arithmetic as one matrix
product over the whole batch (`tests/bench/bench_edge.py`). Each plain 1-D Conv (stride 1,
dilation 1, one group, "same" padding, constant weights) becomes

    Transpose -> [Pad -> k Slices -> Concat] -> MatMul(W as [k*Cin, Cout]) -> Add(bias) -> Transpose

which computes the same sums in another order (outputs differ by float rounding, about
1e-6). The bundle's file, its hash and its version do not change: only the session is built
from the rewritten graph. The edge rewrites in a child process (`try_conv_as_matmul`), so
the serving process does not keep the `onnx` package in memory. A graph with no such Conv,
or a failed rewrite, is served as it is.

The same child then makes the window axis K dynamic (`any_window_length`), checked on a
probe batch (`check_any_window_length`), so the detector can run a batch of short windows
on their real positions only (inference.onnx_detector: `OnnxDetector.run_by_length`).

    >>> fast = conv_as_matmul(Path("model.onnx").read_bytes())   # bytes for InferenceSession
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("edgeloop.conv_matmul")

_INT_MAX = np.iinfo(np.int64).max


def conv_as_matmul(model: bytes) -> tuple[bytes, int]:
    """The model with every plain 1-D Conv as a matrix product, and how many were rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load_from_string(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    nodes: list[Any] = []
    done = 0
    for node in g.node:
        w = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) >= 2 else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        k = list(w.dims)[2] if w is not None and len(w.dims) == 3 else None
        plain = (k is not None and k % 2 == 1 and attrs.get("group", 1) == 1
                 and list(attrs.get("strides", [1])) == [1] and list(attrs.get("dilations", [1])) == [1]
                 and list(attrs.get("pads", [0, 0])) == [k // 2, k // 2] and attrs.get("auto_pad", b"NOTSET") in
                 (b"NOTSET", "NOTSET") and (len(node.input) < 3 or node.input[2] in inits))
        if not plain:
            nodes.append(node)
            continue
        done += 1
        p, name = k // 2, node.name or f"conv{done}"
        weight = numpy_helper.to_array(w)                       # [Cout, Cin, k]
        cout, cin = weight.shape[:2]
        wm = np.ascontiguousarray(weight.transpose(2, 1, 0).reshape(k * cin, cout))  # [k*Cin, Cout]
        g.initializer.append(numpy_helper.from_array(wm, f"{name}/mm_weight"))
        t = f"{name}/mm"
        nodes.append(helper.make_node("Transpose", [node.input[0]], [f"{t}/xt"], perm=[0, 2, 1]))
        cols = f"{t}/xt"
        if k > 1:
            g.initializer.append(numpy_helper.from_array(np.array([0, p, 0, 0, p, 0], np.int64), f"{t}/pads"))
            nodes.append(helper.make_node("Pad", [f"{t}/xt", f"{t}/pads"], [f"{t}/xp"]))
            slices = []
            for j in range(k):
                end = j - 2 * p if j - 2 * p < 0 else _INT_MAX
                for part, v in (("s", j), ("e", end)):
                    g.initializer.append(numpy_helper.from_array(np.array([v], np.int64), f"{t}/{part}{j}"))
                nodes.append(helper.make_node("Slice", [f"{t}/xp", f"{t}/s{j}", f"{t}/e{j}", f"{t}/axis"],
                                              [f"{t}/x{j}"]))
                slices.append(f"{t}/x{j}")
            g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), f"{t}/axis"))
            nodes.append(helper.make_node("Concat", slices, [f"{t}/u"], axis=2))
            cols = f"{t}/u"
        nodes.append(helper.make_node("MatMul", [cols, f"{name}/mm_weight"], [f"{t}/y"]))
        y = f"{t}/y"
        if len(node.input) >= 3 and node.input[2]:
            nodes.append(helper.make_node("Add", [y, node.input[2]], [f"{t}/yb"]))
            y = f"{t}/yb"
        nodes.append(helper.make_node("Transpose", [y], [node.output[0]], perm=[0, 2, 1]))
    if not done:
        return model, 0
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]   # the Conv weights, now unused, go
    del g.initializer[:]
    g.initializer.extend(keep)
    return m.SerializeToString(), done


def any_window_length(model: bytes) -> bytes | None:
    """The model with its window axis K dynamic, or None where nothing reads it but the mask.

    A window of n < K real flows gives the same logits on its first n positions as on all
    K: every layer zeroes the padded positions (the mask), a "same" convolution pads with
    zeros anyway, and pooling reads real positions only. The one place K enters is the
    fill fraction, n / mask.shape[1]: each Shape of the mask becomes [batch, K exported].
    A batch of short windows can then run on its first positions only: a real network's
    windows are mostly one or two flows (nDPI test captures: 8,167 of 10,700 windows hold
    one flow, 79% of a padded batch is padding), and ONNX Runtime's cost is in the rows.
    `check_any_window_length` tells whether the answers held."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load_from_string(model)
    g = m.graph
    inputs = {i.name: i for i in g.input}
    if set(inputs) != {"windows", "mask"}:
        return None
    dims = [inputs["windows"].type.tensor_type.shape.dim, inputs["mask"].type.tensor_type.shape.dim]
    if len(dims[0]) != 3 or len(dims[1]) != 2 or not dims[1][1].dim_value or dims[0][2].dim_value != dims[1][1].dim_value:
        return None
    k = dims[1][1].dim_value
    reads = [n for n in g.node if "windows" in n.input or "mask" in n.input]
    if any(n.op_type == "Shape" and "windows" in n.input for n in reads):
        return None
    for d in dims:
        d[-1].Clear()
        d[-1].dim_param = "k"
    del g.value_info[:]  # intermediate shapes inferred for K exported
    nodes: list[Any] = []
    for node in g.node:
        if node.op_type != "Shape" or node.input[0] != "mask":
            nodes.append(node)
            continue
        out = node.output[0]
        node.output[0] = f"{out}/dynamic"
        g.initializer.append(numpy_helper.from_array(np.array([1, 0], np.int64), f"{out}/keep"))
        g.initializer.append(numpy_helper.from_array(np.array([0, k], np.int64), f"{out}/k"))
        nodes += [node, helper.make_node("Mul", [f"{out}/dynamic", f"{out}/keep"], [f"{out}/batch"]),
                  helper.make_node("Add", [f"{out}/batch", f"{out}/k"], [out])]
    del g.node[:]
    g.node.extend(nodes)
    return m.SerializeToString()


def check_any_window_length(model: bytes, flexible: bytes, n: int = 256, atol: float = 1e-4,
                            rtol: float = 1e-4) -> str | None:
    """None when `flexible` (any_window_length's output) gives `model`'s outputs on a probe
    batch with every fill from 1 to K, padded to K and cut to each window's own length;
    else what differed."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    plain = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    flex = ort.InferenceSession(flexible, opts, providers=["CPUExecutionProvider"])
    _, n_features, k = plain.get_inputs()[0].shape   # the exported graph fixes F and K
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, n_features, k)).astype(np.float32)
    x[::7] *= 12.0  # some far out, past the model's clip
    fill = 1 + np.arange(n) % k
    mask = (np.arange(k)[None, :] < fill[:, None]).astype(np.float32)
    x *= mask[:, None, :]
    names = [o.name for o in plain.get_outputs()]
    want = plain.run(names, {"windows": x, "mask": mask})
    for length in range(1, k + 1):
        rows = fill == length
        got = flex.run(names, {"windows": np.ascontiguousarray(x[rows, :, :length]),
                               "mask": np.ascontiguousarray(mask[rows, :length])})
        for name, a, b in zip(names, got, want):
            b = b[(slice(None),) * (b.ndim - 2) + (rows,)]   # logits [n, C]; member logits [M, n, C]
            if a.shape != b.shape or not np.allclose(a, b, atol=atol, rtol=rtol):
                return f"{name} on windows of {length} flows differs by up to {np.abs(a - b).max():.3g}"
    return None


def serving_rewrite(model: bytes) -> tuple[bytes, int]:
    """What the edge serves: `conv_as_matmul`, then `any_window_length` where the check
    holds (logged where it does not); the model and how many Convs were rewritten."""
    fast, n = conv_as_matmul(model)
    try:
        flexible = any_window_length(fast)
        why = None if flexible is None else check_any_window_length(fast, flexible)
    except Exception as exc:  # onnx and onnxruntime raise their own untyped errors
        log.warning("window length kept fixed (%s: %s)", type(exc).__name__, exc)
        return fast, n
    if why is not None:
        log.warning("window length kept fixed: %s", why)
    return (flexible, n) if flexible is not None and why is None else (fast, n)


def try_conv_as_matmul(model: bytes, timeout_s: float = 60.0) -> tuple[bytes, int]:
    """`serving_rewrite` in a short-lived child process, so that the serving process never
    imports `onnx` (13 MB of resident memory it would keep for good); the model as it is
    when the child fails (no `onnx` package, say), with a warning."""
    import hashlib
    import subprocess
    import sys

    digest = hashlib.sha256(model).digest()
    if digest in _DONE:  # this process rewrote the same model before (a hot swap back, tests)
        return _DONE[digest]
    try:
        out = subprocess.run([sys.executable, "-m", "inference.conv_matmul"], input=model, capture_output=True,
                             timeout=timeout_s, check=True, cwd=str(Path(__file__).resolve().parents[1]))
    except (OSError, subprocess.SubprocessError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        log.warning("convolutions served as exported (the rewrite failed: %s %s)", exc,
                    err.decode("utf-8", "replace")[-300:])
        return model, 0
    if out.stderr.strip():  # the child's warnings (a window length kept fixed, say)
        log.warning("model rewrite: %s", out.stderr.decode("utf-8", "replace").strip()[-500:])
    n = int.from_bytes(out.stdout[:4], "big")
    got = (out.stdout[4:], n)
    if len(_DONE) >= 4:
        _DONE.pop(next(iter(_DONE)))
    _DONE[digest] = got
    return got


_DONE: dict[bytes, tuple[bytes, int]] = {}  # sha256 of a model -> its rewrite, the last few


def _main() -> None:
    """stdin: an ONNX model; stdout: the count of rewritten Convs (4 bytes) and the model."""
    import sys

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    fast, n = serving_rewrite(sys.stdin.buffer.read())
    sys.stdout.buffer.write(n.to_bytes(4, "big") + fast)


if __name__ == "__main__":
    _main()
