"""`edgeloop evaluate MODEL FILE` on the lab evaluation capture: the plain report counts every
window of both views by its flows' labels, a figure unlike the open-world judge's; the
command says so beside its targets, so an operator does not read 0.87 against the 0.998
the README reports for the judged windows."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edgeloop_app.model_cli import evaluate

REPO = Path(__file__).resolve().parents[2]


def test_the_plain_report_says_which_windows_it_counts(tmp_path):
    run = CliRunner().invoke(evaluate, ["default", str(REPO / "data" / "lab" / "eval.parquet"), "--out",
                                        str(tmp_path), "--no-plots", "--no-speed"], terminal_width=200)
    assert run.exit_code == 0, run.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["bundle"]["window"]["views"] == ["src", "dst"]
    text = " ".join(run.output.split())
    assert f"macro-F1 {report['macro_f1']:.4f}" in text
    assert "every window of every view, labelled by its flows" in text
    assert "edgeloop evaluate --open-world MANIFEST" in text
