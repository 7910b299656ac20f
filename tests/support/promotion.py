"""What a promoted challenger may have lost, checked from its decision record.

The promotion gate (evaluation.holdout_gate) lets a class lose more than 1 point of recall
on the held-out windows only when the windows that flipped do not show the loss is real.
A test of a promotion asks the same of the record: the flips must add up to the recorded
recall change, and a drop beyond the point must be no evidence by the gate's own sign test
(`loss_is_real`, pinned on known counts in tests/unit/test_retrain.py):

    >>> assert_no_real_recall_loss(decision)
"""
from __future__ import annotations

from typing import Any, Iterable

from evaluation.holdout_gate import loss_is_real
from llm_agents.retrain import RetrainConfig

MAX_DROP = RetrainConfig.max_recall_drop   # the tests' retrainers keep the default


def assert_no_real_recall_loss(d: Any, classes: Iterable[str] | None = None, note: str = "") -> None:
    """Every class of `classes` (default: every class of the held-out windows) kept its
    recall within 1 point, or lost it on so few of its windows (against those it gained)
    that a coin would do as much (one-sided sign test, p >= 5%). The flips must also add
    up to the recorded recall change, so they were counted on the same windows."""
    for c in d.champion.support if classes is None else classes:
        if c not in d.recall_delta or c not in d.champion.support:
            continue
        delta = d.recall_delta[c]
        lost, gained = d.recall_flips[c]
        n = d.champion.support[c]
        assert abs((gained - lost) / n - delta) < 1e-6, (note, c, lost, gained, n, delta)
        if delta < -MAX_DROP - 1e-12:
            assert not loss_is_real(lost, gained), (f"{note}: {c} lost {lost} held-out windows against "
                                                    f"{gained} gained ({100 * delta:+.1f} pt)")
