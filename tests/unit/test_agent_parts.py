"""The agent loop's Kafka-free parts: offset bookkeeping, the drift window, retrain triggers."""
from __future__ import annotations

import asyncio
import json
import time

from llm_agents.agent import AgentConfig, AgentState, LabelAgent
from llm_agents.agent_tracking import DriftMonitor, OffsetTracker
from llm_agents.audit import Decision
from streams.settings import load_settings
from streams.topics import Topics


def test_only_a_done_prefix_of_each_partition_is_committed() -> None:
    t = OffsetTracker()
    for off in (5, 6, 7, 8):
        t.add(0, off)
    t.add(1, 0)
    t.done(0, 6)
    t.done(0, 7)
    assert t.committable() == {}            # 5 is still open: nothing after it may be committed
    t.done(0, 5)
    t.done(1, 0)
    assert t.committable() == {0: 8, 1: 1}  # 5, 6, 7 done -> commit 8; 8 stays open
    assert t.committable() == {} and t.open_count() == 1
    t.drop([0])                             # partition revoked: its open offsets are forgotten
    assert t.open_count() == 0


def test_drift_is_the_uncertain_share_over_a_sliding_window() -> None:
    now = [0.0]
    m = DriftMonitor(window_s=60, clock=lambda: now[0])
    m.add_batch(json.dumps({"detections": [{"uncertain": True}, {"uncertain": False}]}).encode())
    now[0] = 30
    m.add(8, 0)
    assert m.ratio() == (0.1, 10)
    now[0] = 70                             # the first batch has left the window
    m.add(2, 2)
    assert m.ratio() == (0.2, 10)
    m.add_batch(b"not json")                # best effort: ignored
    assert m.ratio()[1] == 10


class FakeRetrainer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def run(self, trigger: str, detail: dict) -> str:
        self.calls.append((trigger, detail))
        return f"decision:{trigger}"


def _agent(tmp_path, **cfg) -> tuple[LabelAgent, FakeRetrainer]:
    rt = FakeRetrainer()
    return LabelAgent(AgentConfig(**cfg), "127.0.0.1:1", Topics("t."), AgentState.open(tmp_path),
                      retrainer=rt), rt


def _accept(agent: LabelAgent, n: int, start: int = 0) -> None:
    agent.state.ledger.commit([Decision(f"w{start + i}", "accepted", "syn_flood") for i in range(n)])


def test_retrain_triggers_on_new_labels_and_on_drift(tmp_path) -> None:
    async def go(agent: LabelAgent) -> None:
        agent._maybe_retrain()
        if agent._retrain is not None:
            await agent._retrain

    agent, rt = _agent(tmp_path / "a", retrain_min_labels=5)
    _accept(agent, 4)
    asyncio.run(go(agent))
    assert rt.calls == []
    # The fifth is a person's verdict given with `edgeloop review` in another process
    # (a `verify` item confirmed): it reaches the store, so it counts.
    other = AgentState.open(tmp_path / "a")
    other.ledger.commit([Decision("w-review", "accepted", "syn_flood", actor="human:op", action="review_accept")])
    asyncio.run(go(agent))
    assert rt.calls[0][0] == "labels" and rt.calls[0][1]["new_labels"] == 5
    assert agent.retrains == ["decision:labels"]
    asyncio.run(go(agent))                  # the count starts again after a retrain
    assert len(rt.calls) == 1
    time.sleep(0.002)
    _accept(agent, 4, start=10)
    asyncio.run(go(agent))
    assert len(rt.calls) == 1

    agent, rt = _agent(tmp_path / "b", retrain_min_labels=0, drift_ratio=0.3, drift_min_windows=10,
                       retrain_cooldown_s=0)
    agent.drift.add(20, 8)
    asyncio.run(go(agent))
    assert rt.calls == []                   # drift, but no new label to learn from
    _accept(agent, 1)
    asyncio.run(go(agent))
    assert rt.calls[0][0] == "drift" and rt.calls[0][1]["uncertain_ratio"] == 0.4


def test_agent_config_reads_the_settings_it_shares_with_the_edge() -> None:
    s = load_settings(session_timeout_s=6, heartbeat_s=1, fetch_max_wait_ms=15, worker_id="agent-7")
    c = AgentConfig.from_settings(s, batch_size=10)
    got = (c.session_timeout_s, c.heartbeat_s, c.fetch_max_wait_ms, c.worker, c.batch_size)
    assert got == (6, 1, 15, "agent-7", 10)
