"""Prompts longer than the model's context: the Designer and the Coder fall back to the
expert library (provenance says why); without an expert for the intent, a clear error."""
from __future__ import annotations

import openai
import pytest
from prometheus_client import CollectorRegistry

from llm_agents.blueprints import Coder, Designer, ExpertLibrary, parse_intent
from llm_agents.blueprints.errors import DesignError
from llm_agents.client import LLMClient
from llm_agents.errors import LLMContextExceeded
from llm_agents.metrics import build_llm_metrics
from tests.support.scripted_server import serve

LIB = ExpertLibrary.load()


def client(base_url: str) -> LLMClient:
    return LLMClient(openai.OpenAI(base_url=base_url, api_key="x", max_retries=0), "scripted",
                     metrics=build_llm_metrics(CollectorRegistry()), timeout_s=5.0)


def test_a_context_too_small_for_design_and_code_falls_back_to_the_library() -> None:
    intent = parse_intent("block the syn_scan from 10.9.0.66", classes=("syn_scan",))
    with serve("oracle", context_tokens=400) as llm:
        c = client(llm.base_url)
        design = Designer(c, LIB).design(intent, {"flows": 10})
        assert design.provenance == "library:block_source (the LLM's context is too small to design)"
        assert c.context_tokens == 400 and llm.counts["context_exceeded"] == 1
        code = Coder(c, LIB).write(design.blueprint)
        assert code.provenance == "library:block_source (the LLM's context is too small to code)"
        assert code.sources == Coder(None, LIB).write(design.blueprint).sources
        assert llm.counts["requests"] == 1  # the Coder's prompt was sized before sending


def test_without_an_expert_the_context_error_is_reported() -> None:
    with serve("oracle", context_tokens=400) as llm:
        with pytest.raises(DesignError) as info:
            Designer(client(llm.base_url), LIB).design(parse_intent("make the network faster"), {})
    assert isinstance(info.value.__cause__, LLMContextExceeded)


def test_a_default_capped_answer_shrinks_to_what_the_context_leaves() -> None:
    """The default answer cap (4,096 tokens) is a ceiling: with a 10,000-token model, a
    prompt of ~3,500 tokens (by len/4; up to twice that counted with care) must still go out,
    asking for what the context leaves. (The local SmolLM2 refused every synthesis request
    before this: prompt + 4,096 > its context.)"""
    import numpy as np

    from llm_agents.synthesis.prompt import FIELD_NAMES, SyntheticWindows, prompt_variables

    row = [float(i) for i in range(len(FIELD_NAMES))]
    variables = prompt_variables("syn_scan", [[row] * 8] * 8, n_windows=4, k=8, horizon_ms=10_000.0,
                                 lengths=np.array([8]), feedback="")
    with serve("oracle", context_tokens=10000) as llm:
        llm.handle("synthetic_windows", lambda body, prompt: {"windows": []})
        c = LLMClient(openai.OpenAI(base_url=llm.base_url, api_key="x", max_retries=0), "scripted",
                      metrics=build_llm_metrics(CollectorRegistry()), timeout_s=5.0, context_tokens=10000)
        assert c.max_completion_tokens == 4096
        c.complete_json("synthesize_windows", variables, SyntheticWindows, purpose="synthesize")
        sent = llm.requests[-1]
        chars = sum(len(m["content"]) for m in sent["messages"])
        assert 1000 < chars // 4 and 256 <= sent["max_tokens"] <= 10000 - chars // 2 < 4096
        assert llm.counts["context_exceeded"] == 0
        # An explicit max_tokens is a need: it is not shrunk, and too much is refused unsent.
        with pytest.raises(LLMContextExceeded):
            c.complete_json("synthesize_windows", variables, SyntheticWindows, purpose="synthesize", max_tokens=7000)
        assert len(llm.requests) == 1
