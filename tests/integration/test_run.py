"""`edgeloop run` (what `make run` does) end to end on the session's broker: replay, verdicts,
the agent's pass, health from the services' own metrics, and a proposal waiting for a person."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llm_agents.policies.store import PolicyStore
from streams.broker import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_run_shows_the_whole_loop_and_ends_with_a_proposal_waiting(broker, topics, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "EDGELOOP_KAFKA_BOOTSTRAP": broker.bootstrap, "EDGELOOP_TOPIC_PREFIX": topics.prefix,
           "EDGELOOP_DATA_DIR": str(tmp_path / "var"), "EDGELOOP_METRICS_PORT": str(port),
           "EDGELOOP_LLM_BASE_URL": "", "COLUMNS": "200"}
    # The ports beside the detector's are taken, as they may be on a busy machine: the run's
    # other services must find their own (the agent once took port + 1 and exited 1 when it
    # could not bind it).
    with contextlib.ExitStack() as held:
        for neighbour in (port + 1, port + 2):
            sock = held.enter_context(socket.socket())
            with contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", neighbour))
                sock.listen()
        r = subprocess.run([sys.executable, "-m", "edgeloop_app.cli", "run"], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=280)
    out = r.stdout + r.stderr
    agent_log = tmp_path / "var" / "logs" / "agent.log"
    if agent_log.exists():  # in every failure message below: what the agent itself printed
        out += "\n--- agent.log (tail) ---\n" + agent_log.read_text()[-1500:]
    assert r.returncode == 0, out[-4000:]
    # Step 1 starts the embedded broker; with EDGELOOP_KAFKA_BOOTSTRAP set it uses that one.
    assert f"using Kafka at {broker.bootstrap}" in out
    for n in range(2, 8):
        assert f"{n}/7 " in out, f"step {n} missing:\n{out[-4000:]}"
    # Health read from the detector's and the sensor's /metrics: both up, healthy, and
    # flows/s averaged over the run (so not 0, though the replay is over).
    health = [ln.split("│") for ln in out.splitlines() if "127.0.0.1:" in ln and "│" in ln]
    assert sorted(row[1].strip() for row in health) == ["detector", "sensor"], out[-3000:]
    for row in health:
        assert row[3].strip() == "ok" and float(row[4].replace(",", "")) > 0, row
    # The targets' windows of the lab's one-source scans and sweeps are deferred but covered
    # by their sources' windows: counted apart and not sent, so the agent gets fewer windows
    # than were deferred (it would get them all, plus the audit sample, if they were sent).
    import re

    summary = re.search(r"([\d,]+) uncertain \(([\d,]+) of them targets' windows", " ".join(out.split()))
    received = re.search(r"windows received (\d+)", out)
    assert summary and received, out[-3000:]
    uncertain, covered = (int(g.replace(",", "")) for g in summary.groups())
    assert covered >= 20 and int(received.group(1)) < uncertain, (uncertain, covered, received.group(0))
    # The live table says which checks deferred them, from the detector's own counter: the
    # covered ones under "destination", as many as were counted apart.
    gates = re.search(r"deferred by\s*│\s*([^│]+)│", out)
    assert gates and f"destination {covered:,}" in gates.group(1), out[-3000:]
    # The run ends with a proposal waiting for approval, stored where `edgeloop policy` looks.
    waiting = PolicyStore(tmp_path / "var" / "policies").list(["proposed"])
    assert waiting, out[-3000:]
    assert f"edgeloop policy approve {waiting[0].policy_id}" in out
