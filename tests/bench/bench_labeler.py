"""How fast the Labeler labels windows, and at what token cost, as the batch size varies.

Runs the real openai client over HTTP against the scripted oracle server. Three latency
models per batch size:
  overhead   no server delay: edgeloop's own cost (render, HTTP, parse, validate)
  fixed      a set delay per request (--latency-ms, default 50)
  decode     the fixed delay plus --per-token-ms per completion token (default 5, about a
             small model on one GPU), since a real model's time grows with its answer

    .venv/bin/python tests/bench/bench_labeler.py [--windows 100] [--latency-ms 50] [--per-token-ms 5]

Prints a table; it is a benchmark, not a pass/fail test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.support

import openai
from prometheus_client import CollectorRegistry

from llm_agents.client import LLMClient
from llm_agents.labeling.labeler import Labeler
from llm_agents.metrics import build_llm_metrics
from tests.support.scripted_server import ScriptedLLM, serve  # noqa: E402
from tests.support.scripted_windows import DETECTOR_CLASSES, synthetic_windows  # noqa: E402

BATCH_SIZES = (1, 5, 10, 20, 50)


def decode_delay(llm: ScriptedLLM, per_token_s: float) -> None:
    """Make the oracle's answer take per_token_s per completion token (len/4) to 'generate'."""
    oracle = llm.handler("window_labels")

    def slow_oracle(request: dict, prompt: str) -> dict:
        answer = oracle(request, prompt)
        time.sleep(len(json.dumps(answer)) / 4 * per_token_s)
        return answer

    llm.handle("window_labels", slow_oracle)


def run(batch_size: int, n_windows: int, latency_s: float, per_token_s: float) -> dict[str, float]:
    data = synthetic_windows({"benign": n_windows // 2, "dos": n_windows // 4,
                              "portscan": n_windows - n_windows // 2 - n_windows // 4}, seed=5)
    with serve("oracle", truth=data.truth, delay_s=latency_s) as llm:
        if per_token_s:
            decode_delay(llm, per_token_s)
        oa = openai.OpenAI(base_url=llm.base_url, api_key="bench", max_retries=0)
        client = LLMClient(oa, "scripted", metrics=build_llm_metrics(CollectorRegistry()),
                           max_requests=10**6, max_tokens=10**9)
        labeler = Labeler(client, DETECTOR_CLASSES, batch_size=batch_size)
        labeler.label_batch(data.windows[:1])  # warm up: connection, lazy imports
        llm.counts.clear()
        t0 = time.perf_counter()
        out = labeler.label_batch(data.windows)
        wall = time.perf_counter() - t0
    n = len(out.proposals)
    assert n == n_windows, f"{n_windows - n} windows not labelled: {out.failed or out.unanswered}"
    return {"windows_per_s": n / wall, "prompt_tok": out.prompt_tokens / n,
            "completion_tok": out.completion_tokens / n, "requests": out.requests, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--per-token-ms", type=float, default=5.0)
    args = ap.parse_args()
    models = (("overhead", 0.0, 0.0), ("fixed", args.latency_ms / 1e3, 0.0),
              ("decode", args.latency_ms / 1e3, args.per_token_ms / 1e3))
    print(f"{args.windows} windows of 8 flows, scripted oracle over HTTP; fixed latency "
          f"{args.latency_ms:g} ms, decode {args.per_token_ms:g} ms/completion token")
    print(f"{'model':<9} {'batch':>5} {'requests':>8} {'windows/s':>10} {'prompt tok/win':>15} "
          f"{'compl tok/win':>14} {'wall s':>7}")
    for name, latency, per_token in models:
        for size in BATCH_SIZES:
            r = run(size, args.windows, latency, per_token)
            print(f"{name:<9} {size:>5} {r['requests']:>8.0f} {r['windows_per_s']:>10.1f} "
                  f"{r['prompt_tok']:>15.0f} {r['completion_tok']:>14.0f} {r['wall_s']:>7.2f}")


if __name__ == "__main__":
    main()
