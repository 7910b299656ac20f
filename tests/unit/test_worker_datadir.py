"""A worker keeps faust's directory under its data directory: started from any working
directory it writes nothing there (each test's worker used to leave a `<group>-data`
directory in the repository)."""
from __future__ import annotations

import os

from streams.settings import Settings
from streams.worker import faust_app


def test_faust_directory_is_under_the_data_dir_not_the_working_dir(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    data = tmp_path / "var {braces}"
    app = faust_app(Settings(data_dir=data, group_id="g-x"), "127.0.0.1:9")
    assert app.conf.datadir == data / "faust" / "g-x"
    app.conf.datadir.mkdir()  # as faust does at start: only its last level
    assert os.listdir(cwd) == []
