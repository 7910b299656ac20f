"""`make test` runs the `serial` tests alone (scripts/run-tests.sh): every test of tests/e2e,
tests/reliability and tests/security and the local LLM's must be marked, and nothing else,
or a timing bound would be measured beside a busy process (or the suite would lose its
parallel part)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _collected(*args: str) -> set[str]:
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                       cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return {ln for ln in r.stdout.splitlines() if "::" in ln}


def test_the_serial_part_is_exactly_the_timing_bound_tests():
    serial = _collected("-m", "serial")
    every = _collected()
    bound = {t for t in every if t.startswith(("tests/e2e/", "tests/reliability/", "tests/security/",
                                                "tests/integration/test_local_llm.py"))}
    assert bound and serial == bound, (sorted(serial - bound)[:5], sorted(bound - serial)[:5])


def test_every_module_named_for_the_split_exists():
    """A renamed module would silently leave the serial part or the "cpu" group."""
    from tests.conftest import CPU_BOUND, SERIAL_MODULES

    stems = {p.stem for p in (REPO / "tests").rglob("test_*.py")}
    assert (SERIAL_MODULES | CPU_BOUND) - stems == set()


def test_the_cpu_group_runs_on_one_worker():
    """`make test` keeps the torch-training modules (tests/conftest.py CPU_BOUND) on one
    xdist worker. pytest 9.2.0 broke pytest-xdist's --dist loadgroup without an error (the
    tests were simply spread), so this runs a few quick tests of two such modules as the
    suite does and asks which worker ran each."""
    picked = ["tests/unit/test_evaluate.py::test_load_labelled_flows_from_csv_and_parquet",
              "tests/unit/test_evaluate.py::test_label_flows_by_flow_id_or_by_source_and_time_span",
              "tests/unit/test_retrain.py::test_a_recall_drop_is_refused_only_when_its_windows_are_evidence",
              "tests/unit/test_retrain.py::test_holdout_is_stable_per_window_and_near_the_fraction"]
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p",
                        "no:cacheprovider", *picked], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ran = {test: worker for worker, test in re.findall(r"\[(gw\d+)\] \[[ \d]+%\] PASSED (\S+)", r.stdout)}
    assert len(ran) == len(picked), r.stdout[-2000:]
    assert len(set(ran.values())) == 1, f"the cpu group was spread over workers: {ran}"
