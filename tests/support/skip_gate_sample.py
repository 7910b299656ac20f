"""Run by tests/unit/test_skip_gate.py in its own pytest: one test that skips with the reason
in EDGELOOP_SAMPLE_SKIP, one that passes. Not collected by the suite (no test_ prefix)."""
import os

import pytest


def test_skips_with_the_given_reason():
    pytest.skip(os.environ["EDGELOOP_SAMPLE_SKIP"])


def test_passes():
    assert True
