"""The acceptance gates against a real model over whole captures: every uncertain window the
shipped detector sends from each capture (with a 2% audit sample of confident ones) goes
through the agent's Decider and the model at EDGELOOP_LLM_BASE_URL, or, without one, the
local SmolLM2 that this script starts (`llm_agents.local_llm`). The acceptance rules judge
against the lab's second training capture as the reference set.

Prints, per capture: windows, accepted (and how many of them wrong, by the capture's own
labels), parked by reason, known (already decided), windows still to retry, seconds and
seconds per window. A wrong
accepted label is what the gates exist to stop; the script exits 1 if there is any.

    .venv/bin/python tests/bench/bench_local_llm_gates.py                 # 30 windows from each capture (~10 min)
    .venv/bin/python tests/bench/bench_local_llm_gates.py --limit 0       # every window: 3,316, ~4 h on 2 cores
    .venv/bin/python tests/bench/bench_local_llm_gates.py --limit 40 --captures lab-eval,ndpi-test
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # tests.support

import openai  # noqa: E402
import pandas as pd  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from inference.windowing import window_label  # noqa: E402
from llm_agents.client import LLMClient  # noqa: E402
from llm_agents.labeling.decider import AgentState, Decider  # noqa: E402
from llm_agents.metrics import build_llm_metrics  # noqa: E402
from llm_agents.store import reference_frame  # noqa: E402
from tests.support.uncertain import uncertain_windows  # noqa: E402

CAPTURES = {"lab-eval": (REPO / "data" / "lab" / "eval.parquet", None),
            "lab-heldout": (REPO / "data" / "lab" / "heldout.parquet", None),
            "lab-heldout-b": (REPO / "data" / "lab" / "heldout-b.parquet", None),
            "ndpi-test": (REPO / "data" / "ndpi" / "flows.parquet", "test")}


def client(stack: ExitStack) -> tuple[LLMClient, str]:
    url = os.environ.get("EDGELOOP_LLM_BASE_URL")
    context = int(os.environ.get("EDGELOOP_LLM_CONTEXT_TOKENS", "0"))
    model = os.environ.get("EDGELOOP_LLM_MODEL", "")
    if not url:
        from llm_agents.local_llm import LocalLLM
        from streams.broker import free_port

        local = stack.enter_context(LocalLLM(free_port(), log_path=Path(tempfile.mkdtemp()) / "llama.log"))
        url, context, model = local.base_url, local.context, local.model
    oa = openai.OpenAI(base_url=url, api_key=os.environ.get("EDGELOOP_LLM_API_KEY", "unused"), max_retries=2)
    return LLMClient(oa, model, metrics=build_llm_metrics(CollectorRegistry()), timeout_s=180.0,
                     context_tokens=context, max_requests=10**6, max_tokens=10**9), f"{model or '?'} at {url}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captures", default=",".join(CAPTURES), help="comma-separated: " + ", ".join(CAPTURES))
    ap.add_argument("--limit", type=int, default=30,
                    help="at most this many windows per capture, spread evenly; 0: every window (default 30)")
    ap.add_argument("--audit", type=float, default=0.02, help="share of confident windows also sent (default 0.02)")
    ap.add_argument("--batch-size", type=int, default=2)
    args = ap.parse_args()
    names = [n.strip() for n in args.captures.split(",") if n.strip()]
    wrong_total = 0
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        llm, where = client(stack)
        print(f"model: {where}")
        print(f"{'capture':<14} {'windows':>7} {'accepted':>8} {'wrong':>5} {'parked':>6} {'known':>5} {'retry':>5} "
              f"{'seconds':>7} {'s/window':>8}  parked by reason")
        for name in names:
            path, split = CAPTURES[name]
            windows = uncertain_windows(path, args.limit or None, args.audit, split=split)
            truth = {w.window_id: window_label(f.label for f in w.flows) for w in windows}
            state = AgentState.open(Path(tmp) / name)
            state.store.append("reference", reference_frame(pd.read_parquet(REPO / "data" / "lab" / "train-2.parquet"),
                                                            source="lab-train"), note="lab train-2")
            t0 = time.perf_counter()
            decider = Decider(state, llm, batch_size=args.batch_size, verify_fraction=0.0)
            out = decider.decide(windows, attempts={}, max_attempts=1)
            took = time.perf_counter() - t0
            accepted = state.store.lookup([w.window_id for w in windows])
            wrong = {wid: (v["label"], truth[wid]) for wid, v in accepted.items() if v["label"] != truth[wid]}
            parked = Counter(i.reason for i in state.review.pending(100_000))
            wrong_total += len(wrong)
            known = sum(v == "known" for v in out.finished.values())
            print(f"{name:<14} {len(windows):>7} {len(accepted):>8} {len(wrong):>5} {sum(parked.values()):>6} "
                  f"{known:>5} {len(out.retry):>5} {took:>7.0f} {took / max(1, len(windows)):>8.1f}  {dict(parked)}")
            for wid, (got, right) in list(wrong.items())[:5]:
                print(f"    wrong: {wid} accepted as {got}, is {right}")
    return 1 if wrong_total else 0


if __name__ == "__main__":
    sys.exit(main())
