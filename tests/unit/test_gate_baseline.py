"""The open-world promotion gate (evaluation.gate) and the site baseline (evaluation.baseline)."""
from __future__ import annotations

import pandas as pd
import pytest

from evaluation.baseline import attack_flow_ids, build_baseline, load_baseline, split_parts
from evaluation.gate import Figures, RefCapture, Tolerance, open_world_gate, reference_figures
from inference.datasets.synthetic import synthetic_flows
from inference.openworld_verdicts import judge_windows
from streams.score import score_frame


def fig(fa=0.0, de=0.0, **hits) -> Figures:
    return Figures("v", 1000, fa, de, dict(hits), {k: 100 for k in hits})


@pytest.mark.parametrize("challenger, reason", [
    (fig(0.004, 0.02, syn_scan=0.9), "ok"),                         # within every tolerance
    (fig(0.0051, 0.0, syn_scan=0.95), "open_world_false_alerts"),   # +0.51 pt false alerts
    (fig(0.0, 0.0301, syn_scan=0.95), "open_world_deferrals"),      # +2.01 pt deferred (from 1%)
    (fig(0.0, 0.0, syn_scan=0.879), "open_world_hits:syn_scan"),    # -2.1 pt hits
    (fig(0.0, 0.0), "open_world_hits:syn_scan"),                    # a class it no longer hits at all
])
def test_the_gate_refuses_what_is_worse_out_there(challenger, reason):
    champion = fig(0.0, 0.01, syn_scan=0.9)
    ok, why, detail = open_world_gate(champion, challenger, Tolerance())
    assert (ok, why) == (reason == "ok", reason)
    assert set(detail) == {"false_alerts", "deferrals", "hits"}


def test_reference_figures_count_the_verdicts_the_edge_would_give(tiny_bundle):
    flows = synthetic_flows(hosts_per_class=2, flows_per_host=24, seed=5)
    benign = flows[flows["label"] == "benign"].drop(columns=["label"])
    ref = [RefCapture("b", benign, "benign"), RefCapture("l", flows, "labels")]
    f = reference_figures(tiny_bundle, ref)
    wb = judge_windows(score_frame(benign, tiny_bundle).windows, expect="benign", scope="all",
                       class_names=tiny_bundle.class_names)
    wl = judge_windows(score_frame(flows, tiny_bundle).windows, expect=None, scope="labels",
                       class_names=tiny_bundle.class_names)
    ben = pd.concat([wb, wl[wl["kind"] == "benign"]])["verdict"]
    assert f.benign_windows == len(ben)
    assert f.false_alerts == pytest.approx((ben == "false_alert").mean())
    assert f.deferrals == pytest.approx((ben == "deferred").mean())
    known = wl[wl["kind"] == "known"]
    assert set(f.hits) == set(known["expected"])
    for c, h in f.hits.items():
        assert h == pytest.approx((known[known["expected"] == c]["verdict"] == "ok").mean())


def test_a_lab_reference_is_judged_as_the_open_world_evaluation_judges_it(tiny_bundle):
    """With the lab's judging (who carries each attack), an attack window keyed by anyone
    else is collateral: not counted as a hit or a miss. Without it every window counts by
    its raw label (a sweep's target's one-probe window as a host sweep)."""
    from evaluation.gate import default_reference

    flows = synthetic_flows(hosts_per_class=2, flows_per_host=24, seed=5)
    scans = flows[flows["label"] == "syn_scan"]
    one = str(scans["src_ip"].iloc[0])
    raw = reference_figures(tiny_bundle, [RefCapture("l", flows, "labels")])
    judging = {"principals": {"syn_scan": {("src", one)}}}
    judged = reference_figures(tiny_bundle, [RefCapture("l", flows, "labels", judging)])
    w = score_frame(flows, tiny_bundle).windows
    mine = w[(w["label"] == "syn_scan") & (w["key"].astype(str) == one) & (w.get("view", "src") == "src")]
    assert 0 < judged.support["syn_scan"] == len(mine) < raw.support["syn_scan"]
    lab = [c for c in default_reference(foreign=False) if c.name == "lab-eval"]
    assert lab and lab[0].judging and lab[0].judging["principals"] and lab[0].judging["attacked"]


def test_a_baseline_leaves_out_what_the_model_calls_attacks(tiny_bundle, tmp_path):
    site = synthetic_flows(hosts_per_class=3, flows_per_host=32, seed=8)
    caps = {f"day{i}": g.drop(columns=["label"]) for i, (_, g) in
            enumerate(site.groupby(site["src_ip"].str.split(".").str[-1]))}
    b = build_baseline(caps, tiny_bundle, tmp_path / "baseline", train_share=0.5)
    kept = load_baseline(tmp_path / "baseline")
    scored = {n: score_frame(f, tiny_bundle).windows for n, f in caps.items()}
    bad = set().union(*(attack_flow_ids(w) for w in scored.values()))
    assert bad, "the test needs flows the model calls attacks"
    # Deferred windows whose best class is an attack count too: a baseline must not teach
    # what looks like an attack as normal.
    leaning = set().union(*({f for ids in w[w["uncertain"].astype(bool) & (w["predicted"] != "benign")]["flow_ids"]
                             for f in ids} for w in scored.values()))
    assert leaning and leaning <= bad
    assert not set(kept["flow_id"]) & bad
    assert set(kept["flow_id"]) | bad == set(site["flow_id"])
    assert b.counts["left_out_flows"] == len(bad) and b.counts["kept_flows"] == len(kept)
    train, ref = load_baseline(b.path, part="train"), load_baseline(b.path, part="reference")
    assert len(train) + len(ref) == len(kept)
    assert not set(train["capture"]) & set(ref["capture"])  # whole captures on each side
    assert (kept["label"] == "benign").all()


def test_one_capture_is_split_by_time():
    df = pd.DataFrame({"first_seen_ms": range(100), "capture": "x"})
    parts = split_parts(df, 0.3, by_capture=False)
    assert (parts[:30] == "train").all() and (parts[30:] == "reference").all()


def test_by_time_every_capture_gives_its_own_first_share():
    """Two captures from different days: each trains on its own first share of time (one
    cut over both would give all of the earlier day to training, none of the later)."""
    df = pd.DataFrame({"first_seen_ms": [*range(100), *range(10**9, 10**9 + 50)],
                       "capture": ["mon"] * 100 + ["tue"] * 50})
    parts = split_parts(df, 0.5, by_capture=False)
    assert (parts[:50] == "train").all() and (parts[50:100] == "reference").all()
    assert (parts[100:125] == "train").all() and (parts[125:] == "reference").all()


def test_the_baseline_command_builds_and_explains(tiny_bundle, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from llm_agents.baseline_cli import baseline

    site = synthetic_flows(hosts_per_class=2, flows_per_host=20, seed=3)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    site.iloc[::2].drop(columns=["label"]).to_parquet(a)
    site.iloc[1::2].drop(columns=["label"]).to_parquet(b)
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("EDGELOOP_MODEL", str(tiny_bundle.path))
    r = CliRunner().invoke(baseline, ["--capture", str(a), "--capture", str(b), "--no-retrain"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "var" / "baseline" / "baseline.json").is_file()
    r = CliRunner().invoke(baseline, [])
    assert r.exit_code == 2 and "--capture FILE" in r.output


def test_a_baseline_decision_shows_the_site_beside_the_reference(capsys, monkeypatch):
    from evaluation.gate import Tolerance
    from llm_agents.cli import print_decision
    from llm_agents.retrain import RetrainDecision

    champ, chall = Figures("a", 1000, 0.004, 0.02), Figures("b", 1000, 0.002, 0.01)
    site = {"captures": 3, "champion": Figures("a", 120, 0.0, 0.05).to_dict(),
            "challenger": Figures("b", 120, 0.0, 0.025).to_dict()}
    d = RetrainDecision("baseline", True, "promoted", "a", "b",
                        open_world={"captures": 9, "champion": champ.to_dict(), "challenger": chall.to_dict(),
                                    "change": {}, "tolerance": Tolerance().__dict__, "site": site})
    monkeypatch.setenv("COLUMNS", "200")
    print_decision(d)
    out = capsys.readouterr().out
    assert "site deferred (120 windows)" in out and "5.00%" in out and "2.50%" in out and "-2.50 pt" in out
