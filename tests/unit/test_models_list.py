"""`edgeloop models list`: an empty registry says what a detector serves instead."""
from __future__ import annotations

from click.testing import CliRunner

from edgeloop_app.model_cli import models_list
from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
from inference.registry import Registry


def test_an_empty_registry_names_the_shipped_bundle_and_a_full_one_lists_it(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(tmp_path))
    shipped = Bundle.load(DEFAULT_BUNDLE_DIR).version
    run = CliRunner().invoke(models_list, [], env={"COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    assert "until `edgeloop release`" in run.output and shipped in run.output
    Registry(tmp_path / "registry").add(DEFAULT_BUNDLE_DIR)
    run = CliRunner().invoke(models_list, [], env={"COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    assert "until `edgeloop release`" not in run.output and shipped in run.output
