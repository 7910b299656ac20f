import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from edgeloop_app.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_every_stage():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for cmd in ("broker", "detect", "replay", "capture", "score", "release", "tail", "run"):
        assert cmd in r.output


def test_bad_setting_fails_at_start_naming_the_key():
    r = CliRunner().invoke(main, ["score", __file__], env={"EDGELOOP_WINDOW_KEY": "mac"})
    assert r.exit_code != 0 and "EDGELOOP_WINDOW_KEY" in r.output


def test_edge_modules_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import streams.worker, edgeloop_app.cli, inference.onnx_detector, inference.registry, streams.score")
    subprocess.run([sys.executable, "-c", code], check=True)


def _score(tmp_path, model, flows, env):
    out = tmp_path / f"w-{len(env)}.parquet"
    r = CliRunner().invoke(main, ["score", str(flows), "--model", str(model), "-o", str(out)],
                           env={"EDGELOOP_DATA_DIR": str(tmp_path / "var"), **env})
    assert r.exit_code == 0, r.output
    return r, out


def test_score_uses_the_int8_model_under_edgeloop_int8_as_a_detector_would(tmp_path):
    """EDGELOOP_INT8=1 is how an operator checks int8 verdicts before a detector serves them:
    `edgeloop score` must then give the int8 session's confidences, not fp32's."""
    import numpy as np
    import pandas as pd

    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.onnx_detector import OnnxDetector
    from streams.score import score_frame

    flows = tmp_path / "flows.parquet"
    df = pd.read_parquet(REPO / "data" / "lab" / "eval.parquet").iloc[:3000]
    df.to_parquet(flows)
    r, out = _score(tmp_path, DEFAULT_BUNDLE_DIR, flows, {"EDGELOOP_INT8": "1"})
    assert "(int8)" in r.output
    got = pd.read_parquet(out).set_index("window_id")["confidence"]
    bundle = Bundle.load(DEFAULT_BUNDLE_DIR)
    for int8 in (True, False):
        want = score_frame(df, bundle, model=OnnxDetector(bundle, int8=int8)).windows.set_index("window_id")["confidence"]
        same = np.allclose(got.loc[want.index].to_numpy(), want.to_numpy(), atol=1e-6)
        assert same is int8                      # int8's numbers, which are not fp32's
    r, out = _score(tmp_path, DEFAULT_BUNDLE_DIR, flows, {})
    assert "(int8)" not in r.output


def test_int8_on_a_bundle_without_an_int8_model_is_a_clear_error(tmp_path, tiny_bundle):
    assert tiny_bundle.meta.int8 is None
    r = CliRunner().invoke(main, ["score", __file__, "--model", str(tiny_bundle.path)],
                           env={"EDGELOOP_INT8": "1", "EDGELOOP_DATA_DIR": str(tmp_path)})
    assert r.exit_code != 0 and "has no int8 model" in r.output


def test_score_applies_the_shape_rules_a_detector_is_told(tmp_path):
    """EDGELOOP_SHAPE_RULES is how an operator sees what leaving a shape rule out would change:
    on the lab evaluation capture, the 5 repeated-session source windows the shipped network
    calls benign are uncertain with the default rules and benign without repeat_shape."""
    import pandas as pd

    from inference.bundle import DEFAULT_BUNDLE_DIR

    flows = tmp_path / "flows.parquet"
    pd.read_parquet(REPO / "data" / "lab" / "eval.parquet").to_parquet(flows)
    _, on = _score(tmp_path, DEFAULT_BUNDLE_DIR, flows, {})
    _, off = _score(tmp_path, DEFAULT_BUNDLE_DIR, flows, {"EDGELOOP_SHAPE_RULES": "flood_shape"})
    a = pd.read_parquet(on).set_index("window_id")["uncertain"]
    b = pd.read_parquet(off).set_index("window_id")["uncertain"]
    assert (a & ~b.loc[a.index]).sum() == 5 and not (b.loc[a.index] & ~a).any()


def test_detect_refuses_to_start_without_the_kernel_it_was_told_to_use(monkeypatch, tmp_path):
    """EDGELOOP_HOST_HISTORY=compiled where the kernel is not built: a clear error before any
    broker is touched, naming the setting and the way out."""
    import inference.history as history

    monkeypatch.setattr(history, "_HistoryKernel", None)
    monkeypatch.setattr(history, "KERNEL_MISSING", "ModuleNotFoundError: no module named _history_kernel")
    r = CliRunner().invoke(main, ["detect"], env={"EDGELOOP_HOST_HISTORY": "compiled",
                                                  "EDGELOOP_DATA_DIR": str(tmp_path),
                                                  "EDGELOOP_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert r.exit_code == 1, r.output
    assert "EDGELOOP_HOST_HISTORY='compiled'" in r.output and "not built here" in r.output
