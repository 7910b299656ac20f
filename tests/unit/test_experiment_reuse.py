"""`edgeloop experiment open-world` reuses a seed's bundle only when it was trained with the
settings asked for: a bundle made without a setting counts at that setting's default."""
from __future__ import annotations

from dataclasses import replace

import pytest

from contracts.errors import ModelError
from evaluation.experiment_openworld import _same_recipe
from inference.train import TrainConfig

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from inference.datasets.synthetic import synthetic_flows
    from inference.train import train_bundle

    return train_bundle(synthetic_flows(hosts_per_class=2, flows_per_host=24, seed=1), epochs=1, progress=False,
                        out_dir=tmp_path_factory.mktemp("b"), config=TrainConfig(members=1))


def test_same_settings_reuse_and_other_settings_are_named(bundle, tmp_path):
    cfg = TrainConfig(members=1)
    _same_recipe(bundle, cfg, tmp_path)
    _same_recipe(bundle, replace(cfg, epochs=3), tmp_path)          # the command sets epochs
    with pytest.raises(ModelError, match=r"member_gate None there, 0.005 now.*another --out"):
        _same_recipe(bundle, replace(cfg, member_gate=0.005), tmp_path)
    with pytest.raises(ModelError, match="run_variants 0 there, 3 now"):
        _same_recipe(bundle, replace(cfg, run_variants=3), tmp_path)


def test_a_setting_newer_than_the_bundle_counts_at_its_default(bundle, tmp_path):
    cfg = TrainConfig(members=1)
    del bundle.meta.training["config"]["member_gate"]               # made before the gate existed
    _same_recipe(bundle, cfg, tmp_path)
    with pytest.raises(ModelError, match="member_gate"):
        _same_recipe(bundle, replace(cfg, member_gate=0.01), tmp_path)


def test_train_member_gate_option_reaches_the_bundle(tmp_path):
    from click.testing import CliRunner

    from edgeloop_app.cli import main
    from inference.bundle import Bundle
    from inference.datasets.synthetic import synthetic_flows

    f = tmp_path / "flows.parquet"
    synthetic_flows(hosts_per_class=3, flows_per_host=48, seed=3).to_parquet(f)
    r = CliRunner().invoke(main, ["train", "--train", str(f), "--epochs", "1", "--no-eval", "--variants", "0",
                                  "--member-gate", "0.05", "--out", str(tmp_path / "b"), "--quiet"])
    assert r.exit_code == 0, r.output
    b = Bundle.load(tmp_path / "b")
    assert b.meta.training["config"]["member_gate"] == 0.05 and b.meta.thresholds.member_benign is not None


def test_set_changes_one_recipe_field_and_names_a_wrong_one():
    import click

    from evaluation.experiment_openworld import with_settings

    cfg = with_settings(TrainConfig(), ["benign_link_copies=1", "outlier_rate=[2, 20]", "confidence=1"])
    assert (cfg.benign_link_copies, cfg.outlier_rate, cfg.confidence) == (1, (2, 20), 1.0)
    assert with_settings(TrainConfig(), []) == TrainConfig()
    for bad, why in (("nope=1", "FIELD one of"), ("members=three", "members holds int, not str"),
                     ("members", "FIELD=VALUE")):
        with pytest.raises(click.BadParameter, match=why):
            with_settings(TrainConfig(), [bad])


def test_benign_link_copies_reach_training_without_attack_copies(tmp_path):
    from inference.datasets.synthetic import synthetic_flows
    from inference.train import train_bundle

    flows = synthetic_flows(hosts_per_class=2, flows_per_host=24, seed=1)
    b = train_bundle(flows, epochs=1, progress=False, out_dir=tmp_path,
                     config=TrainConfig(members=1, run_variants=0, benign_link_copies=1))
    benign = int((flows["label"] == "benign").sum())
    # every benign flow but those of the validation windows, copied once
    assert 0 < b.meta.training["source"]["variant_flows"] <= benign
