"""Contract tests against a real model: SmolLM2-135M-Instruct under llama-cpp-python's
OpenAI-compatible server on loopback (llm_agents.local_llm; `make test` installs both).

A 135M model is weak, and that is the point: its mistakes are real ones. What must hold:
- structured output: the client negotiates the strongest form this server takes (it
  answers `json_schema` with a 500; llama.cpp's schema grammar works) without the refusal
  being retried, and every answer it returns is schema-valid; a bad one is a classified
  LLMBadOutput, never an exception of another kind;
- a prompt longer than the model's context is split until it fits, the limit learned from
  the server's refusal;
- timeouts and cut-off answers are classified failures;
- the acceptance gates hold: over real uncertain windows from a lab capture and from the
  nDPI captures of other networks, no wrong label is accepted;
- the Designer's and Coder's prompts, longer than this context, go to the expert library.
Figures (validity, latency, accepted/parked/rejected) are printed.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import openai
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from llm_agents.client import LLMClient
from llm_agents.errors import LLMBadOutput, LLMError, LLMTimeout
from llm_agents.labeling.labeler import Labeler, WindowLabels, label_variables
from llm_agents.local_llm import LocalLLM, server_installed
from llm_agents.metrics import build_llm_metrics
from streams.broker import free_port
from tests.support.scripted_windows import DETECTOR_CLASSES, synthetic_windows
from tests.support.uncertain import uncertain_windows

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory):
    ok, why = server_installed()
    if not ok:  # make test installs it (scripts/setup-llm.sh): missing means a broken setup
        pytest.fail(why)
    log = tmp_path_factory.mktemp("llm") / "llama-server.log"
    with LocalLLM(free_port(), log_path=log) as llm:
        yield llm


def client_for(local: LocalLLM, registry: CollectorRegistry | None = None, retries: int = 2,
               **kw: object) -> LLMClient:
    oa = openai.OpenAI(base_url=local.base_url, api_key="unused", max_retries=retries)
    kw.setdefault("timeout_s", 120.0)
    return LLMClient(oa, local.model, metrics=build_llm_metrics(registry or CollectorRegistry()), **kw)  # type: ignore[arg-type]


def test_structured_output_uses_the_schema_grammar_and_every_answer_validates(local) -> None:
    registry = CollectorRegistry()
    client = client_for(local, registry)
    batch = synthetic_windows({"benign": 2, "dos": 1, "portscan": 1}, seed=3)
    outcomes, latency = [], []
    for i in range(3):
        variables = label_variables(batch.windows[i % 4:i % 4 + 1], DETECTOR_CLASSES)
        t0 = time.perf_counter()
        try:
            res = client.complete_json("label_windows", variables, WindowLabels, purpose="label", max_tokens=200)
        except LLMBadOutput as exc:  # the model's answer broke the schema (a number out of range): classified
            outcomes.append(f"bad_output:{exc.reason}")
        else:
            assert isinstance(res.data, WindowLabels)  # validated by pydantic against the schema
            assert res.response_format == "json_object_schema"
            outcomes.append("valid")
        latency.append(time.perf_counter() - t0)
    # json_schema was refused once (a 500 from this server), never retried, and not asked again.
    assert client.response_format == "json_object_schema"
    assert registry.get_sample_value("edgeloop_llm_format_fallbacks_total",
                                     {"purpose": "label", "format": "json_object_schema"}) == 1
    valid = outcomes.count("valid")
    print(f"\n[local LLM] label answers: {valid}/{len(outcomes)} schema-valid {outcomes}; "
          f"latency p50 {statistics.median(latency):.2f} s, max {max(latency):.2f} s")
    assert valid >= 1, outcomes


def test_a_prompt_longer_than_the_context_is_split_until_it_fits(local) -> None:
    client = client_for(local)
    batch = synthetic_windows({"benign": 2, "dos": 2, "portscan": 2}, seed=5)
    run = Labeler(client, DETECTOR_CLASSES, batch_size=6).label_batch(batch.windows)
    assert client.context_tokens == local.context  # learned from the server's refusal
    assert run.splits >= 1
    asked = len(run.proposals) + len(run.unanswered) + len(run.failed)
    assert asked == len(batch.windows) and not {"bad_request", "connection"} & set(run.failed.values())
    print(f"\n[local LLM] 6 windows in one prompt: {run.splits} splits, {run.requests} requests, "
          f"{len(run.proposals)} answered, {len(run.unanswered)} unanswered, failed {run.failed}")


def test_a_timeout_and_a_cut_off_answer_are_classified_failures(local) -> None:
    variables = label_variables(synthetic_windows({"benign": 1}, seed=1).windows, DETECTOR_CLASSES)
    with pytest.raises(LLMTimeout):
        # no retries: each abandoned request still costs the one-at-a-time server its prompt
        # (and a short answer: the server goes on generating what nobody waits for)
        client_for(local, retries=0, timeout_s=0.01).complete_json("label_windows", variables, WindowLabels,
                                                                   purpose="label", max_tokens=16)
    with pytest.raises(LLMBadOutput) as info:  # eight tokens cannot hold the answer
        client_for(local).complete_json("label_windows", variables, WindowLabels, purpose="label", max_tokens=8)
    assert info.value.reason in ("truncated", "no_json", "schema")


def test_the_acceptance_gates_hold_against_a_weak_model_on_real_windows(local, tmp_path: Path) -> None:
    """Lab windows and nDPI windows from other networks: the model labels them, the gates
    judge them against the lab's labelled windows; no accepted label may be wrong."""
    from inference.windowing import window_label
    from llm_agents.labeling.decider import AgentState, Decider
    from llm_agents.store import reference_frame

    train = pd.read_parquet(REPO / "data" / "lab" / "train-2.parquet")
    state = AgentState.open(tmp_path / "agent")
    state.store.append("reference", reference_frame(train, source="lab-train"), note="lab train")
    windows = (uncertain_windows(REPO / "data" / "lab" / "eval.parquet", 10, 0.02)
               + uncertain_windows(REPO / "data" / "ndpi" / "flows.parquet", 6, 0.02))
    truth = {w.window_id: window_label(f.label for f in w.flows) for w in windows}
    client = client_for(local, context_tokens=local.context)
    t0 = time.perf_counter()
    try:
        out = Decider(state, client, batch_size=2).decide(windows, attempts={}, max_attempts=1)
    except LLMError as exc:  # the Decider never lets an LLM failure through
        pytest.fail(f"an LLM failure escaped the Decider: {exc!r}")
    took = time.perf_counter() - t0
    outcomes = {w.window_id: out.finished.get(w.window_id) or f"retry:{out.retry.get(w.window_id)}"
                for w in windows}
    accepted = state.store.lookup([w.window_id for w in windows])
    wrong = {wid: (v["label"], truth[wid]) for wid, v in accepted.items() if v["label"] != truth[wid]}
    parked = {i.window_id: i.reason for i in state.review.pending(1000)}
    print(f"\n[local LLM] {len(windows)} real windows ({sum(1 for w in windows if w.reason == 'audit')} audit) "
          f"in {took:.0f} s: accepted {len(accepted)} (wrong {len(wrong)}), parked {len(parked)} "
          f"by reason {pd.Series(list(parked.values()), dtype=object).value_counts().to_dict()}, "
          f"other {[o for o in outcomes.values() if o not in ('accepted', 'parked')]}")
    assert not wrong, f"wrong labels accepted: {wrong}"
    assert len(accepted) + len(parked) == len(windows)


def test_design_and_code_prompts_too_long_for_this_model_fall_back_to_the_library(local) -> None:
    """The Designer's and the Coder's prompts (intent, twin summary, KPI catalogue, expert
    examples) are longer than this model's context: the expert library designs and codes
    instead, and the provenance says why; nothing too long is sent."""
    from llm_agents.blueprints import Coder, Designer, ExpertLibrary, parse_intent

    client = client_for(local, context_tokens=local.context)
    intent = parse_intent("block the syn_scan from 10.9.0.66", classes=("syn_scan",))
    lib = ExpertLibrary.load()
    design = Designer(client, lib).design(intent, {"flows": 1000})
    assert design.provenance == "library:block_source (the LLM's context is too small to design)"
    code = Coder(client, lib).write(design.blueprint)
    assert code.provenance == "library:block_source (the LLM's context is too small to code)"
    assert client.requests_used == 0
