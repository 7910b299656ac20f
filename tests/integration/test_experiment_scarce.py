"""`edgeloop experiment scarce`, small: one draw from the lab's real training capture, the
real and oracle arms, judged on the lab's other link conditions. Checks what the command
writes and that the figures are the open world's, not made up.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from llm_agents.experiments.cli import scarce


def test_a_small_run_writes_rows_table_plot_and_json(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("EDGELOOP_LLM_BASE_URL", raising=False)
    out = tmp_path / "scarce"
    res = CliRunner().invoke(scarce, ["--out", str(out), "--repeats", "1", "--arms", "real,llm,oracle",
                                      "--groups", "lab-conditions", "--epochs", "3", "--synth-windows", "8"])
    assert res.exit_code == 0, res.output
    assert "the llm arm is left out" in res.output
    rows = pd.read_csv(out / "scarce_rows.csv")
    assert set(rows["arm"]) == {"real", "oracle"} and set(rows["group"]) == {"lab-conditions"}
    figures = set(rows["figure"])
    assert {"benign_false_alert", "benign_deferred", "known_ok", "macro_f1"} <= figures
    assert rows["value"].between(0, 1).all() and (rows["windows"] > 100).all()
    # The three captures of lab-conditions, judged window by window: thousands of benign windows.
    benign = rows[rows["figure"] == "benign_false_alert"]["windows"]
    assert (benign > 3000).all()
    assert len(json.loads((out / "scarce_runs.json").read_text())) == 2   # written arm by arm as the run goes
    meta = json.loads((out / "scarce.json").read_text())["meta"]
    runs = {r["arm"]: r for r in meta["runs"]}
    assert runs["real"]["synthetic_windows"] == 0 and runs["oracle"]["sources"] == ["llm:oracle"]
    assert max(meta["pool_windows"].values()) > 20          # the draw is a small part of the capture
    table = (out / "scarce_table.md").read_text()
    assert "| lab-conditions | known_ok |" in table and (out / "scarce.png").stat().st_size > 10_000
    assert "real" in table and "oracle" in table and "| llm |" not in table
