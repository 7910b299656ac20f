"""The loop repairs what held-out conditions break: one review round on one held-out lab
capture makes the detector better on another, and the gate lets it through.

The round replays the case from before the idle-cut slowloris capture joined the recipe
(2026-12-06): it starts from the default bundle of then, 7ef2386b (kept in tests/data), and
retrains on the training set of then (the default set without `lab-train-idle`). That
detector gets 91.9% of the sixth held-out capture's known-class windows right (slow HTTP DoS
over the held-out lossy link: 49%). The shipped bundle gets 96.9% there and parks 8 slow-DoS
windows of the fourth capture, too few to learn from; a retrain on today's set from the old
detector learns the slow DoS but loses the brute forces over the held-out link (SSH 37%), and
the gate refuses it (`open_world_heldout_hits`). A person labels the known-class windows
of the fourth capture's review queue by its labels, as `edgeloop review correct` does; the
agent's retrain (one member, 20 epochs here) runs through the promotion gate with the
foreign reference. The queue holds only what the edge is unsure about (no audit sample: with
the edge's 1% audit, this one-member challenger lost SSH brute-force recall on the lab
holdout and the gate refused it, `recall_drop:ssh_bruteforce`; the command's three-member
retrain was promoted). Measured: promoted, 98.1% right on the sixth capture, unknown kinds and
benign windows as before. It replays that case with the shape rules of then too
(EDGELOOP_SHAPE_RULES=flood_shape,repeat_shape: the edge, the judge and the gate all read it):
with the one-service rule, on by default since rule 27, this one-member challenger was refused
(`open_world_heldout_wrong`, 2026-12-08). With the retrainer's old validation split (a hash of every
window) the same round was refused and read 80.1% there. What the round costs (brute
forces over the held-out link fall towards slow DoS: docs/openworld.md) is printed, not
asserted.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from inference.bundle import Bundle
from llm_agents.experiments.review_round import MANIFESTS, run

OLD_DEFAULT = Path(__file__).resolve().parents[1] / "data" / "bundle-7ef2386b"

pytestmark = pytest.mark.integration


@pytest.mark.skipif(not (MANIFESTS.parent / "lab" / "heldout-f.parquet").is_file(), reason="no held-out captures")
def test_one_review_round_on_a_held_out_capture_helps_on_another(tmp_path, monkeypatch):
    from inference.datasets.training import CAPTURE, training_flows

    monkeypatch.setenv("EDGELOOP_SHAPE_RULES", "flood_shape,repeat_shape")

    then = training_flows()
    then = then[then[CAPTURE] != "lab-train-idle"]
    res = run(tmp_path, capture="lab-heldout-d", arms=("attacks",), judge=("lab-heldout-f",), epochs=20, members=1,
              audit=0.0, champion=Bundle.load(OLD_DEFAULT), reference=then, plot=False)
    arm = res["arms"]["attacks"]
    before, after = res["judged"]["champion"]["lab-heldout-f"], res["judged"]["attacks"]["lab-heldout-f"]
    print(f"\nreview round: {arm['labelled']} labelled, {arm['decision']['reason']}; sixth capture known right "
          f"{before['known_right']:.3f} -> {after['known_right']:.3f}, slow DoS "
          f"{before['known_right_by_class']['slow_http_dos']:.3f} -> {after['known_right_by_class']['slow_http_dos']:.3f}, "
          f"unknown missed {before['unknown_missed']:.4f} -> {after['unknown_missed']:.4f}, benign false alerts "
          f"{before['false_alerts']:.4f} -> {after['false_alerts']:.4f}, deferred {before['deferred']:.4f} -> "
          f"{after['deferred']:.4f}")
    print("per class, champion -> challenger: " + ", ".join(
        f"{c} {v:.2f} -> {after['known_right_by_class'].get(c, 0.0):.2f}"
        for c, v in sorted(before["known_right_by_class"].items())))
    assert arm["labelled"].get("slow_http_dos", 0) >= 50 and "benign" not in arm["labelled"]
    assert arm["decision"]["promoted"], arm["decision"]
    assert after["known_right"] >= max(before["known_right"] + 0.03, 0.95)
    assert after["unknown_missed"] <= before["unknown_missed"] + 0.01
    assert after["false_alerts"] <= before["false_alerts"] + 0.005 and after["deferred"] <= before["deferred"] + 0.02
