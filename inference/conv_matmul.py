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


def try_conv_as_matmul(model: bytes, timeout_s: float = 60.0) -> tuple[bytes, int]:
    """`conv_as_matmul` in a short-lived child process, so that the serving process never
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
    n = int.from_bytes(out.stdout[:4], "big")
    got = (out.stdout[4:], n) if n else (model, 0)
    if len(_DONE) >= 4:
        _DONE.pop(next(iter(_DONE)))
    _DONE[digest] = got
    return got


_DONE: dict[bytes, tuple[bytes, int]] = {}  # sha256 of a model -> its rewrite, the last few


def _main() -> None:
    """stdin: an ONNX model; stdout: the count of rewritten Convs (4 bytes) and the model."""
    import sys

    fast, n = conv_as_matmul(sys.stdin.buffer.read())
    sys.stdout.buffer.write(n.to_bytes(4, "big") + fast)


if __name__ == "__main__":
    _main()
