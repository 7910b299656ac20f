"""What can go wrong when edgeloop talks to an LLM, as exception types under one root.

    EdgeloopError                      (contracts.errors)
     └── LLMError                      an LLM call did not give a usable answer
          ├── LLMRateLimited           HTTP 429 after the openai client's own retries
          ├── LLMTimeout               no answer within the request timeout
          ├── LLMUnavailable           connection refused/reset, or a 5xx from the server
          ├── LLMBadRequest            the server refused the request (4xx other than 429,
          │    │                       or a 5xx that names response_format)
          │    └── LLMContextExceeded  the prompt and answer do not fit the model's context
          ├── LLMBadOutput             an answer came back, but it is not JSON or not
          │                            valid against the schema (`raw` keeps the text)
          └── LLMBudgetExceeded        this client's request or token budget is spent;
                                       nothing was sent

Callers branch on the type, never on the message. Every error carries `purpose` (what
the call was for: "label", "synthesize", ...) and `model`, and `kind`, the short code
used as the `kind` label of `edgeloop_llm_failures_total`.
"""
from __future__ import annotations

from contracts.errors import EdgeloopError


class LLMError(EdgeloopError):
    """An LLM call that gave no usable answer. `kind` names the failure for metrics."""

    kind = "error"

    def __init__(self, detail: str, *, purpose: str = "", model: str = "",
                 status_code: int | None = None) -> None:
        self.detail, self.purpose, self.model, self.status_code = detail, purpose, model, status_code
        where = f"[{purpose}{'@' + model if model else ''}] " if purpose or model else ""
        super().__init__(f"{where}{detail}")


class LLMRateLimited(LLMError):
    """The endpoint kept answering 429. `retry_after_s` is the server's hint, if it gave one."""

    kind = "rate_limit"

    def __init__(self, detail: str, *, retry_after_s: float | None = None, **ctx: object) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(detail, **ctx)  # type: ignore[arg-type]


class LLMTimeout(LLMError):
    kind = "timeout"


class LLMUnavailable(LLMError):
    """The endpoint could not be reached or failed on its side (5xx)."""

    kind = "connection"


class LLMBadRequest(LLMError):
    """The endpoint refused the request: bad parameters, unknown model, auth, context length."""

    kind = "bad_request"


class LLMContextExceeded(LLMBadRequest):
    """The prompt plus the answer's room exceed the model's context: `needed` and `limit`
    tokens (from the server's refusal, or estimated before sending once the limit is known).
    A caller sends less (fewer windows per prompt); asking again the same way cannot work."""

    kind = "context"

    def __init__(self, detail: str, *, needed: int, limit: int, prompt_tokens: int = 0, **ctx: object) -> None:
        self.needed, self.limit, self.prompt_tokens = needed, limit, prompt_tokens
        super().__init__(detail, **ctx)  # type: ignore[arg-type]


class LLMBadOutput(LLMError):
    """The answer was not usable. `reason`: refusal, no_json, truncated or schema; `raw`: the text."""

    kind = "bad_output"

    def __init__(self, detail: str, *, reason: str, raw: str = "", **ctx: object) -> None:
        self.reason, self.raw = reason, raw
        super().__init__(f"{reason}: {detail}", **ctx)  # type: ignore[arg-type]


class LLMBudgetExceeded(LLMError):
    """Refused before sending: `budget` is "requests" or "tokens", with `used` and `limit`."""

    kind = "budget"

    def __init__(self, budget: str, used: int, limit: int, **ctx: object) -> None:
        self.budget, self.used, self.limit = budget, used, limit
        super().__init__(f"{budget} budget spent ({used} used, limit {limit})", **ctx)  # type: ignore[arg-type]
