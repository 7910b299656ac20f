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
    assert set(detail) == {"false_alerts", "deferrals", "hits", "heldout_hits", "heldout_wrong", "unknown_missed",
                           "unknown_flips"}


def unk(missed: dict[str, int], windows: int = 259, **hits) -> Figures:
    """Figures with kinds the model does not know: `missed` windows of each called benign
    (ids w0, w1, ... of that kind), out of `windows` per kind."""
    f = fig(0.0, 0.01, syn_scan=0.9, **hits)
    f.unknown = {k: windows for k in missed}
    f.unknown_missed = {k: [f"{k}-w{i}" for i in range(n)] for k, n in missed.items()}
    return f


@pytest.mark.parametrize("challenger, reason", [
    (unk({"icmp_flood": 12, "ftp": 0}), "open_world_unknown_missed"),  # 12 of 518 more benign, none back
    (unk({"icmp_flood": 5, "ftp": 0}), "ok"),                          # 5 of 518: +0.97 pt, within 1 pt
    (unk({"icmp_flood": 0, "ftp": 0}), "ok"),                          # none missed, as before
])
def test_the_gate_refuses_a_model_that_calls_unseen_kinds_benign(challenger, reason):
    champion = unk({"icmp_flood": 0, "ftp": 0})
    ok, why, detail = open_world_gate(champion, challenger, Tolerance())
    assert (ok, why) == (reason == "ok", reason), detail
    assert detail["unknown_flips"] == {"lost": len(challenger.unknown_missed["icmp_flood"]), "gained": 0,
                                       "windows": 518}


def test_a_rise_that_is_noise_passes():
    """+2 points beyond the tolerance, but 4 windows lost against 2 gained: no evidence."""
    champion, challenger = unk({"icmp_flood": 0, "ftp": 2}, windows=50), unk({"icmp_flood": 4, "ftp": 0}, windows=50)
    ok, why, detail = open_world_gate(champion, challenger, Tolerance())
    assert detail["unknown_missed"] == pytest.approx(0.02)
    assert (ok, why) == (True, "ok")
    challenger = unk({"icmp_flood": 9, "ftp": 0}, windows=50)   # 9 lost, 2 gained: real (p 0.03)
    assert open_world_gate(champion, challenger, Tolerance())[:2] == (False, "open_world_unknown_missed")


@pytest.mark.parametrize("hits, wrong, reason", [
    (0.95, 0.02, "ok"),                             # -1 pt hits, +1 pt named wrong
    (0.929, 0.02, "open_world_heldout_hits"),       # -3.1 pt hits
    (0.95, 0.031, "open_world_heldout_wrong"),      # +2.1 pt named wrong
])
def test_the_gate_refuses_a_model_that_hits_less_under_held_out_conditions(hits, wrong, reason):
    champion, challenger = fig(0.0, 0.01, syn_scan=0.9), fig(0.0, 0.01, syn_scan=0.9)
    champion.heldout_known = challenger.heldout_known = 1400
    champion.heldout_hits, challenger.heldout_hits = 0.96, hits
    champion.heldout_wrong, challenger.heldout_wrong = 0.01, wrong
    ok, why, detail = open_world_gate(champion, challenger, Tolerance())
    assert (ok, why) == (reason == "ok", reason)
    assert detail["heldout_hits"] == pytest.approx(hits - 0.96) and detail["heldout_wrong"] == pytest.approx(wrong - 0.01)
    # A site baseline's gate (no hit tolerance) still refuses what it names wrong, and only that.
    site = open_world_gate(champion, challenger, Tolerance(heldout_hits=None))[:2]
    assert site == ((False, reason) if reason == "open_world_heldout_wrong" else (True, "ok"))


def test_a_kind_one_model_knows_is_not_compared_as_unseen():
    """The loop's challenger learned slow DoS from labels: its champion's misses of that kind
    are not held against it, nor compared with a class it now knows."""
    champion = unk({"slow_http_dos": 0, "icmp_flood": 0})
    challenger = unk({"icmp_flood": 0}, slow_http_dos=0.9)   # slow DoS now known (and hit)
    challenger.unknown_missed["icmp_flood"] = []
    assert open_world_gate(champion, challenger, Tolerance())[:2] == (True, "ok")
    champion = unk({"slow_http_dos": 100, "icmp_flood": 0})   # the champion called it benign
    assert open_world_gate(champion, challenger, Tolerance())[:2] == (True, "ok")


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


def test_the_default_reference_holds_a_held_out_lab_capture_with_unseen_kinds():
    """Issue 10's gate looks at the lab's held-out conditions too: the first held-out
    capture (tools, settings and a link training never used, and three kinds no shipped
    model was trained on), judged by its labels as `edgeloop evaluate --open-world` judges it."""
    from evaluation.gate import default_reference
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle

    ref = default_reference(foreign=False)
    held = [c for c in ref if c.name == "lab-heldout"]
    assert held and held[0].expect == "labels" and held[0].judging["principals"]
    bundle = Bundle.load(DEFAULT_BUNDLE_DIR)
    with_held = reference_figures(bundle, ref)
    without = reference_figures(bundle, [c for c in ref if c.name != "lab-heldout"])
    assert without.unknown == {}
    assert set(with_held.unknown) == {"ftp_bruteforce", "icmp_flood", "udp_flood"}
    assert all(n >= 50 for n in with_held.unknown.values())
    # Its known-class windows are pooled into one held-out hit rate; the per-class hits stay
    # the evaluation capture's.
    assert with_held.support == without.support and without.heldout_known == 0
    assert with_held.heldout_known > 1000 and 0.95 < with_held.heldout_hits < 1.0
    assert set(with_held.heldout_by_class) == set(bundle.class_names) - {"benign"}
    # The gate counts the shipped bundle's misses as its open-world report does.
    import json

    report = json.loads((DEFAULT_BUNDLE_DIR / "reports" / "openworld-lab-heldout.json").read_text())
    missed = [t["count"] for t in report["targets"] if t["kind"] == "unknown" and t["verdict"] == "miss"]
    assert sum(map(len, with_held.unknown_missed.values())) == missed[0]
    # A manifest of captures judged some other way is refused, not half used.
    from contracts.errors import SourceError
    from evaluation.gate import manifest_reference

    with pytest.raises(SourceError, match="capture benign: scope all is not a gate reference"):
        manifest_reference("data/openworld/crafted/crafted.toml")


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


def test_a_decision_shows_the_held_out_conditions_and_the_unseen_kinds(capsys, monkeypatch):
    from llm_agents.cli import print_decision
    from llm_agents.retrain import RetrainDecision

    champ, chall = Figures("a", 1000, 0.004, 0.02), Figures("b", 1000, 0.004, 0.02)
    champ.heldout_known = chall.heldout_known = 1392
    champ.heldout_hits, chall.heldout_hits = 0.974, 0.951
    champ.heldout_wrong, chall.heldout_wrong = 0.011, 0.019
    champ.heldout_by_class = {"slow_http_dos": 0.785, "ssh_bruteforce": 0.902, "syn_scan": 1.0}
    chall.heldout_by_class = {"slow_http_dos": 0.953, "ssh_bruteforce": 0.745, "syn_scan": 0.996}
    champ.unknown = chall.unknown = {"icmp_flood": 78, "udp_flood": 181}
    chall.unknown_missed = {"icmp_flood": [f"w{i}" for i in range(12)], "udp_flood": []}
    ok, why, change = open_world_gate(champ, chall, Tolerance())
    assert (ok, why) == (False, "open_world_unknown_missed")
    d = RetrainDecision("request", False, why, "a", "b",
                        open_world={"captures": 9, "champion": champ.to_dict(), "challenger": chall.to_dict(),
                                    "change": change, "tolerance": Tolerance().__dict__})
    monkeypatch.setenv("COLUMNS", "250")
    print_decision(d)
    out = capsys.readouterr().out
    assert "held-out conditions, known classes hit (1392 windows)" in out and "97.4%" in out and "-2.3 pt" in out
    assert "known classes named wrong (1392 windows)" in out and "+0.8 pt" in out and "+2 pt" in out
    assert "-3 pt" in out
    # Per class where it moved by a point or more, the largest fall first; 0.4 pt is not shown.
    assert "held-out ssh_bruteforce hit" in out and "-15.7 pt" in out and "+16.8 pt" in out
    assert out.index("held-out ssh_bruteforce") < out.index("held-out slow_http_dos") and "syn_scan hit" not in out
    assert "unseen kinds called benign (259 windows)" in out and "+4.6 pt (12 lost, 0 gained)" in out
