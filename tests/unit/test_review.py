"""The review queue and a person's verdicts: stored once, labelled by who, queued for `labels`."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from contracts.records import Label, decode
from llm_agents.agent import AgentState
from llm_agents.cli import review as review_cmd
from llm_agents.labeling.review import Parked, ReviewError, decide
from tests.support.scripted_windows import synthetic_windows


@pytest.fixture
def state(tmp_path) -> AgentState:
    return AgentState.open(tmp_path)


def _park(state: AgentState, n: int = 3, seed: int = 1):
    batch = synthetic_windows({"dos": n}, seed=seed)
    items = [Parked(w, "low_confidence", proposed="dos", label="dos", source="llm:m", confidence=0.5)
             for w in batch.windows]
    return batch, state.review.park(items)


def test_park_keeps_one_item_per_window_without_ground_truth(state) -> None:
    batch, n = _park(state)
    assert n == 3
    _, again = _park(state)  # a redelivery parks nothing twice
    assert again == 0 and state.review.depth() == 3
    item = state.review.pending()[0]
    assert item.window.window_id == batch.windows[0].window_id
    assert all(f.label is None for f in item.window.flows), "ground truth must not be stored"
    assert item.reason == "low_confidence" and item.proposed == "dos" and item.confidence == 0.5
    assert state.review.counts() == {"pending": 3, "pending:low_confidence": 3}


def test_newest_gives_the_last_parked_pending_items_first(state) -> None:
    batch, _ = _park(state, n=4)
    ids = [w.window_id for w in batch.windows[:4]]
    first = state.review.pending(1)[0]
    state.review.resolve(state.review.pending(10)[-1].id, "dos", "human:t", "accepted")
    assert [i.window_id for i in state.review.newest(2)] == [ids[2], ids[1]]
    assert state.review.newest(10)[-1].window_id == first.window_id == ids[0]


def test_accept_and_correct_store_the_window_once_and_queue_a_label(state) -> None:
    _park(state)
    first, second, third = state.review.pending()
    item, label = decide(state.review, state.store, state.ledger, first.id, None, "alice", known=["dos"])
    assert label == "dos"
    _, label2 = decide(state.review, state.store, state.ledger, second.id, "novel:Slow_Read", "bob")
    assert label2 == "slow_read"
    df = state.store.frame(("labelled",)).drop_duplicates("window_id").set_index("window_id")
    assert df.loc[first.window_id, "label_source"] == "human:alice" and df.loc[first.window_id, "label"] == "dos"
    assert df.loc[second.window_id, "label"] == "slow_read"
    assert state.review.depth() == 1 and state.review.get(first.id).status == "accepted"
    assert state.review.get(second.id).decided_by == "human:bob"
    labels = [decode(Label, v) for _, _, v in state.ledger.pending()]
    assert [(r.window_id, r.label, r.source, r.accepted) for r in labels] == [
        (first.window_id, "dos", "human:alice", True), (second.window_id, "slow_read", "human:bob", True)]
    assert labels[1].novel and not labels[0].novel
    ev = state.audit.events(action="review_correct")
    assert len(ev) == 1 and ev[0].actor == "human:bob" and ev[0].figures["proposed"] == "dos"
    with pytest.raises(ReviewError, match="already decided"):
        decide(state.review, state.store, state.ledger, first.id, None, "carol")
    with pytest.raises(ReviewError, match="not a class name"):
        decide(state.review, state.store, state.ledger, third.id, "Drop Table;", "carol")
    with pytest.raises(ReviewError, match="no review item"):
        decide(state.review, state.store, state.ledger, 999, None, "carol")


def test_an_item_without_a_proposal_must_be_corrected(state) -> None:
    w = synthetic_windows({"benign": 1}, seed=4).windows[0]
    state.review.park([Parked(w, "offline")])
    item = state.review.pending()[0]
    with pytest.raises(ReviewError, match="no proposed label"):
        decide(state.review, state.store, state.ledger, item.id, None, "alice")
    decide(state.review, state.store, state.ledger, item.id, "benign", "alice")
    assert state.ledger.decided([w.window_id]) == {w.window_id: "accepted"}


def test_review_cli_lists_accepts_and_corrects(tmp_path, state) -> None:
    _park(state)
    env = {"EDGELOOP_DATA_DIR": str(tmp_path)}
    r = CliRunner().invoke(review_cmd, ["list", "--json"], env=env)
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [x["reason"] for x in rows] == ["low_confidence"] * 3
    r = CliRunner().invoke(review_cmd, ["accept", str(rows[0]["id"]), "--who", "alice"], env=env)
    assert r.exit_code == 0 and "human:alice" in r.output, r.output
    r = CliRunner().invoke(review_cmd, ["correct", str(rows[1]["id"]), "syn_flood", "--who", "bob"], env=env)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(review_cmd, ["accept", str(rows[0]["id"])], env=env)
    assert r.exit_code != 0 and "already decided" in r.output
    r = CliRunner().invoke(review_cmd, [], env=env)
    assert r.exit_code == 0 and "1 pending" in r.output
    assert state.store.counts()["labelled"] == {"dos": 1, "syn_flood": 1}


def test_traffic_strings_are_shown_literally_never_as_markup_or_terminal_codes(tmp_path, state) -> None:
    w = synthetic_windows({"dos": 1}, seed=9).windows[0]
    hostile = "[red]10.0.0.1[/red]\x1b[2J\x1b]0;owned\x07"
    state.review.park([Parked(w.model_copy(update={"key": hostile}), "low_confidence", proposed="dos", label="dos",
                              source="llm:m", confidence=0.5)])
    r = CliRunner().invoke(review_cmd, ["list"], env={"EDGELOOP_DATA_DIR": str(tmp_path), "COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "[red]10.0.0.1[/red]" in r.output  # literal, not a red 10.0.0.1
    assert "\x1b" not in r.output and "\x07" not in r.output and "owned" not in r.output
