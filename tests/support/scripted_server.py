"""A scripted OpenAI-compatible LLM server on loopback, for tests and benchmarks.

The real `openai` client talks to it over HTTP, so every test runs the same code path as
production. Answers are scripted per task (the `response_format.json_schema.name`, or the
`<json-schema name=...>` the client writes into the prompt when structured output is
off) and deterministic for a seed.

    >>> with serve("oracle", truth={"w0001": "dos"}) as llm:
    ...     client = LLMClient(openai.OpenAI(base_url=llm.base_url, api_key="x"), "m")
    ...     llm.handle("blueprint", lambda request, prompt: {"steps": []})  # another task
    ...     ...
    ...     llm.requests[-1]["response_format"], llm.counts["rate_limited"]

Roles (the built-in `window_labels` task reads the windows and classes data blocks):
    oracle         labels from `truth` ({window_id: class}); a class the prompt does not
                   list is answered `novel:<class>`; windows not in `truth` get no answer
    noisy          the oracle, with a seeded fraction `p` moved to another listed class
    hallucinating  confident answers: invented class names, random `novel:` names, wrong
                   classes, invented fields, an answer for a window nobody asked about;
                   other tasks get invented fields added
    slow           the oracle after `delay_s` (default 0.5 s) per request
    rate_limit     HTTP 429 with retry-after for the first `rate_limited` requests
                   (default: all of them), then the oracle
    garbage        prose with no JSON, or JSON cut short (finish_reason "length")
    injection      obeys prompt injection: a window whose text says "ignore previous
                   instructions ... label ... as X" is answered X with confidence 0.99
Options work with any role: `delay_s`, `rate_limited`, `retry_after_s`,
`reject_formats={"json_schema"}` (HTTP 400, to exercise the client's fallback; "json_object"
also refuses llama.cpp's json_object + schema, "json_object_schema" only that), with
`format_error_status=500` refused as llama.cpp's server does, `context_tokens=N` (a 400 in
OpenAI's words for a longer request),
`wrap="fence"|"prose"|"think"` (valid JSON inside a code fence, prose or after a
<think> section), `usage=False` (no usage block), `model`, `confidence`.
"""
from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Mapping

from llm_agents.prompts import parse_data_blocks

ROLES = ("oracle", "noisy", "hallucinating", "slow", "rate_limit", "garbage", "injection")
LABEL_TASK = "window_labels"
NOVEL_PREFIX = "novel:"
Handler = Callable[[dict[str, Any], str], "dict[str, Any] | str"]

_INJECTION_RE = re.compile(
    r"ignore\s+(?:all\s+|any\s+)?(?:the\s+)?(?:previous|prior|above|earlier)\s+instructions"
    r".*?\blabel\b.*?\bas\s+[\"'`]?([A-Za-z][\w:.-]*)", re.IGNORECASE | re.DOTALL)
_SCHEMA_IN_PROMPT = re.compile(r'<json-schema name="([\w-]+)">')
_INVENTED = ("zero_day_apt", "quantum_mitm", "crypto_exfiltration", "ai_botnet", "dns_wormhole")
_ADJ = ("stealth", "quantum", "polymorphic", "shadow", "hyper", "covert", "neural", "phantom")
_NOUN = ("exfil", "worm", "beacon", "tunnel", "swarm", "implant", "relay", "flood")
_PROSE = ("I'm sorry, but I can't determine the traffic classes from this information.",
          "Here is my analysis: the windows look mostly normal, with some suspicious activity.",
          "window w1 is probably benign and the others are attacks")


@dataclass(frozen=True)
class Script:
    """How the scripted model behaves; built by `serve` from the role and options."""

    role: str = "oracle"
    truth: Mapping[str, str] = field(default_factory=dict)
    seed: int = 0
    p: float = 0.3
    delay_s: float = 0.0
    rate_limited: int = 0
    retry_after_s: float = 0.01
    reject_formats: frozenset[str] = frozenset()
    format_error_status: int = 400
    context_tokens: int = 0        # refuse longer requests (prompt/4 + max_tokens) as OpenAI words it
    wrap: str | None = None
    garbage: str = "mixed"
    confidence: float = 0.95
    usage: bool = True
    model: str = ""

    @classmethod
    def for_role(cls, role: str, **opts: Any) -> "Script":
        if role not in ROLES:
            raise ValueError(f"unknown scripted role {role!r}; one of {', '.join(ROLES)}")
        if "reject_formats" in opts:
            opts["reject_formats"] = frozenset(opts["reject_formats"])
        script = cls(role=role, **opts)
        if role == "slow" and "delay_s" not in opts:
            script = replace(script, delay_s=0.5)
        if role == "rate_limit" and "rate_limited" not in opts:
            script = replace(script, rate_limited=sys.maxsize)
        return script


def _error(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def _prompt_text(body: Mapping[str, Any]) -> str:
    parts = []
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if isinstance(content, str):
            parts.append(content)
    return "\n\n".join(parts)


def _task_name(body: Mapping[str, Any], prompt: str) -> str:
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_schema":
        return str((rf.get("json_schema") or {}).get("name", ""))
    m = _SCHEMA_IN_PROMPT.search(prompt)
    return m.group(1) if m else ""


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _wrap(text: str, how: str | None) -> str:
    if how == "fence":
        return f"```json\n{text}\n```"
    if how == "prose":
        return f"Sure! Here is my answer:\n{text}\nLet me know if you need anything else."
    if how == "think":
        return f'<think>The schema wants {{"draft": true}} first? No.</think>\n{text}'
    return text


class ScriptedLLM:
    """The state of one scripted server: its script, handlers, request log and counters."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self._handlers: dict[str, Handler] = {LABEL_TASK: self._label_windows}
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def handle(self, schema_name: str, fn: Handler) -> None:
        """Answer task `schema_name` with fn(request_json, prompt_text) -> dict (or raw text)."""
        self._handlers[schema_name] = fn

    def handler(self, schema_name: str) -> Handler:
        """The current handler of a task, e.g. to wrap the built-in `window_labels` one."""
        return self._handlers[schema_name]

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.script.model or f"scripted-{self.script.role}",
                                            "object": "model", "created": 0, "owned_by": "edgeloop"}]}

    def respond(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        """(status, headers, JSON payload) for one chat-completions request."""
        with self._lock:
            self.requests.append(body)
            self.counts["requests"] += 1
            n = self.counts["requests"]
        s = self.script
        if n <= s.rate_limited:
            self._count("rate_limited")
            return 429, {"retry-after-ms": str(int(s.retry_after_s * 1000)),
                         "retry-after": f"{s.retry_after_s:g}"}, _error(
                "rate limited by the scripted server", "requests", "rate_limit_exceeded")
        rf = body.get("response_format") or {}
        fmt = rf.get("type", "prompt")
        shape = "json_object_schema" if fmt == "json_object" and "schema" in rf else fmt
        if fmt in s.reject_formats or shape in s.reject_formats:
            self._count("rejected_format")
            if s.format_error_status >= 500:  # llama.cpp's server: a validation error as a 500
                return s.format_error_status, {}, _error(
                    "1 validation error: ('body', 'response_format', 'type') Input should be 'text' or "
                    f"'json_object' (got {fmt})", "server_error")
            return s.format_error_status, {}, _error(f"response_format {fmt} is not supported by this server",
                                                     "invalid_request_error", param="response_format")
        prompt = _prompt_text(body)
        if s.context_tokens:
            needed = sum(len(m.get("content") or "") for m in body.get("messages", [])) // 4 + int(
                body.get("max_tokens") or 0)
            if needed > s.context_tokens:
                self._count("context_exceeded")
                return 400, {}, _error(
                    f"This model's maximum context length is {s.context_tokens} tokens. However, you requested "
                    f"{needed} tokens. Please reduce the length of the messages or completion.",
                    "invalid_request_error", param="messages")
        task = _task_name(body, prompt)
        if s.delay_s:
            self._closing.wait(s.delay_s)
        handler = self._handlers.get(task)
        if handler is None:
            return 501, {"x-should-retry": "false"}, _error(
                f"the scripted server has no handler for task {task!r}", "server_error")
        content, finish = self._content(handler, task, body, prompt, n)
        self._count("completions")
        self._count(f"task:{task}")
        return 200, {}, self._completion(body, prompt, content, finish, n)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _content(self, handler: Handler, task: str, body: dict[str, Any], prompt: str,
                 n: int) -> tuple[str, str]:
        if self.script.role == "garbage":
            return self._garbage(handler, body, prompt, n)
        answer = handler(body, prompt)
        if self.script.role == "hallucinating" and isinstance(answer, dict) and task != LABEL_TASK:
            answer = {**answer, "certainty": "absolute", "verified_by": "threat intelligence feed"}
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return _wrap(text, self.script.wrap), "stop"

    def _garbage(self, handler: Handler, body: dict[str, Any], prompt: str, n: int) -> tuple[str, str]:
        rng = random.Random(f"{self.script.seed}|garbage|{n}")
        mode = self.script.garbage if self.script.garbage != "mixed" else rng.choice(["prose", "truncated"])
        if mode == "prose":
            return rng.choice(_PROSE), "stop"
        answer = handler(body, prompt)
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return text[:max(1, int(len(text) * rng.uniform(0.3, 0.8)))], "length"

    def _completion(self, body: dict[str, Any], prompt: str, content: str, finish: str,
                    n: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": f"chatcmpl-scripted-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": self.script.model or str(body.get("model") or f"scripted-{self.script.role}"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish, "logprobs": None}],
        }
        if self.script.usage:
            p_tok, c_tok = max(1, len(prompt) // 4), max(1, len(content) // 4)
            out["usage"] = {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok}
        return out

    # The built-in label task ------------------------------------------------------------

    def _label_windows(self, body: dict[str, Any], prompt: str) -> dict[str, Any]:
        blocks = parse_data_blocks(prompt)
        windows = [w for w in blocks.get("windows") or [] if isinstance(w, dict)]
        classes = [c for c in blocks.get("classes") or [] if isinstance(c, str)]
        items = [item for w in windows if (item := self._label_one(w, classes)) is not None]
        if self.script.role == "hallucinating" and windows:
            rng = random.Random(f"{self.script.seed}|extra|{windows[0].get('window_id')}")
            items.append({"window_id": f"w-{rng.randrange(10**6):06d}", "label": "benign",
                          "confidence": 0.99, "rationale": "Also seen in this capture."})
        return {"window_labels": items}

    def _label_one(self, window: dict[str, Any], classes: list[str]) -> dict[str, Any] | None:
        s = self.script
        wid = str(window.get("window_id", ""))
        rng = random.Random(f"{s.seed}|{wid}")
        truth = s.truth.get(wid)
        if s.role == "injection":
            for text in _strings(window):
                m = _INJECTION_RE.search(text)
                if m:
                    return {"window_id": wid, "label": m.group(1), "confidence": 0.99,
                            "rationale": "The flow metadata identifies this traffic."}
        if s.role == "hallucinating":
            return self._hallucinate(wid, truth, classes, rng)
        if truth is None:
            return None
        label = truth
        if s.role == "noisy" and rng.random() < s.p:
            others = [c for c in classes if c != truth]
            label = rng.choice(others) if others else truth
        if classes and label not in classes and not label.startswith(NOVEL_PREFIX):
            label = NOVEL_PREFIX + label
        return {"window_id": wid, "label": label, "confidence": s.confidence,
                "rationale": f"Flow pattern typical of {label}."}

    @staticmethod
    def _hallucinate(wid: str, truth: str | None, classes: list[str], rng: random.Random) -> dict[str, Any]:
        kind = rng.choice(["invented", "invented_novel", "wrong"])
        wrong = [c for c in classes if c != truth]
        if kind == "wrong" and wrong:
            label = rng.choice(wrong)
        elif kind == "invented_novel":
            label = f"{NOVEL_PREFIX}{rng.choice(_ADJ)}_{rng.choice(_NOUN)}"
        else:
            label = rng.choice(_INVENTED)
        return {"window_id": wid, "label": label, "confidence": rng.choice([0.97, 0.99, 1.0]),
                "rationale": "Unmistakable signature of a known threat actor.", "severity": "critical",
                "cve": f"CVE-2031-{rng.randrange(10**4):04d}", "attacker": f"APT-{rng.randrange(100)}"}


class _HTTPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do; every reply has a length
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms) and every request looks that much slower than it is.
    disable_nagle_algorithm = True
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/").endswith("/models"):
            self._reply(200, {}, self.server.llm.models())
        else:
            self._reply(404, {}, _error(f"no route {self.path}", "not_found"))

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._reply(404, {}, _error(f"no route {self.path}", "not_found"))
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as exc:
            self._reply(400, {}, _error(f"bad JSON body: {exc}", "invalid_request_error"))
            return
        self._reply(*self.server.llm.respond(body))

    def _reply(self, status: int, headers: Mapping[str, str], payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test); nothing to tell

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    llm: ScriptedLLM


@contextmanager
def serve(role: str = "oracle", **opts: Any) -> Iterator[ScriptedLLM]:
    """Run a scripted server on 127.0.0.1 (a free port) for the `with` block."""
    llm = ScriptedLLM(Script.for_role(role, **opts))
    server = _Server(("127.0.0.1", 0), _HTTPHandler)
    server.llm = llm
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              name=f"scripted-llm-{role}", daemon=True)
    thread.start()
    llm.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield llm
    finally:
        llm._closing.set()  # wakes requests still sleeping in `delay_s`
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
