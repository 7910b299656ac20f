"""`edgeloop experiment review-round`: what goes to the review queue, what a person labels,
and how the judged windows are counted (the retrain itself is the retrainer's, tested there)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from llm_agents.experiments.review_round import (MANIFESTS, judged_windows, person_labels, rates, review_queue,
                                                 review_round, review_round_png)


def test_rates_count_each_kind_by_its_own_windows() -> None:
    w = pd.DataFrame({
        "kind": ["benign"] * 4 + ["known"] * 5 + ["unknown"] * 2,
        "expected": ["benign"] * 4 + ["syn_scan", "syn_scan", "slow_http_dos", "slow_http_dos", "slow_http_dos"]
        + ["icmp_flood"] * 2,
        "verdict": ["ok", "ok", "false_alert", "deferred", "ok", "ok", "ok", "deferred", "miss", "miss",
                    "caught_uncertain"]})
    r = rates(w)
    assert (r["false_alerts"], r["deferred"]) == (0.25, 0.25)
    assert r["known_right"] == pytest.approx(0.6) and r["unknown_missed"] == 0.5
    assert r["known_right_by_class"] == {"slow_http_dos": pytest.approx(1 / 3), "syn_scan": 1.0}
    assert (r["benign_windows"], r["known_windows"], r["unknown_windows"]) == (4, 5, 2)


@pytest.mark.skipif(not (MANIFESTS.parent / "lab" / "heldout-d.parquet").is_file(), reason="no held-out capture")
def test_a_person_labels_the_queue_by_the_capture_labels_and_never_an_unseen_kind(tmp_path) -> None:
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle

    champion = Bundle.load(DEFAULT_BUNDLE_DIR)
    src = MANIFESTS / "lab-heldout-d.toml"
    judged = judged_windows(src, champion, tmp_path)
    unc = review_queue(champion, src)
    attacks, everything = person_labels(unc, judged, "attacks"), person_labels(unc, judged, "all")
    queued = {u.window_id for u in unc}
    assert unc and set(everything) <= queued
    truth = judged.drop_duplicates("window_id").set_index("window_id")
    # What the edge deferred is what the judge calls deferred or caught as uncertain, less the
    # destination windows it covers (called a class only their sources' windows can show: the
    # edge does not forward them, by design; with af197e62, 41 destination windows of an
    # unknown ICMP flood's victim called host_sweep).
    from contracts.window import ONE_PEER_SOURCE_CLASSES, SOURCE_ONLY_CLASSES

    deferred = set(truth.index[truth["verdict"].isin(["deferred", "caught_uncertain"])])
    held_back = truth.loc[sorted(deferred - queued)]
    assert ((held_back["view"] == "dst") & held_back["predicted"].isin(SOURCE_ONLY_CLASSES | ONE_PEER_SOURCE_CLASSES)).all()
    assert len(deferred & queued) > len(held_back)
    assert attacks and all(truth.loc[w, "kind"] == "known" and truth.loc[w, "expected"] == y
                           for w, y in attacks.items())
    extra = {w: y for w, y in everything.items() if w not in attacks}
    assert extra and set(extra.values()) == {"benign"} and all(truth.loc[w, "kind"] == "benign" for w in extra)
    assert everything.items() >= attacks.items()
    unseen = set(truth.index[truth["kind"] == "unknown"]) & queued
    assert unseen and not unseen & set(everything)     # unseen kinds stay in the queue, unlabelled
    # The edge's audit sample adds confident windows to the queue, labelled the same way.
    audited_unc = review_queue(champion, src, audit=0.05)
    audited = person_labels(audited_unc, judged, "attacks")
    extra = {u.window_id for u in audited_unc if u.reason == "audit"}
    assert extra and not extra & queued and {u.window_id for u in audited_unc} == queued | extra
    assert audited.items() >= attacks.items() and set(audited) - set(attacks) <= extra
    # (an audited window may be out of the judge's scope: not every one is in `truth`)
    assert any(w in truth.index and truth.loc[w, "kind"] == "known" for w in extra) and set(audited) - set(attacks)


def test_the_command_refuses_unknown_arms_and_manifests(tmp_path) -> None:
    r = CliRunner().invoke(review_round, ["--out", str(tmp_path), "--arms", "attacks,some"])
    assert r.exit_code == 2 and "arms are attacks, all" in r.output
    r = CliRunner().invoke(review_round, ["--out", str(tmp_path), "--judge", "no-such-capture"])
    assert r.exit_code == 2 and "no manifest data/openworld/no-such-capture.toml" in r.output
    r = CliRunner().invoke(review_round, ["--out", str(tmp_path), "--capture", "lab-heldout"])
    assert r.exit_code == 2


def test_the_plot_has_a_bar_per_model_and_capture(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    r = {"known_right": 0.9, "unknown_missed": 0.01}
    res = {"capture": "lab-heldout-d", "judge": ["lab-heldout-f", "ndpi-test"],
           "arms": {"attacks": {"decision": {"promoted": True, "reason": "promoted"}}},
           "judged": {"champion": {"lab-heldout-f": r, "ndpi-test": {"false_alerts": 0.0}},
                      "attacks": {"lab-heldout-f": dict(r, known_right=0.97), "ndpi-test": {"false_alerts": 0.0}}}}
    path = review_round_png(res, tmp_path / "p.png")
    img = Image.open(path).convert("RGB")
    assert img.size[0] >= 700
    # A bar per model: matplotlib's first two colours (champion, then the arm) are both drawn.
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours


def test_champion_starts_the_round_from_the_bundle_given(tmp_path, monkeypatch) -> None:
    import llm_agents.experiments.review_round as rr

    old = Path(__file__).resolve().parents[1] / "data" / "bundle-7ef2386b"
    seen = {}

    def fake_run(out_dir, **kw):
        seen.update(kw)
        return {"arms": {}, "judged": {"champion": {}}, "judge": []}
    monkeypatch.setattr(rr, "run", fake_run)
    r = CliRunner().invoke(review_round, ["--out", str(tmp_path), "--champion", str(old)])
    assert r.exit_code == 0, r.output
    assert seen["champion"].version == "7ef2386be8253122"
    r = CliRunner().invoke(review_round, ["--out", str(tmp_path)])
    assert r.exit_code == 0 and seen["champion"] is None          # run() loads the shipped bundle
    r = CliRunner().invoke(review_round, ["--out", str(tmp_path), "--champion", str(tmp_path / "nowhere")])
    assert r.exit_code == 2
