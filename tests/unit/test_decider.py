"""Deciding batches without Kafka: new classes, redelivery, offline, ground truth kept out."""
from __future__ import annotations

import openai
import pandas as pd
import pytest

from llm_agents.client import LLMClient
from llm_agents.labeling.decider import AgentState, Decider, strip_truth
from llm_agents.store import window_rows
from tests.support.scripted_server import serve
from tests.support.scripted_windows import DETECTOR_CLASSES, synthetic_windows


@pytest.fixture
def state(tmp_path) -> AgentState:
    st = AgentState.open(tmp_path)
    ref = synthetic_windows({c: 40 for c in DETECTOR_CLASSES}, seed=11, id_prefix="r")
    st.store.append("reference", pd.concat([window_rows(w, y, label_source="dataset:t", confidence=1.0)
                                            for w, y in zip(ref.windows, ref.labels)], ignore_index=True))
    return st


def _client(llm) -> LLMClient:
    return LLMClient(openai.OpenAI(base_url=llm.base_url, api_key="x", max_retries=0), "m")


def _decider(state, llm) -> Decider:
    """These tests are about acceptance: every accepted label is stored (no verify share)."""
    return Decider(state, _client(llm), verify_fraction=0.0)


def test_a_new_class_keeps_being_judged_by_its_cluster_until_the_detector_learns_it(state) -> None:
    first = synthetic_windows({"slow_http_dos": 8, "benign": 4}, seed=1, id_prefix="a")
    later = synthetic_windows({"slow_http_dos": 2, "dos": 4}, seed=2, id_prefix="b")
    truth = {**first.truth, **later.truth}
    with serve("oracle", truth=truth) as llm:
        d = _decider(state, llm)
        out1 = d.decide([strip_truth(w) for w in first.windows], {}, 4)
        out2 = d.decide([strip_truth(w) for w in later.windows], {}, 4)
        prompts = [r["messages"][1]["content"] for r in llm.requests]
    assert set(out1.finished.values()) == {"accepted"}
    # Two windows alone are too few for the cluster rule; the eight stored ones count as members.
    assert set(out2.finished.values()) == {"accepted"}
    assert state.store.counts()["labelled"] == {"slow_http_dos": 10, "benign": 4, "dos": 4}
    # The accepted name is offered to the model next time, so names stay stable.
    assert "slow_http_dos" not in prompts[0].split('<data id="classes">')[1].split("</data>")[0]
    assert "slow_http_dos" in prompts[1].split('<data id="classes">')[1].split("</data>")[0]


def test_an_accepted_class_name_stuck_on_other_traffic_is_not_accepted(state) -> None:
    slow = synthetic_windows({"slow_http_dos": 8}, seed=3, id_prefix="a")
    benign = synthetic_windows({"benign": 6}, seed=4, id_prefix="b")
    lies = {w.window_id: "slow_http_dos" for w in benign.windows}
    with serve("oracle", truth={**slow.truth, **lies}) as llm:
        d = _decider(state, llm)
        d.decide(slow.windows, {}, 4)
        out = d.decide(benign.windows, {}, 4)
    assert set(out.finished.values()) == {"parked"}
    assert state.store.counts()["labelled"] == {"slow_http_dos": 8}


def test_redelivered_windows_are_not_labelled_again_and_offline_parks(state) -> None:
    batch = synthetic_windows({"dos": 3, "benign": 3}, seed=5)
    with serve("oracle", truth=batch.truth) as llm:
        d = _decider(state, llm)
        d.decide(batch.windows, {}, 4)
        again = d.decide(batch.windows, {}, 4)
        assert llm.counts["task:window_labels"] == 1
    assert again.finished == {w.window_id: "accepted" for w in batch.windows}
    fresh = synthetic_windows({"dos": 2}, seed=6, id_prefix="o")
    out = Decider(state, None).decide(fresh.windows, {}, 4)
    assert set(out.finished.values()) == {"parked"}
    assert {i.reason for i in state.review.pending()} == {"offline"}
    assert all(f.label is None for i in state.review.pending() for f in i.window.flows)


def test_transient_failures_are_retried_until_the_last_attempt(state) -> None:
    batch = synthetic_windows({"dos": 2}, seed=7)
    with serve("rate_limit", truth=batch.truth) as llm:
        d = _decider(state, llm)
        out = d.decide(batch.windows, {}, 3)
        assert out.retry == {w.window_id: "rate_limit" for w in batch.windows} and not out.finished
        out = d.decide(batch.windows, {w.window_id: 2 for w in batch.windows}, 3)
    assert set(out.finished.values()) == {"parked"}
    assert {i.reason for i in state.review.pending()} == {"llm_rate_limit"}


def test_accepted_labels_on_the_holdout_side_wait_for_a_person(state) -> None:
    """The retrainer's holdout judges challengers with truth only: an accepted LLM label whose
    window hashes to that side is parked as `verify`, not stored; a person's verdict stores
    it as human truth. The other side is stored and trains."""
    from llm_agents.labeling.review import decide
    from llm_agents.store import holdout_mask, is_truth

    batch = synthetic_windows({"slow_http_dos": 30, "dos": 30}, seed=8, id_prefix="v")
    held = {w.window_id for w, h in zip(batch.windows, holdout_mask([w.window_id for w in batch.windows]))
            if h}
    assert 0 < len(held) < len(batch.windows)
    with serve("oracle", truth=batch.truth) as llm:
        out = Decider(state, _client(llm)).decide([strip_truth(w) for w in batch.windows], {}, 4)
    pending = {i.window_id: i for i in state.review.pending()}
    accepted = {w for w, o in out.finished.items() if o == "accepted"}
    assert accepted and not accepted & held
    verify = {w for w, i in pending.items() if i.reason == "verify"}
    assert verify and verify <= held and verify == held & {w for w, o in out.finished.items() if o == "parked"}
    assert all(pending[w].label == batch.truth[w] for w in verify)       # the LLM's answer, for the person
    stored = state.store.frame(("labelled",))
    assert set(stored["window_id"]) == accepted and not is_truth(stored["label_source"]).any()
    item = pending[sorted(verify)[0]]
    decide(state.review, state.store, state.ledger, item.id, label=None, who="alice")
    mine = state.store.frame(("labelled",))
    mine = mine[mine["window_id"] == item.window_id]
    assert len(mine) and is_truth(mine["label_source"]).all() and set(mine["label"]) == {batch.truth[item.window_id]}
