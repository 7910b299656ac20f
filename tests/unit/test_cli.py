import subprocess
import sys

from click.testing import CliRunner

from edgeloop_app.cli import main


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
