"""`edgeloop experiment compare`: two `experiment open-world` results side by side."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from evaluation.experiment_openworld import compare, compare_runs, per_manifest


def fig(manifest, kind, label, verdict, windows, value):
    return {"manifest": manifest, "group": manifest, "kind": kind, "label": label, "verdict": verdict,
            "windows": windows, "value": value, "op": "<=", "target": 0.01}


def result(seeds: dict[int, dict]) -> dict:
    """An open-world result: per seed, known right of two classes on capture a (100 and 300
    windows), unknown missed of two kinds there, and benign false alerts on a and b."""
    per_seed = []
    for seed, v in seeds.items():
        per_seed.append({"seed": seed, "lab_macro_f1": {"all": v["f1"]}, "figures": [
            fig("a", "benign", "benign", "false_alert", 1000, v["fa"]),
            fig("b", "benign", "benign", "false_alert", 500, v["fa"] / 2),
            fig("a", "known", "slow", "ok", 100, v["slow"]),
            fig("a", "known", "scan", "ok", 300, 1.0),
            fig("a", "unknown", "icmp", "miss", 50, v["icmp"]),
            fig("a", "unknown", "ftp", "miss", 150, 0.0)]})
    return {"per_seed": per_seed}


BASE = result({0: {"f1": 0.99, "fa": 0.001, "slow": 0.6, "icmp": 0.02},
               1: {"f1": 0.995, "fa": 0.002, "slow": 0.8, "icmp": 0.0},
               2: {"f1": 0.997, "fa": 0.0, "slow": 0.7, "icmp": 0.04}})
CAND = result({0: {"f1": 0.996, "fa": 0.003, "slow": 0.9, "icmp": 0.5},
               1: {"f1": 0.998, "fa": 0.001, "slow": 0.95, "icmp": 0.0},
               2: {"f1": 0.999, "fa": 0.002, "slow": 0.92, "icmp": 0.0}})


def test_each_seeds_rate_is_pooled_over_labels_by_windows():
    pm = per_manifest(BASE)
    # Known right on a, seed 0: (100 * 0.6 + 300 * 1.0) / 400, not the mean of 0.6 and 1.0.
    assert pm["a"][("known", "ok")][0] == pytest.approx(0.9)
    # Unknown missed on a, seed 2: 2 of 200 windows; each kind also on its own.
    assert pm["a"][("unknown", "miss")][2] == pytest.approx(0.01)
    assert pm["a"][("unknown:icmp", "miss")] == {0: 0.02, 1: 0.0, 2: 0.04}


def test_the_comparison_says_where_the_candidate_is_worse_and_what_the_targets_say():
    res = compare_runs(CAND, BASE)
    rows = {(r["manifest"], r["figure"], r["verdict"]): r for r in res["rows"]}
    known = rows[("a", "known", "ok")]
    assert known["baseline"] == pytest.approx([0.9, 0.925, 0.95])        # slow 0.6 / 0.7 / 0.8 pooled
    assert known["candidate"][1] == pytest.approx((92 + 300) / 400) and not known["worse"]
    icmp = rows[("a", "unknown:icmp", "miss")]
    assert icmp["candidate"] == pytest.approx([0.0, 0.0, 0.5]) and not icmp["worse"]   # median 0 <= 0.02
    assert rows[("a", "benign", "false_alert")]["worse"]                 # median 0.2% against 0.1%
    b, c = res["baseline"], res["candidate"]
    assert b["known_ok_mean_of_medians"] == pytest.approx(0.925)
    assert (b["captures_known_median_met"], c["captures_known_median_met"]) == (0, 1)
    # Unknown kinds <= 1% on every seed: the baseline's worst seed misses 1.0% pooled (2 of 200),
    # the candidate's 12.5% (25 of 200).
    assert (b["captures_unknown_every_seed_met"], c["captures_unknown_every_seed_met"]) == (1, 0)
    assert b["lab_macro_f1"] == [0.99, 0.997] and c["benign_false_alerts_worst"] == pytest.approx(0.003)


def test_unknown_kinds_are_pooled_over_captures_per_seed_with_the_worst_seeds_interval():
    res = compare_runs(CAND, BASE)
    b, c = res["baseline"]["unknown_missed_pooled"], res["candidate"]["unknown_missed_pooled"]
    # The baseline's seeds miss 1, 0 and 2 of a's 200 unknown windows: its worst is seed 2, at
    # exactly 1%: met, but 200 windows cannot show it (the interval reaches 3.6%).
    assert b["per_seed"] == {"0": {"missed": 1, "windows": 200}, "1": {"missed": 0, "windows": 200},
                             "2": {"missed": 2, "windows": 200}}
    assert (b["worst"]["seed"], b["worst"]["missed"], b["worst"]["met"], b["worst"]["settled"]) == (2, 2, True, False)
    assert b["worst"]["interval"][1] > 0.03
    # The candidate's seed 0 misses 25 of 200: 12.5%, settled (8.6-17.8%).
    w = c["worst"]
    assert (w["seed"], w["missed"], w["met"], w["settled"]) == (0, 25, False, True)
    assert w["interval"][0] == pytest.approx(0.0861, abs=1e-3)
    # only the manifests both sides judged are pooled
    from evaluation.experiment_openworld import pooled_unknown_missed
    assert pooled_unknown_missed(CAND, {"b"})["worst"] is None


def test_the_command_prints_both_sides(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(CAND))
    (tmp_path / "b.json").write_text(json.dumps(BASE))
    r = CliRunner().invoke(compare, [str(tmp_path / "c.json"), str(tmp_path / "b.json"), "--all-rows",
                                     "--json", str(tmp_path / "out.json")], env={"COLUMNS": "220"})
    assert r.exit_code == 0, r.output
    assert "90.00% / 92.50% / 95.00%" in r.output and "worse" in r.output and "0.9900-0.9970" in r.output
    assert "12.50% (25 of 200, seed 0; 8.61%-17.80%)" in r.output and "0.27%-3.57%, unsettled" in r.output
    assert json.loads((tmp_path / "out.json").read_text())["rows"]
    # the wrong file says which it is and what it holds, not a KeyError
    (tmp_path / "x.json").write_text('{"schema": "edgeloop.openworld_report/1"}')
    r = CliRunner().invoke(compare, [str(tmp_path / "x.json"), str(tmp_path / "b.json")], env={"COLUMNS": "400"})
    assert r.exit_code == 1 and "x.json: not an `experiment open-world` result" in r.output
    assert "edgeloop.openworld_report/1" in r.output and "KeyError" not in r.output
    (tmp_path / "y.json").write_text("flow_id,label\n")
    r = CliRunner().invoke(compare, [str(tmp_path / "c.json"), str(tmp_path / "y.json")], env={"COLUMNS": "400"})
    assert r.exit_code == 1 and "y.json: not JSON" in r.output


def test_open_world_prints_unknown_kinds_pooled_per_seed(monkeypatch, tmp_path):
    """`experiment open-world` ends its table with the unknown kinds pooled over the captures
    per seed, and the worst seed's interval (training is stubbed: the printing is tested)."""
    import evaluation.experiment_openworld as eo

    res = {**CAND, "manifests": ["data/openworld/a.toml", "data/openworld/b.toml"],
           "table": eo.table_rows(CAND["per_seed"]), "plot": str(tmp_path / "p.png")}
    monkeypatch.setattr(eo, "run", lambda *a, **k: res)
    m = tmp_path / "a.toml"
    m.write_text("")
    r = CliRunner().invoke(eo.open_world, ["--seeds", "0,1,2", "--manifest", str(m), "--out", str(tmp_path)],
                           env={"COLUMNS": "220"})
    assert r.exit_code == 0, r.output
    assert ("unknown kinds missed, pooled over the captures: seed 0 25 of 200, seed 1 0 of 200, "
            "seed 2 0 of 200; worst 12.50% (25 of 200, seed 0; 8.61%-17.80%)") in r.output
