"""Adoption rules as files (`edgeloop experiment judge`): each clause's reduction over seeds and
captures, its tests against bounds and the baseline, and the errors that keep a rule from
passing by judging nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from evaluation.recipe_rule import Rule, RuleError, judge, judge_cmd, load_rule

REPO = Path(__file__).resolve().parents[2]


def seeds_json(per_seed: dict[int, dict[str, object]]) -> dict:
    """An `experiment open-world` result: per seed, lab F1 and per capture (false alerts,
    unknown missed, known right per label) as (hits, windows)."""
    out = []
    for seed, d in per_seed.items():
        figs = []
        for m, v in d["captures"].items():
            for key, (k, n) in v.items():
                kind, verdict, label = {"fa": ("benign", "false_alert", "benign"),
                                        "unk": ("unknown", "miss", "icmp_flood")}.get(key, ("known", "ok", key))
                figs.append({"manifest": m, "kind": kind, "label": label, "verdict": verdict,
                             "windows": n, "value": k / n})
        out.append({"seed": seed, "lab_macro_f1": {"all": d["f1"]}, "figures": figs})
    return {"schema": "edgeloop.openworld_seeds/1", "per_seed": out}


BASE = seeds_json({
    0: {"f1": 0.998, "captures": {"a": {"fa": (1, 1000), "unk": (2, 100), "ssh": (80, 100), "scan": (100, 100)},
                                  "b": {"fa": (0, 1000), "unk": (0, 100), "ssh": (90, 100), "scan": (99, 100)}}},
    1: {"f1": 0.997, "captures": {"a": {"fa": (2, 1000), "unk": (4, 100), "ssh": (70, 100), "scan": (100, 100)},
                                  "b": {"fa": (1, 1000), "unk": (1, 100), "ssh": (60, 100), "scan": (98, 100)}}},
    2: {"f1": 0.996, "captures": {"a": {"fa": (0, 1000), "unk": (1, 100), "ssh": (75, 100), "scan": (97, 100)},
                                  "b": {"fa": (0, 1000), "unk": (0, 100), "ssh": (85, 100), "scan": (96, 100)}}},
})


def cand(**change) -> dict:
    d = json.loads(json.dumps(BASE))
    for (seed, m, label), (k, n) in change.get("figs", {}).items():
        for f in d["per_seed"][seed]["figures"]:
            if f["manifest"] == m and f["label"] == label:
                f["value"], f["windows"] = k / n, n
    return d


def rule(*clauses: dict) -> Rule:
    return Rule.model_validate({"name": "t", "clause": [{"id": str(i), **c} for i, c in enumerate(clauses)]})


def test_each_pooled_and_mean_of_medians_reduce_as_documented():
    c = cand(figs={(1, "b", "icmp_flood"): (5, 100)})
    v = judge(rule({"figure": "unknown_missed", "captures": ["*"], "seeds": "max", "max_over_baseline": 0.005,
                    "floor": 0.01},
                   {"figure": "unknown_missed", "captures": ["*"], "over": "pooled", "seeds": "max", "max_ratio": 1.5},
                   {"figure": "known_right", "captures": ["a", "b"], "over": "mean_of_medians", "gain": 0.0},
                   {"figure": "right:ssh", "captures": ["a", "b"], "over": "pooled", "seeds": "median", "min": 0.7}),
              c, BASE)
    rows = {(r["clause"], r["capture"]): r for r in v["rows"]}
    # per capture, highest seed: a 4% (= B's, under B + 0.5), b 5% against max(1%, 1% + 0.5%)
    assert rows["0", "a"]["candidate"] == pytest.approx(0.04) and rows["0", "a"]["met"]
    assert rows["0", "b"]["candidate"] == pytest.approx(0.05) and not rows["0", "b"]["met"]
    assert rows["0", "b"]["bounds"] == [{"op": "<=", "value": pytest.approx(0.015), "from": "baseline + 0.005"}]
    # pooled over a and b per seed, worst seed: seed 1 (4 + 5) / 200 against B's 5 / 200 x 1.5
    assert rows["1", "*"]["candidate"] == pytest.approx(0.045) and rows["1", "*"]["baseline"] == pytest.approx(0.025)
    assert not rows["1", "*"]["met"]
    # mean over captures of the median seed's known right (ssh and scan pooled per capture)
    # a: 180, 170, 172 of 200 (median 0.86); b: 189, 158, 181 (median 0.905)
    assert rows["2", "*"]["candidate"] == pytest.approx((0.86 + 0.905) / 2) and rows["2", "*"]["met"]
    assert rows["3", "*"]["candidate"] == pytest.approx(160 / 200)      # ssh pooled: seeds 170, 130, 160 of 200
    assert v["failed_clauses"] == ["0", "1"] and not v["met"]


def test_floor_bounds_and_absolute_bounds():
    v = judge(rule({"figure": "unknown_missed", "captures": ["b"], "seeds": "max", "max_over_baseline": 0.0,
                    "floor": 0.02},
                   {"figure": "false_alerts", "captures": ["a"], "seeds": "max", "max": 0.001},
                   {"figure": "lab_macro_f1", "seeds": "min", "min": 0.9965}), BASE, BASE)
    rows = {r["clause"]: r for r in v["rows"]}
    assert rows["0"]["met"] and rows["0"]["bounds"][0]["value"] == 0.02 and rows["0"]["bounds"][0]["from"] == "floor 0.02"
    assert not rows["1"]["met"] and rows["1"]["candidate"] == pytest.approx(0.002)
    assert not rows["2"]["met"] and rows["2"]["candidate"] == pytest.approx(0.996)   # the lowest seed
    assert v["failed_clauses"] == ["1", "2"]


@pytest.mark.parametrize("clause, message", [
    ({"figure": "f1", "seeds": "min", "min": 1}, "figure 'f1'"),
    ({"figure": "known_right", "captures": ["a"]}, "no test"),
    ({"figure": "known_right", "min": 0.9}, "which captures"),
    ({"figure": "lab_macro_f1", "captures": ["a"], "min": 0.9}, "has no captures"),
    ({"figure": "known_right", "captures": ["a"], "min": 0.9, "typo": 1}, "Extra inputs"),
    ({"figure": "known_right", "captures": ["a"], "min": 0.9, "floor": 0.1}, "floor goes with max_over_baseline"),
])
def test_bad_clauses_are_refused_by_name(tmp_path, clause, message):
    p = tmp_path / "r.toml"
    p.write_text('schema = "edgeloop.recipe_rule/1"\nname = "r"\n[[clause]]\nid = "x"\n'
                 + "".join(f"{k} = {json.dumps(v)}\n" for k, v in clause.items()))
    with pytest.raises(RuleError, match=message):
        load_rule(p)


def test_a_clause_that_matches_no_capture_is_an_error_not_a_pass():
    with pytest.raises(RuleError, match=r"no capture judged by both results matches \['lab-heldout\*'\]"):
        judge(rule({"figure": "known_right", "captures": ["lab-heldout*"], "min": 0.0}), BASE, BASE)
    with pytest.raises(RuleError, match="no right:ftp windows"):
        judge(rule({"figure": "right:ftp", "captures": ["a"], "min": 0.0}), BASE, BASE)


def test_the_command_prints_the_miss_apart_from_its_bound_and_exits_1(tmp_path):
    c, b = tmp_path / "c.json", tmp_path / "b.json"
    # one false alert over 0.1% on capture a at seed 1: 1,003 in 1,000,000 windows
    c.write_text(json.dumps(cand(figs={(1, "a", "benign"): (1003, 1_000_000)})))
    b.write_text(json.dumps(BASE))
    r = tmp_path / "r.toml"
    r.write_text('schema = "edgeloop.recipe_rule/1"\nname = "rule x"\n[[clause]]\nid = "3c"\n'
                 'figure = "false_alerts"\ncaptures = ["a"]\nseeds = "max"\nmax = 0.001\n')
    res = CliRunner().invoke(judge_cmd, [str(r), str(c), str(b), "--json", str(tmp_path / "v.json")])
    assert res.exit_code == 1, res.output
    assert "0.1003%" in res.output and "<= 0.1000%" in res.output and "NOT MET (clauses 3c)" in res.output
    assert json.loads((tmp_path / "v.json").read_text())["failed_clauses"] == ["3c"]
    ok = CliRunner().invoke(judge_cmd, [str(r), str(b), str(b)])
    assert ok.exit_code == 1                                 # B itself: 0.2% on seed 1
    r.write_text(r.read_text().replace("max = 0.001", "max = 0.002"))
    assert CliRunner().invoke(judge_cmd, [str(r), str(b), str(b)]).exit_code == 0


def test_the_rules_in_docs_load():
    for p in sorted((REPO / "docs" / "rules").glob("*.toml")):
        assert load_rule(p).clause, p
