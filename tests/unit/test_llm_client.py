"""LLMClient over real HTTP: the openai client against the scripted server, for every role."""
from __future__ import annotations

import socket
import time

import openai
import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from contracts.errors import EdgeloopError
from llm_agents.client import LLMClient
from llm_agents.structured import parse_json_as, schema_name, strict_json_schema
from llm_agents.errors import (LLMBadOutput, LLMBadRequest, LLMBudgetExceeded, LLMError,
                               LLMRateLimited, LLMTimeout, LLMUnavailable)
from llm_agents.labeling.labeler import WindowLabels, label_variables
from llm_agents.metrics import build_llm_metrics
from streams.settings import Settings
from tests.support.scripted_server import serve
from tests.support.scripted_windows import DETECTOR_CLASSES, synthetic_windows

WINDOWS = synthetic_windows({"benign": 3, "dos": 3, "slow_http_dos": 2}, seed=7)


def make_client(base_url: str, registry: CollectorRegistry, *, max_retries: int = 0,
                **kwargs: object) -> LLMClient:
    oa = openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=max_retries)
    kwargs.setdefault("timeout_s", 5.0)
    return LLMClient(oa, "scripted", metrics=build_llm_metrics(registry), **kwargs)  # type: ignore[arg-type]


def label_vars() -> dict[str, object]:
    return label_variables(WINDOWS.windows, DETECTOR_CLASSES)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# Contract: every role either answers schema-valid JSON about the asked windows, or fails
# with the LLMError its role stands for; each call is counted once, with its outcome.
ROLE_CASES = [
    ("oracle", {}, None),
    ("noisy", {"p": 0.5}, None),
    ("hallucinating", {}, None),
    ("injection", {}, None),
    ("slow", {"delay_s": 3.0}, LLMTimeout),
    ("rate_limit", {}, LLMRateLimited),
    ("garbage", {"garbage": "prose"}, LLMBadOutput),
    ("garbage", {"garbage": "truncated"}, LLMBadOutput),
]


@pytest.mark.parametrize("role,opts,error", ROLE_CASES, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(ROLE_CASES)])
def test_contract_every_role(role: str, opts: dict, error: type[LLMError] | None) -> None:
    registry = CollectorRegistry()
    with serve(role, truth=WINDOWS.truth, **opts) as llm:
        # Only the slow role gets a short timeout: a loaded test machine must not turn
        # another role's answer into a timeout.
        client = make_client(llm.base_url, registry, timeout_s=0.5 if role == "slow" else 10.0)
        asked = {w.window_id for w in WINDOWS.windows}
        if error is None:
            res = client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
            assert isinstance(res.data, WindowLabels) and res.raw
            assert res.prompt_tokens > 0 and res.completion_tokens > 0 and res.latency_s > 0
            assert res.model == "scripted" and res.response_format == "json_schema"
            answered = {i.window_id for i in res.data.window_labels}
            assert answered & asked, "the answer is about the windows asked"
            assert sample(registry, "edgeloop_llm_requests_total", purpose="label", outcome="ok") == 1
            assert sample(registry, "edgeloop_llm_tokens_total", purpose="label",
                          kind="prompt") == res.prompt_tokens
        else:
            with pytest.raises(error) as info:
                client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
            assert isinstance(info.value, EdgeloopError) and info.value.purpose == "label"
            assert sample(registry, "edgeloop_llm_requests_total", purpose="label", outcome="error") == 1
            assert sample(registry, "edgeloop_llm_failures_total", purpose="label",
                          kind=info.value.kind) == 1
        assert sample(registry, "edgeloop_llm_request_seconds_count", purpose="label") == 1
        request = llm.requests[0]
        assert request["response_format"]["json_schema"]["name"] == "window_labels"
        assert request["response_format"]["json_schema"]["strict"] is True


def test_rate_limit_without_retries_raises_with_retry_after() -> None:
    with serve("rate_limit", retry_after_s=0.25) as llm:
        client = make_client(llm.base_url, CollectorRegistry(), max_retries=0)
        with pytest.raises(LLMRateLimited) as info:
            client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert info.value.retry_after_s == pytest.approx(0.25)
        assert info.value.status_code == 429
        assert llm.counts["requests"] == 1


def test_rate_limit_is_retried_by_the_openai_client_only() -> None:
    with serve("rate_limit", rate_limited=2, truth=WINDOWS.truth) as llm:
        client = make_client(llm.base_url, CollectorRegistry(), max_retries=2)
        res = client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert len(res.data.window_labels) == len(WINDOWS.windows)
        assert llm.counts["rate_limited"] == 2 and llm.counts["completions"] == 1
        assert client.requests_used == 1  # one logical request, whatever the transport retried


def test_timeout_with_a_slow_server() -> None:
    with serve("slow", delay_s=5.0, truth=WINDOWS.truth) as llm:
        client = make_client(llm.base_url, CollectorRegistry(), timeout_s=0.3)
        t0 = time.perf_counter()
        with pytest.raises(LLMTimeout):
            client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert time.perf_counter() - t0 < 4.0


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    registry = CollectorRegistry()
    client = make_client(f"http://127.0.0.1:{port}/v1", registry)
    with pytest.raises(LLMUnavailable):
        client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
    assert sample(registry, "edgeloop_llm_failures_total", purpose="label", kind="connection") == 1


def test_server_error_is_unavailable_and_not_retried_twice() -> None:
    class Unknown(BaseModel):
        x: int

    with serve("oracle") as llm:
        client = make_client(llm.base_url, CollectorRegistry(), max_retries=2)
        with pytest.raises(LLMUnavailable) as info:
            client.complete_json("label_windows", label_vars(), Unknown, purpose="t")
        assert info.value.status_code == 501
        assert llm.counts["requests"] == 1  # the server said x-should-retry: false


def test_garbage_keeps_the_raw_text() -> None:
    with serve("garbage", garbage="prose") as llm:
        client = make_client(llm.base_url, CollectorRegistry())
        with pytest.raises(LLMBadOutput) as info:
            client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert info.value.reason == "no_json" and info.value.raw
    with serve("garbage", garbage="truncated", truth=WINDOWS.truth) as llm:
        client = make_client(llm.base_url, CollectorRegistry())
        with pytest.raises(LLMBadOutput) as info:
            client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert info.value.reason == "truncated"


@pytest.mark.parametrize("wrap", ["fence", "prose", "think"])
def test_json_inside_prose_or_fences_is_found(wrap: str) -> None:
    with serve("oracle", truth=WINDOWS.truth, wrap=wrap) as llm:
        client = make_client(llm.base_url, CollectorRegistry())
        res = client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert {i.window_id for i in res.data.window_labels} == set(WINDOWS.truth)


def test_json_schema_refused_falls_back_and_remembers() -> None:
    registry = CollectorRegistry()
    with serve("oracle", truth=WINDOWS.truth, reject_formats={"json_schema"}) as llm:
        client = make_client(llm.base_url, registry)
        res = client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert res.response_format == "json_object_schema" and client.response_format == "json_object_schema"
        assert len(res.data.window_labels) == len(WINDOWS.windows)
        fallback = llm.requests[1]
        assert fallback["response_format"]["type"] == "json_object"
        assert fallback["response_format"]["schema"]["required"] == ["window_labels"]
        assert '<json-schema name="window_labels">' in fallback["messages"][-1]["content"]
        client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert llm.counts["rejected_format"] == 1 and llm.counts["completions"] == 2
    assert sample(registry, "edgeloop_llm_format_fallbacks_total", purpose="label",
                  format="json_object_schema") == 1
    assert sample(registry, "edgeloop_llm_requests_total", purpose="label", outcome="ok") == 2


def test_a_llama_cpp_style_500_for_json_schema_is_a_refusal_asked_once() -> None:
    """llama.cpp's server answers json_schema with a 500 validation error: the client takes
    it as a refusal, not an outage, asks once (no transport retries) and moves on to the
    schema grammar, then stays there."""
    with serve("oracle", truth=WINDOWS.truth, reject_formats={"json_schema"}, format_error_status=500) as llm:
        client = make_client(llm.base_url, CollectorRegistry(), max_retries=2)
        res = client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert res.response_format == "json_object_schema"
        assert llm.counts["rejected_format"] == 1 and llm.counts["requests"] == 2
        client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert llm.counts["requests"] == 3


def test_no_response_format_at_all_is_the_last_step() -> None:
    with serve("oracle", truth=WINDOWS.truth, reject_formats={"json_schema", "json_object"}) as llm:
        client = make_client(llm.base_url, CollectorRegistry())
        res = client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert res.response_format == "prompt" and "response_format" not in llm.requests[-1]


def test_a_400_that_no_format_cures_does_not_downgrade_the_client() -> None:
    every = {"json_schema", "json_object", "prompt"}
    with serve("oracle", truth=WINDOWS.truth, reject_formats=every) as llm:
        client = make_client(llm.base_url, CollectorRegistry())
        with pytest.raises(LLMBadRequest) as info:
            client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert info.value.status_code == 400
        assert client.response_format == "json_schema" and llm.counts["requests"] == 4


def test_request_budget_refuses_before_sending() -> None:
    registry = CollectorRegistry()
    with serve("oracle", truth=WINDOWS.truth) as llm:
        client = make_client(llm.base_url, registry, max_requests=2)
        for _ in range(2):
            client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        with pytest.raises(LLMBudgetExceeded) as info:
            client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert (info.value.budget, info.value.used, info.value.limit) == ("requests", 2, 2)
        assert llm.counts["requests"] == 2
    assert sample(registry, "edgeloop_llm_failures_total", purpose="label", kind="budget") == 1


def test_the_budget_is_a_rate_sending_resumes_as_the_hour_slides_on() -> None:
    """Not a lifetime count: a client that spent its hour's requests sends again an hour
    after its first ones, without a restart (the clock is the client's own, moved here)."""
    now = [1000.0]
    with serve("oracle", truth=WINDOWS.truth) as llm:
        client = make_client(llm.base_url, CollectorRegistry(), max_requests=2, clock=lambda: now[0])
        client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        now[0] += 1800
        client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        with pytest.raises(LLMBudgetExceeded):
            client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        now[0] += 1800  # the first request left the window; the second is still in it
        client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        with pytest.raises(LLMBudgetExceeded) as info:
            client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert (info.value.used, info.value.limit) == (2, 2)
        assert llm.counts["requests"] == 3 and client.requests_used == 3


def test_token_budget_refuses_before_sending() -> None:
    with serve("oracle", truth=WINDOWS.truth) as llm:
        client = make_client(llm.base_url, CollectorRegistry(), max_tokens=100)
        with pytest.raises(LLMBudgetExceeded) as info:
            client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert info.value.budget == "tokens" and llm.counts["requests"] == 0
        big = make_client(llm.base_url, CollectorRegistry(), max_tokens=5000)
        big.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert big.tokens_used > 2000
        with pytest.raises(LLMBudgetExceeded):  # the first call spent most of it
            big.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")


def test_missing_usage_is_estimated() -> None:
    with serve("oracle", truth=WINDOWS.truth, usage=False) as llm:
        client = make_client(llm.base_url, CollectorRegistry())
        res = client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert res.usage_estimated and res.prompt_tokens > 100 and client.tokens_used > 0


def test_from_settings_offline_and_online() -> None:
    assert LLMClient.from_settings(Settings(llm_base_url="")) is None
    registry = CollectorRegistry()
    with serve("oracle", truth=WINDOWS.truth, model="tiny-model") as llm:
        settings = Settings(llm_base_url=llm.base_url, llm_model="", llm_api_key="sk-secret-value",
                            llm_timeout_s=3, llm_max_retries=0, llm_max_requests=5)
        client = LLMClient.from_settings(settings, registry)
        assert client is not None and client.max_requests == 5
        res = client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert client.model == "tiny-model" == res.model  # discovered via GET /v1/models
        assert "sk-secret-value" not in repr(vars(client))
    assert sample(registry, "edgeloop_llm_requests_total", purpose="label", outcome="ok") == 1


def test_metrics_are_built_once_per_registry() -> None:
    registry = CollectorRegistry()
    assert build_llm_metrics(registry) is build_llm_metrics(registry)
    assert build_llm_metrics(registry, "other") is not build_llm_metrics(registry)


class Inner(BaseModel):
    name: str
    score: float = 0.5


class StepPlan(BaseModel):
    title: str = "x"
    steps: list[Inner]
    note: str | None = None


def test_strict_schema_and_name() -> None:
    js = strict_json_schema(StepPlan)
    assert schema_name(StepPlan) == "step_plan" and schema_name(WindowLabels) == "window_labels"
    assert js["additionalProperties"] is False and js["required"] == ["title", "steps", "note"]
    inner = js["$defs"]["Inner"]
    assert inner["required"] == ["name", "score"] and inner["additionalProperties"] is False
    assert "default" not in str(js)


def test_parse_json_as_is_defensive() -> None:
    good = '{"title": "t", "steps": [{"name": "a", "score": 1}]}'
    assert parse_json_as(good, StepPlan).steps[0].name == "a"
    assert parse_json_as(f"Here:\n```json\n{good}\n```\nbye", StepPlan).title == "t"
    assert parse_json_as('<think>{"steps": 1}</think>' + good, StepPlan).title == "t"
    assert parse_json_as('{"step_plan": ' + good + "}", StepPlan).title == "t"
    assert parse_json_as('{"bogus": 1} then ' + good, StepPlan).title == "t"
    with pytest.raises(ValueError, match="no JSON"):
        parse_json_as("nothing here", StepPlan)
    with pytest.raises(ValueError, match="schema"):
        parse_json_as('{"steps": "no"}', StepPlan)


def test_a_bad_answer_after_a_fallback_still_proves_the_format() -> None:
    with serve("garbage", garbage="prose", reject_formats={"json_schema"}) as llm:
        client = make_client(llm.base_url, CollectorRegistry())
        with pytest.raises(LLMBadOutput):
            client.complete_json("label_windows", label_vars(), WindowLabels, purpose="label")
        assert client.response_format == "json_object_schema"
