"""The load-time rewrite of 1-D convolutions as matrix products (inference/conv_matmul.py):
the same outputs to float rounding, on graphs built here and on the shipped model, and
what it must leave alone."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inference.conv_matmul import conv_as_matmul
from inference.onnx_detector import make_session


def conv_model(cin: int, cout: int, k: int, bias: bool = True, **attrs) -> tuple[bytes, dict]:
    """One Conv over x [n, cin, L], its weights random; attributes as given."""
    rng = np.random.default_rng(k * 100 + cin)
    w = rng.normal(size=(cout, cin, k)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=cout).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", cin, "L"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return m.SerializeToString(), {"w": w}


def run(model: bytes, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("k,bias,length", [(1, True, 8), (3, True, 8), (3, False, 5), (5, True, 8), (3, True, 1)])
def test_a_plain_conv_becomes_a_matmul_with_the_same_outputs(k: int, bias: bool, length: int) -> None:
    model, _ = conv_model(6, 4, k, bias, kernel_shape=[k], pads=[k // 2, k // 2], strides=[1], dilations=[1])
    fast, n = conv_as_matmul(model)
    assert n == 1
    ops = [node.op_type for node in onnx.load_from_string(fast).graph.node]
    assert "Conv" not in ops and "MatMul" in ops
    x = np.random.default_rng(1).normal(size=(7, 6, length)).astype(np.float32)
    np.testing.assert_allclose(run(fast, x), run(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3], pads=[0, 0]),             # "valid": shorter output
                                   dict(kernel_shape=[3], pads=[1, 1], strides=[2]),
                                   dict(kernel_shape=[3], pads=[2, 2], dilations=[2]),
                                   dict(kernel_shape=[2], pads=[1, 0])])              # even kernel
def test_other_convolutions_are_left_alone(attrs: dict) -> None:
    model, _ = conv_model(4, 4, attrs["kernel_shape"][0], **attrs)
    assert conv_as_matmul(model) == (model, 0)


def test_the_shipped_model_gives_the_same_answers() -> None:
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.datasets.lab import lab_paths
    from inference.onnx_detector import OnnxDetector
    from inference.windowing import stack_windows, windows_from_frame
    from streams.sources.files import load_flows

    b = Bundle.load(DEFAULT_BUNDLE_DIR)
    path = lab_paths().eval
    if not path.is_file():
        pytest.skip(f"no lab capture at {path}")
    spec = b.meta.window
    x, mask = stack_windows(windows_from_frame(load_flows(path).head(6000), k=spec.k, seconds=spec.seconds,
                                               views=spec.views), spec.k)
    raw = b.onnx_path(False).read_bytes()
    fast, n = conv_as_matmul(raw)
    assert n == 3 * b.meta.training["model"].get("members", 1)      # embed, conv1, conv2 of each member
    slow = OnnxDetector(b, session=make_session(raw, conv_matmul=False)).score(x, mask)
    new = OnnxDetector(b, session=make_session(fast, conv_matmul=False)).score(x, mask)
    assert len(x) > 1000
    np.testing.assert_allclose(new.probabilities, slow.probabilities, atol=1e-4)
    np.testing.assert_allclose(new.ood, slow.ood, rtol=1e-4, atol=1e-3)
    assert (new.predicted == slow.predicted).all() and (new.uncertain == slow.uncertain).all()
    edge = OnnxDetector(b)                          # the edge's session takes the rewrite (and any window length)
    default = OnnxDetector(b, session=edge.session, by_length=False).score(x, mask)
    assert np.array_equal(default.probabilities, new.probabilities)
    assert not np.array_equal(default.probabilities, slow.probabilities)   # (float rounding tells them apart)
    np.testing.assert_allclose(edge.score(x, mask).probabilities, new.probabilities, atol=1e-5)


def test_the_edge_rewrites_in_a_child_and_never_imports_onnx_itself(caplog) -> None:
    import subprocess
    import sys

    from inference.conv_matmul import try_conv_as_matmul

    model, _ = conv_model(6, 4, 3, kernel_shape=[3], pads=[1, 1])
    assert try_conv_as_matmul(model) == conv_as_matmul(model)
    assert try_conv_as_matmul(b"not a model") == (b"not a model", 0)     # served as it is, and said
    assert "served as exported" in caplog.text
    code = ("import sys; from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle; "
            "from inference.onnx_detector import OnnxDetector; "
            "d = OnnxDetector(Bundle.load(DEFAULT_BUNDLE_DIR)); "
            "print('onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert out.stdout.strip() == "False", out.stderr[-500:]
