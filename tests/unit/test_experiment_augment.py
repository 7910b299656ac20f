"""The augmentation experiment: a small run writes the table, the plot and the details.

All flows here are SYNTHETIC (tests.support.testing.toy_flows), not captured traffic.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from llm_agents.experiments.augment import METHODS, AugmentConfig, ForestScorer, run_experiment
from llm_agents.experiments.cli import augment
from tests.support.testing import toy_flows

CLASSES = {"benign": 12, "syn_scan": 8, "syn_flood": 8, "ssh_bruteforce": 8}


@pytest.fixture(scope="module")
def flows() -> tuple[pd.DataFrame, pd.DataFrame]:
    return toy_flows(CLASSES, seed=11), toy_flows(CLASSES, seed=12, shift=0.3)


def test_small_run_writes_table_plot_and_details(flows, tmp_path: Path) -> None:
    calls: list[int] = []
    forest = ForestScorer(k=8, seed=0)  # the experiment's own trainer, on real window descriptors

    seen: list[tuple[pd.DataFrame, pd.DataFrame]] = []

    def train_and_score(train: pd.DataFrame, eval_df: pd.DataFrame) -> float:
        calls.append(train["window_id"].nunique())
        seen.append((train, eval_df))
        return forest(train, eval_df)

    cfg = AugmentConfig(sizes=(2, 4), repeats=2, rounds=1, benign_windows=4, synth_windows=3,
                        score_batches=False)
    res = run_experiment(*flows, tmp_path, cfg=cfg, train_and_score=train_and_score)
    assert set(res.rows["method"]) == set(METHODS) and len(res.rows) == 2 * 2 * len(METHODS)
    assert set(res.table["size"]) == {2, 4} and (res.table["count"] == 2).all()
    none = res.rows[res.rows["method"] == "none"]
    assert (none["synthetic_windows"] == 0).all()
    assert (res.rows[res.rows["method"] == "smote"]["synthetic_windows"] == 9).all()
    assert set(res.rows.loc[res.rows["method"] == "synth", "source"]) == {"stat:kde"}
    assert calls  # the plugged-in trainer scored the gate and the evaluation
    # Real scores: the toy classes are well apart, so every method learns them; a training
    # set with one class only cannot, which a constant stand-in would never show.
    assert (res.rows["macro_f1"] >= 0.9).all(), res.rows
    train, eval_df = seen[-1]
    assert forest(train[train["label"] == "benign"], eval_df) < 0.5
    for name in ("rows", "table_csv", "table_md", "plot", "details"):
        assert Path(res.paths[name]).stat().st_size > 0
    assert Path(res.paths["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = Path(res.paths["table_md"]).read_text()
    assert "synth (stat:kde)" in md and "| 2 |" in md and "| 4 |" in md
    details = json.loads(Path(res.paths["details"]).read_text())
    assert details["meta"]["mode"] == "offline" and details["meta"]["model"] == "stat:kde"
    assert {r["label"] for r in details["rounds"]} == {"syn_scan", "syn_flood", "ssh_bruteforce"}


def test_cli_runs_offline_on_given_files(flows, tmp_path: Path) -> None:
    train, ev = tmp_path / "train.parquet", tmp_path / "eval.parquet"
    flows[0].to_parquet(train)
    flows[1].to_parquet(ev)
    out = tmp_path / "out"
    result = CliRunner().invoke(augment, [
        "--train", str(train), "--eval", str(ev), "--out", str(out), "--sizes", "3",
        "--repeats", "1", "--rounds", "1", "--benign-windows", "4", "--synth-windows", "2",
        "--offline"], env={"EDGELOOP_LLM_BASE_URL": ""})
    assert result.exit_code == 0, result.output
    assert "real windows per attack class" in result.output
    assert (out / "augment_f1.png").exists() and (out / "augment_table.csv").exists()


def test_cli_rejects_bad_sizes(tmp_path: Path) -> None:
    result = CliRunner().invoke(augment, ["--sizes", "5,x", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "comma-separated integers" in result.output
