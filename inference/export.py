"""ONNX export of a trained WindowCNN, checked against torch with onnxruntime (`train` extra).

The graph takes "windows" [N, F, K] and "mask" [N, K] (float32) and returns "logits"
[N, C], with N dynamic; an ensemble exported with `members=True` also returns
"member_logits" [M, N, C], each member's own (the member-disagreement gate,
inference.onnx_detector). After export the same inputs go through torch and onnxruntime;
if any logit differs by more than `atol` the export is refused with ModelError, so a
bundle never carries a graph that disagrees with the network that was validated.

    >>> onnx_bytes = export_onnx(net, x_sample, mask_sample)
"""
from __future__ import annotations

import io
import warnings

import numpy as np

from contracts.errors import ModelError

OPSET = 17
INPUTS = ("windows", "mask")
OUTPUT = "logits"
MEMBERS_OUTPUT = "member_logits"


def export_onnx(model: "torch.nn.Module", x: np.ndarray, mask: np.ndarray, *,  # noqa: F821
                opset: int = OPSET, atol: float = 1e-4, members: bool = False) -> bytes:
    """Export `model` (set to eval mode) and verify it on (x, mask): normalised windows.
    With `members`, `model` is an inference.model.Ensemble and the graph also returns its
    members' logits as MEMBERS_OUTPUT."""
    import onnx
    import torch

    model.eval()
    sample = (torch.from_numpy(x[:2].copy()), torch.from_numpy(mask[:2].copy()))
    buf = io.BytesIO()
    outputs = [OUTPUT, MEMBERS_OUTPUT] if members else [OUTPUT]
    axes = {name: {0: "n"} for name in (*INPUTS, OUTPUT)}
    if members:
        from inference.model import WithMembers

        axes[MEMBERS_OUTPUT] = {1: "n"}
        exported: "torch.nn.Module" = WithMembers(model).eval()  # noqa: F821
    else:
        exported = model
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript (not in the `train` extra); its output is the same plain graph here.
        warnings.simplefilter("ignore")
        torch.onnx.export(exported, sample, buf, input_names=list(INPUTS), output_names=outputs,
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    data = buf.getvalue()
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as exc:  # onnx raises its own ValidationError types
        raise ModelError(f"exported ONNX graph is invalid: {exc}") from exc
    check_against_torch(data, model, x, mask, atol=atol)
    if members:
        check_against_torch(data, _Members(model), x, mask, atol=atol, output=MEMBERS_OUTPUT)
    return data


class _Members:
    """An Ensemble seen as its members' logits [M, n, C] (for the export check)."""

    def __init__(self, ensemble: "torch.nn.Module") -> None:  # noqa: F821
        self.ensemble = ensemble

    def eval(self) -> "_Members":
        self.ensemble.eval()
        return self

    def __call__(self, x: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
        return self.ensemble.member_logits(x, mask)


def run_onnx(onnx_bytes: bytes, x: np.ndarray, mask: np.ndarray, batch: int = 4096,
             output: str = OUTPUT) -> np.ndarray:
    """One output (the logits, by default) of an in-memory ONNX model, in batches along
    the window axis (the last but one: [M, n, C] for MEMBERS_OUTPUT)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outs = [sess.run([output], {"windows": x[i:i + batch], "mask": mask[i:i + batch]})[0]
            for i in range(0, len(x), batch)]
    return np.concatenate(outs, axis=-2) if outs else np.zeros((0, 0), np.float32)


def torch_logits(model: "torch.nn.Module", x: np.ndarray, mask: np.ndarray,  # noqa: F821
                 batch: int = 4096) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        outs = [model(torch.from_numpy(x[i:i + batch]), torch.from_numpy(mask[i:i + batch])).numpy()
                for i in range(0, len(x), batch)]
    return np.concatenate(outs, axis=-2)  # [n, C], or [M, n, C] for an Ensemble's members


def check_against_torch(onnx_bytes: bytes, model: "torch.nn.Module",  # noqa: F821
                        x: np.ndarray, mask: np.ndarray, atol: float = 1e-4,
                        n: int = 1024, output: str = OUTPUT) -> float:
    """Max |torch - onnxruntime| over up to n windows; ModelError if above atol (relative
    to the logits' scale, so large logits are not held to an absolute float32 floor)."""
    xs, ms = x[:n], mask[:n]
    ref = torch_logits(model, xs, ms)
    got = run_onnx(onnx_bytes, xs, ms, output=output)
    diff = float(np.max(np.abs(ref - got))) if len(ref) else 0.0
    scale = max(1.0, float(np.max(np.abs(ref)))) if len(ref) else 1.0
    if not np.isfinite(diff) or diff > atol * scale:
        raise ModelError(f"ONNX export disagrees with torch: max |diff| {diff:.3g} > "
                         f"{atol:g} x logit scale {scale:.3g}")
    return diff
