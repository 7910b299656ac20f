"""Retraining: the promotion gate, the held-out split, and whole runs on SYNTHETIC flows."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from llm_agents.audit import AuditLog
from llm_agents.synthesis.constraints import check_flows
from evaluation.holdout_gate import Figures, gate, paired_gain
from llm_agents.retrain import RetrainConfig, Retrainer, holdout_mask
from llm_agents.store import DatasetStore, reference_frame
from llm_agents.window_frames import window_tensors, windows_frame
from tests.support.promotion import assert_no_real_recall_loss

pytest.importorskip("torch", reason="retraining needs the train extra")

KNOWN = ["benign", "fin_scan", "ssh_bruteforce", "syn_flood", "syn_scan"]
FAST = RetrainConfig(epochs=5, synth_windows=8, synth_rounds=1, synth_below=20, members=1)


def fig(recall: dict[str, float], macro: float, classes=KNOWN) -> Figures:
    return Figures("v", list(classes), 100, macro, recall, dict(recall), {c: 10 for c in recall})


def test_gate_needs_strictly_better_macro_f1_and_no_recall_drop_over_one_point() -> None:
    champ = fig({"benign": 0.99, "syn_scan": 0.95}, 0.90)
    assert gate(champ, fig({"benign": 0.99, "syn_scan": 0.95}, 0.90))[:2] == (False, "no_gain")
    assert gate(champ, fig({"benign": 0.985, "syn_scan": 0.97}, 0.93))[:2] == (True, "promoted")
    ok, reason, delta = gate(champ, fig({"benign": 0.97, "syn_scan": 1.0}, 0.95))
    assert (ok, reason) == (False, "recall_drop:benign") and delta["benign"] == pytest.approx(-0.02)
    # A class the champion never had carries no recall to protect (it was 0 by definition).
    champ2 = fig({"benign": 0.99, "slow_http_dos": 0.0}, 0.5)
    chal2 = fig({"benign": 0.99, "slow_http_dos": 0.9}, 0.9, classes=[*KNOWN, "slow_http_dos"])
    assert gate(champ2, chal2)[:2] == (True, "promoted")


def test_a_recall_drop_is_refused_only_when_its_windows_are_evidence() -> None:
    """A class of 71 held-out windows: 2 flipping to wrong in a retrain is 2.8 points but a
    sign test gives p = 0.25, so the gain decides; 5 against none (p = 0.03) is refused, as
    is any drop beyond the point when no per-window changes are given."""
    from evaluation.holdout_gate import loss_is_real, recall_changes

    truth = np.array(["benign"] * 300 + ["http_bruteforce"] * 71, dtype=object)
    champion = truth.copy()
    champion[:20] = "http_bruteforce"  # the champion's false alerts, which the challenger fixes

    def figures(pred: np.ndarray, macro_f1: float) -> Figures:
        recall = {c: float((pred[truth == c] == c).mean()) for c in ("benign", "http_bruteforce")}
        return Figures("v", list(KNOWN) + ["http_bruteforce"], len(truth), macro_f1, recall, recall,
                       {c: int((truth == c).sum()) for c in recall})

    for lost, refused in ((2, False), (4, False), (5, True)):
        challenger = truth.copy()
        challenger[300:300 + lost] = "benign"
        flips = recall_changes(truth, champion, challenger)
        assert flips["http_bruteforce"] == (lost, 0) and flips["benign"] == (0, 20)
        champ, chall = figures(champion, 0.90), figures(challenger, 0.99)
        ok, reason, delta = gate(champ, chall, flips=flips)
        assert (ok, reason) == ((False, "recall_drop:http_bruteforce") if refused else (True, "promoted")), lost
        # The tests' check of a promotion record agrees.
        record = SimpleNamespace(recall_delta=delta, recall_flips=flips, champion=champ)
        if refused:
            with pytest.raises(AssertionError, match="lost 5 held-out windows"):
                assert_no_real_recall_loss(record, ["http_bruteforce"])
        else:
            assert_no_real_recall_loss(record, ["benign", "http_bruteforce"])
        assert loss_is_real(lost, 0) is refused
        assert gate(champ, chall)[:2] == (False, "recall_drop:http_bruteforce")  # no evidence given
    assert not loss_is_real(0, 0) and not loss_is_real(6, 4) and loss_is_real(9, 1)


def _preds(rng: np.random.Generator, truth: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """`truth` with the windows in `wrong` moved to another class."""
    classes = np.array(sorted(set(truth.tolist())), dtype=object)
    out = truth.copy()
    for i in np.flatnonzero(wrong):
        out[i] = rng.choice(classes[classes != truth[i]])
    return out


def test_a_gain_inside_the_noise_is_refused_and_a_real_one_promoted() -> None:
    """400 held-out windows, the champion wrong on 40. A challenger that fixes 3 of them and
    breaks 1 other scores higher, but the paired interval of its gain reaches 0: refused as
    not_significant. One that fixes 30 and breaks 2 is promoted."""
    rng = np.random.default_rng(0)
    truth = np.array(["benign"] * 200 + ["syn_scan"] * 100 + ["ssh_bruteforce"] * 100, dtype=object)
    wrong = np.zeros(len(truth), bool)
    wrong[rng.choice(len(truth), 40, replace=False)] = True
    champion = _preds(rng, truth, wrong)
    fixed, right = np.flatnonzero(wrong), np.flatnonzero(~wrong)

    def challenger(n_fix: int, n_break: int) -> np.ndarray:
        out = champion.copy()
        out[fixed[:n_fix]] = truth[fixed[:n_fix]]
        broken = np.zeros(len(truth), bool)
        broken[right[:n_break]] = True
        out[broken] = _preds(rng, truth, broken)[broken]
        return out

    def figures(pred: np.ndarray) -> Figures:
        recall = {c: float((pred[truth == c] == c).mean()) for c in sorted(set(truth))}
        f1 = {}
        for c in recall:
            tp = float(((pred == c) & (truth == c)).sum())
            f1[c] = 2 * tp / ((pred == c).sum() + (truth == c).sum())
        return Figures("v", sorted(recall), len(truth), float(np.mean(list(f1.values()))), recall, f1,
                       {c: int((truth == c).sum()) for c in recall})

    small, big = challenger(3, 1), challenger(30, 2)
    noise = paired_gain(truth, champion, small)
    assert noise["gain"] > 0 and noise["low"] <= 0 < noise["high"], noise
    assert gate(figures(champion), figures(small), max_recall_drop=0.05, significance=noise)[:2] == \
        (False, "not_significant")
    real = paired_gain(truth, champion, big)
    assert real["low"] > 0, real
    assert gate(figures(champion), figures(big), max_recall_drop=0.05, significance=real)[:2] == (True, "promoted")
    # The interval is of the paired difference: a model against itself has none.
    assert paired_gain(truth, champion, champion) == {**noise, "gain": 0.0, "low": 0.0, "high": 0.0}


def test_holdout_is_stable_per_window_and_near_the_fraction() -> None:
    ids = [f"w{i}" for i in range(4000)]
    h = holdout_mask(ids, 0.2)
    assert 0.17 < h.mean() < 0.23
    assert np.array_equal(h[:100], holdout_mask(ids[:100], 0.2))
    assert not (h & holdout_mask(ids, 0.2, salt="synth-val")).all()


def test_the_reference_validates_on_each_class_latest_windows_and_labels_by_hash() -> None:
    """The shipped training set validates a challenger as the recipe does (each class's latest
    windows); windows labelled since, and every window of a site baseline, by a stable hash."""
    from llm_agents.retrain import _Real, validation_split

    n_ref, n_lab = 300, 200
    ids = np.array([f"r{i}" for i in range(n_ref)] + [f"l{i}" for i in range(n_lab)])
    labels = np.array((["benign", "syn_scan", "benign"] * n_ref)[:n_ref] + ["fin_scan"] * n_lab)
    side = np.ones(len(ids), dtype=bool)
    side[::7] = False                                  # the gate's holdout: never validates
    real = _Real(None, None, None, labels, ids, ~side, side)  # type: ignore[arg-type]
    val = validation_split(real, side, set(ids[:n_ref]), 0.2)
    assert not (val & ~side).any()
    for c in ("benign", "syn_scan"):
        mine = np.flatnonzero(side[:n_ref] & (labels[:n_ref] == c))
        n = int(round(len(mine) * 0.2))
        assert val[mine[-n:]].all() and not val[mine[:-n]].any()
    hashed = side & holdout_mask(ids, 0.2, salt="val")
    assert np.array_equal(val[n_ref:], hashed[n_ref:])
    assert 0.12 < val[n_ref:].mean() < 0.28
    # No reference ids (a site baseline): the hash everywhere.
    assert np.array_equal(side & validation_split(real, side, set(), 0.2), hashed)


@pytest.fixture(scope="module")
def lab():
    """SYNTHETIC flows: a champion trained without slow_http_dos, the windows it never saw."""
    from inference.datasets.synthetic import synthetic_flows
    from inference.train import train_windows

    flows = synthetic_flows(hosts_per_class=5, flows_per_host=48, seed=21)
    ref = reference_frame(flows, classes=KNOWN, source="synthetic")
    x, m, y, _ = window_tensors(ref, 8)
    ids = ref.drop_duplicates("window_id")["window_id"].to_numpy()
    tr = ~holdout_mask(ids, FAST.holdout_fraction)
    import tempfile
    champ = train_windows(x[tr], m[tr], list(y[tr]), class_names=KNOWN, epochs=5, progress=False,
                          out_dir=tempfile.mkdtemp(prefix="champ-"))
    novel = windows_frame(flows[flows["label"] == "slow_http_dos"]).assign(label_source="llm:oracle",
                                                                          confidence=0.95)
    # As the agent stores them: the holdout side's labels were confirmed by a person (the
    # agent parks them as `verify`), the rest are the LLM's.
    side = holdout_mask(novel["window_id"].tolist(), FAST.holdout_fraction)
    novel.loc[side, "label_source"] = "human:alice"
    # Fewer windows of the new class than of the others (24 training windows each): as when
    # a class has just been discovered, and the reason synthesis runs for it alone.
    novel = novel[novel["window_id"].isin(novel["window_id"].unique()[:18])]
    return ref, novel, champ


def _retrainer(tmp_path, ref, champ, published, **kw) -> Retrainer:
    from inference.registry import Registry

    store = DatasetStore(tmp_path / "datasets")
    store.append("reference", ref)
    return Retrainer(store, Registry(tmp_path / "registry"), AuditLog(tmp_path / "audit.sqlite"), fallback=champ,
                     publish=lambda b, why: published.append((b.version, why)), config=kw.pop("config", FAST), **kw)


def test_new_class_is_learned_promoted_released_and_audited(tmp_path, lab) -> None:
    ref, novel, champ = lab
    published: list = []
    rt = _retrainer(tmp_path, ref, champ, published)
    rt.store.append("labelled", novel)
    d = rt.run("labels", {"new_labels": 40})
    assert d.promoted and d.reason == "promoted", d.to_dict()
    assert d.challenger.classes == [*KNOWN, "slow_http_dos"], "known class indices must not move"
    assert d.champion.recall["slow_http_dos"] == 0.0 and d.challenger.recall["slow_http_dos"] >= 0.9
    assert d.challenger.macro_f1 > d.champion.macro_f1
    assert_no_real_recall_loss(d)
    assert rt.registry.current_version() == d.challenger_version and published[0][0] == d.challenger_version
    # Synthesis ran for the new class only (the others have enough real windows) and says where rows came from.
    assert set(d.synthetic) == {"slow_http_dos"}
    synth = rt.store.frame(("synthetic",))
    if len(synth):
        assert set(synth["provenance"]) == {"stat:kde"} and check_flows(synth).ok.all()
        assert set(synth["label_source"]) == {"synthesizer"}
    assert d.train_provenance["real"] > 0
    # A challenger that adds a class validates by hash (Retrainer._validation).
    real = rt._real(champ)
    hashed = real.side & np.isin(real.labels, d.challenger.classes) & holdout_mask(real.ids, rt.cfg.val_fraction, salt="val")
    assert d.train_provenance["real_validation"] == int(hashed.sum())
    actions = [e.action for e in rt.audit.events()]
    assert actions == ["champion_registered", "retrain_started", "synthesis", "release_published", "promoted"]
    promoted = rt.audit.events(action="promoted")[0]
    assert promoted.figures["challenger"]["macro_f1"] == pytest.approx(d.challenger.macro_f1)
    # Nothing new: the next challenger cannot beat the one just promoted.
    d2 = rt.run("request")
    assert not d2.promoted and (d2.reason == "no_gain" or d2.reason.startswith("recall_drop"))
    assert rt.registry.current_version() == d.challenger_version and len(published) == 1


def test_llm_labels_never_judge_a_challenger(tmp_path, lab) -> None:
    """Only truth (a person, a dataset, the site baseline) sits in the gate's holdout. A class
    that only an LLM has named is not promoted until a person confirms some of it."""
    ref, novel, champ = lab
    rt = _retrainer(tmp_path, ref, champ, [], config=RetrainConfig(epochs=5, synth_below=0, members=1))
    llm_only = novel.assign(label_source="llm:oracle")
    rt.store.append("labelled", llm_only)
    real = rt._real(rt.champion())
    llm_ids = set(llm_only["window_id"])
    hashed = llm_ids & set(real.ids[holdout_mask(real.ids, FAST.holdout_fraction)])
    assert hashed and not llm_ids & set(real.ids[real.hold])        # never truth
    assert not hashed & set(real.ids[real.side])                      # nor trained on: it never changes side
    assert set(real.ids[real.hold]) <= set(ref["window_id"])
    d = rt.run("labels")
    assert not d.promoted and d.reason == "unverified_class:slow_http_dos" and not d.challenger_version
    assert rt.audit.events(action="promotion_rejected")[0].detail == d.reason


def test_poisoned_labels_never_replace_the_champion(tmp_path, lab) -> None:
    """Labels that slipped past acceptance (they cannot, but say they did) meet the gate."""
    ref, _, champ = lab
    published: list = []
    rt = _retrainer(tmp_path, ref, champ, published, config=RetrainConfig(epochs=5, synth_below=0, members=1))
    rt.champion()
    benign = ref[ref["label"] == "benign"].copy()
    poisoned = benign.assign(window_id=benign["window_id"] + "x", label="syn_scan", label_source="llm:liar")
    rt.store.append("labelled", poisoned)
    d = rt.run("request")
    assert not d.promoted and (d.reason == "no_gain" or d.reason.startswith("recall_drop")), d.to_dict()
    assert rt.registry.current_version() == champ.version and published == []
    assert rt.audit.events(action="promotion_rejected")[0].detail == d.reason


def test_a_failed_release_keeps_the_champion_current(tmp_path, lab) -> None:
    ref, novel, champ = lab

    def broken(bundle, why):
        raise ConnectionError("broker down")

    rt = _retrainer(tmp_path, ref, champ, [], config=RetrainConfig(epochs=5, synth_below=0, members=1))
    rt.publish = broken
    rt.store.append("labelled", novel)
    d = rt.run("request")
    assert not d.promoted and d.reason == "release_failed"
    assert rt.registry.current_version() == champ.version
    assert d.challenger_version in rt.registry.versions()  # kept for a later manual release
    assert "broker down" in rt.audit.events(action="release_failed")[0].detail


def test_an_empty_store_is_reported_not_trained(tmp_path, lab) -> None:
    _, _, champ = lab
    from inference.registry import Registry

    rt = Retrainer(DatasetStore(tmp_path / "d"), Registry(tmp_path / "r"), AuditLog(tmp_path / "a.sqlite"),
                   fallback=champ, config=FAST)
    d = rt.run("request")
    assert not d.promoted and d.reason == "no_data" and d.champion_version == champ.version


def test_a_site_baseline_needs_no_lab_gain_only_no_loss() -> None:
    """A baseline's gain is on the site's traffic: on the lab holdout the challenger need only
    be no worse. A class losing recall, or a change whose interval lies wholly below 0, is
    still refused."""
    champ = fig({"benign": 0.99, "syn_scan": 0.95}, 0.90)
    same = fig({"benign": 0.99, "syn_scan": 0.95}, 0.90)
    assert gate(champ, same, need_gain=False)[:2] == (True, "promoted")
    assert gate(champ, same)[:2] == (False, "no_gain")
    assert gate(champ, fig({"benign": 0.97, "syn_scan": 0.95}, 0.89), need_gain=False)[:2] == \
        (False, "recall_drop:benign")
    worse = {"gain": -0.01, "low": -0.02, "high": -0.001}
    assert gate(champ, fig({"benign": 0.99, "syn_scan": 0.945}, 0.89), significance=worse,
                need_gain=False)[:2] == (False, "significantly_worse")
    noise = {"gain": -0.001, "low": -0.01, "high": 0.008}
    assert gate(champ, same, significance=noise, need_gain=False)[:2] == (True, "promoted")


def test_a_site_baseline_validates_by_hash_and_other_retrains_on_the_reference_tail(tmp_path, lab) -> None:
    from llm_agents.retrain import SITE_TRIGGER

    ref, novel, champ = lab
    rt = _retrainer(tmp_path, ref, champ, [])
    rt.store.append("labelled", novel)
    real = rt._real(rt.champion())
    hashed = real.side & holdout_mask(real.ids, rt.cfg.val_fraction, salt="val")
    assert np.array_equal(rt._validation(real, real.side, SITE_TRIGGER), hashed)
    # A challenger that adds a class (the novel-attack loop) validates by hash too.
    assert np.array_equal(rt._validation(real, real.side, "labels", new_class=True), hashed)
    val = rt._validation(real, real.side, "labels")
    mine = np.isin(real.ids, novel["window_id"].unique())
    assert np.array_equal(val[mine], hashed[mine]) and not np.array_equal(val[~mine], hashed[~mine])
    for c in set(real.labels[~mine]):                  # the reference: each class's latest
        idx = np.flatnonzero(real.side & ~mine & (real.labels == c))
        assert val[idx].tolist() == sorted(val[idx].tolist()) and val[idx].any()


def test_recipe_variants_train_but_never_twin_a_held_out_window(tmp_path, lab) -> None:
    """The store keeps re-rendered copies of each attack run (as the shipped recipe trains);
    a retrain leaves out every copy of a flow that sits, in the same view, in a window it
    holds out, and trains on the rest."""
    from llm_agents.retrain import _without_twins
    from llm_agents.store import VARIATION, variant_frame, variant_origins

    ref, _, champ = lab
    from inference.datasets.synthetic import synthetic_flows

    flows = synthetic_flows(hosts_per_class=5, flows_per_host=48, seed=21)
    var = variant_frame(flows, copies=2, seed=0, classes=KNOWN, views=["src"])
    assert len(var) and set(var["provenance"]) == {VARIATION} and set(var["label_source"]) == {VARIATION}
    assert "benign" not in set(var["label"])                       # attack runs only
    assert variant_origins(var).isin(set(flows["flow_id"].astype(str))).all()
    rt = _retrainer(tmp_path, ref, champ, [], config=RetrainConfig(epochs=3, synth_below=0, members=1))
    rt.store.append("synthetic", var)
    real = rt._real(rt.champion())
    fit = real.side & ~rt._validation(real, real.side, "request")
    kept, n_out = _without_twins(rt.store.frame(("synthetic",)), real, fit)
    out = real.frame[~real.frame["window_id"].isin(set(real.ids[fit]))]
    held = set(out["flow_id"].astype(str))
    assert n_out > 0 and len(kept)
    assert not variant_origins(kept).isin(held).any()
    assert kept["window_id"].nunique() + n_out == var["window_id"].nunique()
    d = rt.run("request")
    assert d.train_provenance[VARIATION] == kept["window_id"].nunique()
    assert d.train_provenance["variation_left_out"] == n_out


def test_a_site_baseline_is_promoted_only_when_the_site_comes_out_better(tmp_path, lab, monkeypatch) -> None:
    """On the site's reference part the challenger must alert on no more benign windows and
    alert on or defer fewer; the rest of the reference is the usual open-world gate (wide
    open here, so only the site decides). The site's figures are set per case."""
    import evaluation.gate as g
    from evaluation.gate import Figures as RefFigures, RefCapture, Tolerance

    ref, _, champ = lab
    benign = ref[ref["label"] == "benign"].drop_duplicates("flow_id")
    site = [RefCapture("ndpi:x", benign, "benign"), RefCapture("site:mine", benign, "benign")]
    cfg = RetrainConfig(epochs=3, synth_below=0, members=1, open_world=Tolerance(1.0, 1.0, 1.0))
    change = {"false_alerts": 0.0, "deferrals": 0.0}

    def figures(bundle, reference):
        if not all(c.name.startswith("site:") for c in reference):
            # Held-out conditions: the baseline's challenger defers 7 points more of their
            # known windows and names none more wrong (as its hash-validated threshold does).
            chall = bundle.version != champ.version
            return RefFigures(bundle.version, 100, heldout_known=1000, heldout_hits=0.90 if chall else 0.97,
                              heldout_wrong=0.01)
        if bundle.version == champ.version:
            return RefFigures(bundle.version, 100, 0.02, 0.05)
        return RefFigures(bundle.version, 100, 0.02 + change["false_alerts"], 0.05 + change["deferrals"])

    monkeypatch.setattr(g, "reference_figures", figures)
    cases = [({"false_alerts": 0.0, "deferrals": 0.0}, "no_site_gain"),
             ({"false_alerts": 0.01, "deferrals": -0.03}, "no_site_gain"),    # fewer deferred, more alerts
             ({"false_alerts": -0.01, "deferrals": 0.0}, "promoted"),
             ({"false_alerts": 0.0, "deferrals": -0.01}, "promoted")]
    for i, (c, reason) in enumerate(cases):
        change.update(c)
        published: list = []
        rt = _retrainer(tmp_path / str(i), ref, champ, published, config=cfg, reference=lambda: site)
        d = rt.run("baseline")          # the same data again: no lab gain is asked of it
        assert d.reason == reason and d.promoted == (reason == "promoted") == bool(published), (c, d.to_dict())
        assert d.open_world["site"]["captures"] == 1
        assert d.open_world["tolerance"]["heldout_hits"] is None and d.open_world["tolerance"]["heldout_wrong"]
    rt = _retrainer(tmp_path / "none", ref, champ, [], config=cfg, reference=lambda: site[:1])
    assert rt.run("baseline").reason == "no_site_reference"


def test_a_store_seeded_before_the_copies_gets_them_once(tmp_path, lab) -> None:
    """An agent upgraded onto an old store (reference, synthesizer output, no re-rendered
    runs) seeds the copies on its next start, once; a new store gets both at once."""
    from inference.datasets.synthetic import synthetic_flows
    from llm_agents.cli import seed_reference
    from llm_agents.store import VARIATION

    ref, _, champ = lab
    flows = synthetic_flows(hosts_per_class=5, flows_per_host=48, seed=21)
    path = tmp_path / "flows.parquet"
    flows.to_parquet(path)
    old = DatasetStore(tmp_path / "old")
    old.append("reference", ref)
    old.append("synthetic", ref[ref["label"] == "syn_scan"].assign(provenance="stat:kde", label_source="synthesizer"))
    said = seed_reference(old, champ, path)
    assert "re-rendered" in said and "reference windows" not in said, said
    n = old.frame(("synthetic",))["provenance"].eq(VARIATION).sum()
    assert n > 0
    assert seed_reference(old, champ, path) == "reference data already in the store"
    assert old.frame(("synthetic",))["provenance"].eq(VARIATION).sum() == n
    new = DatasetStore(tmp_path / "new")
    said = seed_reference(new, champ, path)
    assert "reference windows" in said and "re-rendered" in said, said
