"""The shipped default bundle: it verifies, stays small, and holds its figures inside the lab
and outside it (the nDPI test half and the lab's held-out captures, which it never trained on).

The figures it ships with are in its reports (reports/openworld-*.json) and the README;
these tests guard them against regressions at the issue's targets (benign on the nDPI test
half: <= 1% false alerts, <= 5% deferred; on a held-out lab capture also known classes
>= 95% right and unknown kinds <= 1% confidently benign; the lab's own capture, judged by
who carries each attack: macro-F1 >= 0.98). Thirteen of the twenty-one held-out captures (a-u,
runs apart) meet every target and are held to it. The others miss one: known classes >= 95%
right on e (93.7%), s (93.4%) and t (94.0%), unknown kinds <= 1% on the first capture (1.16%,
3 of 259 windows), c (1.32%), i (1.80%), n (2.16%), o (1.14%), s (1.15%) and t (4.68%). Their
reports ship beside the others and the README gives their figures (rule 27 adopted this bundle's
recipe: docs/openworld.md).
"""
from __future__ import annotations

import json

import pytest

from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
from inference.datasets.lab import LAB_CLASSES

LAB_F1_FLOOR = 0.98


@pytest.fixture(scope="module")
def bundle():
    assert (DEFAULT_BUNDLE_DIR / "bundle.json").is_file(), f"no default bundle in {DEFAULT_BUNDLE_DIR}"
    return Bundle.load(DEFAULT_BUNDLE_DIR)


def test_default_bundle_verifies_and_is_small(bundle):
    bundle.verify()
    assert bundle.class_names == ["benign", *sorted(set(LAB_CLASSES) - {"benign"})]
    assert bundle.meta.window.views == ["src", "dst"]
    # What an edge loads and verifies (bundle.json and the ONNX files), and the
    # reports that ride along in the repo (one JSON and plot per open-world manifest, about
    # 110 KB each; the nDPI test half's JSON 300 KB; the as-recorded manifest's JSON, a-r in
    # one, 600 KB, without its plot: the README tables it).
    files = [p for p in DEFAULT_BUNDLE_DIR.rglob("*") if p.is_file()]
    model = sum(p.stat().st_size for p in files if "reports" not in p.relative_to(DEFAULT_BUNDLE_DIR).parts)
    reports = sum(p.stat().st_size for p in files) - model
    assert model < 1.5 * 1024 * 1024, model
    assert reports < 3.5 * 1024 * 1024, reports


def test_lab_evaluation_capture_holds(bundle):
    from evaluation.experiment_openworld import lab_macro_f1

    f1 = lab_macro_f1(bundle)
    assert f1["all"] >= LAB_F1_FLOOR, f1


def test_foreign_benign_traffic_is_neither_alerted_nor_deferred(bundle):
    from evaluation.gate import RefCapture, reference_figures
    from inference.datasets.ndpi import load_ndpi

    nd = load_ndpi("test", purpose="evaluate")
    f = reference_figures(bundle, [RefCapture(n, g.drop(columns=["file", "split"]), "benign")
                                   for n, g in nd.groupby("file")])
    assert f.benign_windows > 1000
    assert f.false_alerts <= 0.01 and f.deferrals <= 0.05, f


# Every held-out lab capture on which the shipped bundle meets all the targets, runs apart.
MEETS_EVERY_TARGET = tuple(f"lab-heldout-{c}" for c in "bdfghjklmpqru")


@pytest.mark.parametrize("manifest", MEETS_EVERY_TARGET)
def test_held_out_lab_capture_meets_every_target(bundle, tmp_path, manifest):
    from evaluation.experiment_openworld import REPO
    from evaluation.openworld import evaluate_open_world

    rep = evaluate_open_world(REPO / "data" / "openworld" / f"{manifest}.toml", bundle, out_dir=tmp_path,
                              plots=False, progress=False)
    assert rep["totals"]["failed"] == 0
    assert rep["targets_met"], [t for t in rep["targets"] if not t["met"]]


def test_shipped_reports_are_this_bundles(bundle):
    for name in ("eval", "openworld-ndpi-test", "openworld-lab-heldout", "openworld-lab-heldout-b",
                 "openworld-lab-heldout-c", "openworld-lab-heldout-d", "openworld-lab-heldout-e",
                 "openworld-lab-heldout-f", "openworld-lab-heldout-g", "openworld-lab-heldout-h",
                 "openworld-lab-heldout-i", "openworld-lab-heldout-j", "openworld-lab-heldout-k",
                 "openworld-lab-heldout-l", "openworld-lab-heldout-m", "openworld-lab-heldout-n",
                 "openworld-lab-heldout-o", "openworld-lab-heldout-p", "openworld-lab-heldout-q",
                 "openworld-lab-heldout-r", "openworld-lab-heldout-as-recorded", "openworld-lab-heldout-s",
                 "openworld-lab-heldout-s-as-recorded", "openworld-lab-heldout-t",
                 "openworld-lab-heldout-t-as-recorded", "openworld-lab-heldout-u",
                 "openworld-lab-heldout-u-as-recorded"):
        report = json.loads((DEFAULT_BUNDLE_DIR / "reports" / f"{name}.json").read_text())
        assert report["bundle"]["version"] == bundle.version, name


def test_a_ping_flood_metered_as_one_flow_is_never_called_benign(bundle):
    """`ping -f` meters as one ICMP flow of a thousand echoes or more; the network alone
    called such a window benign at 1.00 on every held-out capture. No benign training flow of
    ICMP comes near it, and the bundle's flow support (inference.support) says so."""
    import pandas as pd

    from evaluation.experiment_openworld import REPO
    from streams.score import score_frame

    flows = pd.read_parquet(REPO / "data" / "lab" / "heldout.parquet")
    floods = set(flows.query("protocol == 1 and packets > 1000 and label == 'icmp_flood'")["flow_id"])
    assert floods, "the held-out capture has no one-flow ping flood"
    w = score_frame(flows, bundle).windows
    hit = w[w["flow_ids"].map(lambda ids: bool(floods & set(ids)))]
    assert len(hit) >= len(floods)
    called_benign = hit[(hit["predicted"] == bundle.meta.benign_class) & ~hit["uncertain"]]
    assert called_benign.empty, called_benign[["window_id", "view", "key", "confidence"]]
