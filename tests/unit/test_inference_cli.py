"""`edgeloop train`, `evaluate` and `models` end to end on a SYNTHETIC flow file."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from edgeloop_app.model_cli import evaluate, models, train  # noqa: E402
from inference.datasets.synthetic import synthetic_flows  # noqa: E402


def test_train_into_the_registry_then_evaluate_and_list(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(tmp_path / "var"))
    flows = tmp_path / "flows.parquet"
    synthetic_flows(hosts_per_class=3, flows_per_host=48, seed=3).to_parquet(flows)
    run = CliRunner().invoke(train, ["--train", str(flows), "--epochs", "3", "--seed", "1", "--quiet",
                                     "--exclude-class", "fin_scan", "--eval", str(flows)])
    assert run.exit_code == 0, run.output
    assert "trained " in run.output and " s (" in run.output  # the training time is printed
    versions = [p.name for p in (tmp_path / "var" / "registry").iterdir() if p.is_dir()]
    assert len(versions) == 1
    report = tmp_path / "var" / "registry" / versions[0] / "reports" / "flows.json"
    assert json.loads(report.read_text())["unseen"]["fin_scan"]["windows"] > 0

    out = tmp_path / "report"
    ev = CliRunner().invoke(evaluate, [versions[0], str(flows), "--name", "again", "--out", str(out),
                                       "--no-speed", "--no-plots"])
    assert ev.exit_code == 0, ev.output
    assert "macro-F1" in ev.output and (out / "again.json").is_file()

    listed = CliRunner().invoke(models, ["list"])
    assert listed.exit_code == 0 and versions[0] in listed.output


def test_evaluate_names_a_missing_model(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(tmp_path))
    flows = tmp_path / "f.csv"
    synthetic_flows(hosts_per_class=1, flows_per_host=8).to_csv(flows, index=False)
    r = CliRunner().invoke(evaluate, ["0123456789abcdef", str(flows)])
    assert r.exit_code != 0 and "not in the registry" in r.output
