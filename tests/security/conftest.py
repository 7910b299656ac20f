"""The escape suite's verdicts, printed as a table at the end of the run (with or without -s)."""
from __future__ import annotations

import pytest

VERDICTS = pytest.StashKey[list]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[VERDICTS] = []


@pytest.fixture(scope="session")
def verdicts(pytestconfig: pytest.Config) -> list:
    return pytestconfig.stash[VERDICTS]


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    rows = config.stash.get(VERDICTS, [])
    if not rows:
        return
    tr = terminalreporter
    tr.section("sandbox escape suite")
    width = max(len(r[0]) for r in rows)
    for name, mode, verdict, detail in sorted(rows, key=lambda r: (r[0], r[1])):
        tr.write_line(f"{name:<{width}}  {mode:<6}  {verdict:<9}  {detail}")
    escaped = sum(r[2] != "contained" for r in rows)
    tr.write_line(f"{len(rows)} attempts, {len(rows) - escaped} contained, {escaped} escaped")
