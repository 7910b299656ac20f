"""`edgeloop evaluate MODEL FILE` on the lab evaluation capture: the plain figures count every
window of both views by its flows' labels, unlike the open-world judge. With the capture's
labels document beside it, the command also judges the windows as the open-world judge does
(each attack on its principal's windows) and reads its targets there, saying which windows
each figure counts, so an operator does not read 0.87 against a judged figure."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from edgeloop_app.model_cli import evaluate

REPO = Path(__file__).resolve().parents[2]
CAPTURE = REPO / "data" / "lab" / "eval.parquet"


def _run(path: Path, out: Path) -> tuple[str, dict]:
    run = CliRunner().invoke(evaluate, ["default", str(path), "--out", str(out), "--no-plots", "--no-speed"],
                             terminal_width=200)
    assert run.exit_code == 0, run.output
    return " ".join(run.output.split()), json.loads((out / f"{path.stem}.json").read_text())


def test_the_report_judges_the_lab_capture_by_its_labels_and_says_which_windows_it_counts(tmp_path):
    text, report = _run(CAPTURE, tmp_path)
    assert report["bundle"]["window"]["views"] == ["src", "dst"]
    assert f"macro-F1 {report['macro_f1']:.4f}" in text
    assert "every window of every view, labelled by its flows" in text
    j = report["judged"]
    assert j["windows"] + j["collateral"] <= report["dataset"]["windows"] and j["collateral"] > 1000
    assert f"judged windows ({j['windows']:,} of {report['dataset']['windows']:,}" in text
    assert f"macro-F1 {j['macro_f1']:.4f}" in text and j["macro_f1"] > report["macro_f1"]
    assert "targets (on judged windows)" in text and report["targets"]["macro_f1"]["value"] == j["macro_f1"]


def test_without_a_labels_document_the_targets_are_read_on_every_window(tmp_path):
    bare = tmp_path / "in" / "eval.parquet"
    bare.parent.mkdir()
    shutil.copy(CAPTURE, bare)  # no eval.labels.json beside it
    text, report = _run(bare, tmp_path)
    assert "judged" not in report and "targets (on every window)" in text
    assert "edgeloop evaluate --open-world MANIFEST" in text
