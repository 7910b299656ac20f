"""Same answers: the edge engine on the shipped lab captures gives the windows, features and
verdicts of the reference (scripts/engine_reference.py: first written before the columnar
rebuild at commit 4e695a1, written again for the default bundles 54c10b09, 770d01ca, 7ef2386b and a546cb0c and for
the destination-view rule, with the same windows): every window id, its flows, view and close reason, and its verdict exactly; its
features and confidence to float rounding; and every uncertain message and alert it sends,
exactly (written by the engine before its per-window path went onto columns)."""
from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("engine_reference", REPO / "scripts" / "engine_reference.py")
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)


@pytest.fixture(scope="module")
def reference() -> dict:
    with gzip.open(REPO / "tests" / "data" / "engine_reference.json.gz", "rt") as fh:
        return json.load(fh)


@pytest.mark.parametrize("capture", ref.CAPTURES)
def test_the_engine_gives_the_reference_answers(reference, capture):
    got = ref.answers(capture)
    problems = ref.differences(reference[capture], got)
    assert not problems, f"{len(problems)} differences, first: {problems[:5]}"
    assert len(got) > 1000


@pytest.mark.parametrize("capture", ref.CAPTURES)
def test_the_engine_sends_the_reference_uncertain_messages_and_alerts(reference, capture):
    """Every uncertain message (window id, reason) and alert (id, key, view, attack, counts,
    listed addresses and ports, times), in the order the engine sent them."""
    got = ref.outputs(capture)
    problems = ref.output_differences(reference[f"{capture}:outputs"], got)
    assert not problems, f"{len(problems)} differences, first: {problems[:5]}"
    assert got["uncertain"] and got["alerts"]
