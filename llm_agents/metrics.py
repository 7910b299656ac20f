"""Prometheus metrics of the LLM agent, defined in one place, in base units.

    >>> m = build_llm_metrics(registry)          # or build_llm_metrics(registry, prefix="x")
    >>> m.requests.labels(purpose="label", outcome="ok").inc()

    <prefix>_llm_requests_total{purpose,outcome}   calls to LLMClient.complete_json;
                                                    outcome = ok | error
    <prefix>_llm_tokens_total{purpose,kind}         kind = prompt | completion
    <prefix>_llm_request_seconds{purpose}           one HTTP exchange, the openai client's
                                                    own retries included
    <prefix>_llm_failures_total{purpose,kind}       kind = rate_limit | timeout | connection |
                                                    bad_request | bad_output | budget
    <prefix>_llm_format_fallbacks_total{purpose,format}
                                                    the server refused structured output and the
                                                    client moved down to `format`

Several clients (labeler, synthesizer, blueprints) may share one registry, so the builder
returns the same object for the same registry and prefix instead of registering twice.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

# LLM calls take from tens of milliseconds (a local model, a tiny prompt) to minutes.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
FAILURE_KINDS = ("rate_limit", "timeout", "connection", "bad_request", "bad_output", "budget")


@dataclass(frozen=True)
class LLMMetrics:
    requests: Counter
    tokens: Counter
    request_seconds: Histogram
    failures: Counter
    format_fallbacks: Counter


_built: "weakref.WeakKeyDictionary[CollectorRegistry, dict[str, LLMMetrics]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def build_llm_metrics(registry: CollectorRegistry, prefix: str = "edgeloop") -> LLMMetrics:
    """The LLM metrics registered in `registry` under `prefix`; built once per pair."""
    with _lock:
        per_prefix = _built.setdefault(registry, {})
        if prefix not in per_prefix:
            per_prefix[prefix] = _define(registry, prefix)
        return per_prefix[prefix]


def _define(registry: CollectorRegistry, prefix: str) -> LLMMetrics:
    p = f"{prefix}_llm"
    return LLMMetrics(
        requests=Counter(f"{p}_requests", "Calls to the LLM, by purpose and outcome (ok, error).",
                         ["purpose", "outcome"], registry=registry),
        tokens=Counter(f"{p}_tokens", "Tokens used, as reported by the server (estimated when it "
                       "reports none).", ["purpose", "kind"], registry=registry),
        request_seconds=Histogram(f"{p}_request_seconds", "Duration of one LLM HTTP exchange, "
                                  "client retries included.", ["purpose"],
                                  buckets=LATENCY_BUCKETS, registry=registry),
        failures=Counter(f"{p}_failures", "Failed LLM calls by kind: " + ", ".join(FAILURE_KINDS) + ".",
                         ["purpose", "kind"], registry=registry),
        format_fallbacks=Counter(f"{p}_format_fallbacks", "Times the server refused a structured "
                                 "output format and the client fell back.", ["purpose", "format"],
                                 registry=registry),
    )
