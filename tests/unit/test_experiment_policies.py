"""`edgeloop experiment policies` end to end against the scripted OpenAI-compatible server."""
from __future__ import annotations

import csv
import json
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from llm_agents.blueprints import ExpertLibrary, Sandbox, SandboxLimits
from llm_agents.client import LLMClient
from llm_agents.experiments.policies import ARMS, build_intents, policies, run_experiment
from llm_agents.prompts import parse_data_blocks
from llm_agents.experiments.twin_scenarios import SCENARIOS, load_scenarios, synthetic_scenario
from tests.support.scripted_server import serve

from llm_agents.blueprints.sandbox import sandbox_available

LIB = ExpertLibrary.load()
_OK, _WHY = sandbox_available()
needs_sandbox = pytest.mark.skipif(not _OK, reason=f"the sandbox cannot confine code here: {_WHY}")

NAIVE_CODE = '''import numpy as np


def make_policy(flows, windows, intent, class_names, alert_threshold):
    if intent["sources"]:
        return {"policy": {"block_sources": list(intent["sources"])}}
    alerting = (windows["predicted"] != class_names[0]) & (windows["confidence"] >= alert_threshold)
    return {"policy": {"block_sources": sorted(set(windows["key"][alerting].tolist()))}}
'''


def scripted_model(llm) -> None:
    """Handlers for the four policy tasks: the expert library behind the blueprint tasks, naive
    single-shot answers behind the direct and coder-only tasks."""

    def blueprint(body: dict[str, Any], prompt: str) -> dict[str, Any]:
        intent = parse_data_blocks(prompt)["intent"]
        return LIB.get(intent["action"]).draft.model_dump(mode="json")

    def review(body, prompt):
        return {"approved": True, "issues": [], "revised": None}

    def step_code(body, prompt):
        blocks = parse_data_blocks(prompt)
        if "step" not in blocks:
            return {"function_name": "make_policy", "source": NAIVE_CODE, "notes": "block what alerts"}
        name = blocks["step"]["name"]
        return {"function_name": name, "source": LIB.get(blocks["blueprint"]["name"]).code[name], "notes": ""}

    def policy(body, prompt):
        it = parse_data_blocks(prompt)["intent"]
        act = it["action"]
        return {"block_sources": it["sources"] if act == "block_source" else [],
                "rate_limit_sources": [{"sources": it["sources"], "packets_per_s": 100}]
                if act == "rate_limit_source" and it["sources"] else [],
                "class_thresholds": [{"attack": it["attack"], "min_confidence": 0.9}]
                if act == "raise_class_threshold" and it["attack"] else [],
                "suppress_alerts": [], "isolate_hosts": it["hosts"] if act == "isolate_host" else [],
                "allow_services": it["services"] if act == "allow_list_service" else [], "expires_s": 3600}

    for name, fn in (("blueprint", blueprint), ("blueprint_review", review), ("step_code", step_code),
                     ("policy", policy)):
        llm.handle(name, fn)


def test_intents_cover_every_scenario_and_action():
    intents = []
    for name in SCENARIOS:
        sc = synthetic_scenario(name, n_benign=300)
        intents += build_intents(sc, sc.twin())
    assert len(intents) >= 20 and len({i.intent_id for i in intents}) == len(intents)
    assert {i.intent.action for i in intents} == {"block_source", "rate_limit_source", "raise_class_threshold",
                                                  "isolate_host", "allow_list_service"}
    assert {i.intent.origin for i in intents} == {"operator", "alert"}
    assert all(i.intent.required_kpis() for i in intents)


@needs_sandbox
def test_all_four_arms_against_the_scripted_server(tmp_path):
    scenario = synthetic_scenario("syn_scan", n_benign=600)
    with serve("oracle", model="scripted-policy-model") as llm:
        scripted_model(llm)
        client = LLMClient(openai.OpenAI(base_url=llm.base_url, api_key="test", max_retries=0), "scripted-policy-model")
        res = run_experiment([scenario], client, max_rounds=2, max_intents=3,
                             sandbox=Sandbox(SandboxLimits(wall_s=10)))
        tasks = {k for k in llm.counts if k.startswith("task:")}
    assert tasks == {"task:blueprint", "task:blueprint_review", "task:step_code", "task:policy"}
    assert res.model == "scripted-policy-model" and res.arms_run == list(ARMS)
    by_arm = {s["arm"]: s for s in res.summary()}
    assert all(by_arm[a]["intents"] == 3 for a in ARMS)
    assert by_arm["library"]["succeeded"] == 3 and by_arm["blueprint"]["succeeded"] == 3
    assert by_arm["direct"]["llm_calls"] == 3 and by_arm["library"]["llm_calls"] == 0
    assert by_arm["blueprint"]["llm_calls"] >= 3 * (2 + 3)  # design + review + one call per step
    md = res.to_markdown()
    assert "model: scripted-policy-model" in md and "| library | 3 | 3 | 100.0% |" in md
    files = res.write(tmp_path)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 12 and {r["model"] for r in rows} == {"scripted-policy-model"}
    assert json.loads((tmp_path / "results.json").read_text())["data"] == "synthetic+simulated-detector"
    assert {f.name for f in files} == {"summary.md", "summary.csv", "results.csv", "results.json"}


@needs_sandbox
def test_the_command_runs_offline_with_the_library_alone(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(policies, ["--lab-dir", str(tmp_path / "no-lab"), "--out", str(out),
                                           "--max-intents", "2", "--arms", "library,direct"],
                                env={"EDGELOOP_LLM_BASE_URL": ""})
    assert result.exit_code == 0, result.output
    assert "| library | 2 | 2 | 100.0% |" in result.output and "| direct | 0 | 0 | not run |" in result.output
    assert "offline (no LLM endpoint configured)" in (out / "summary.md").read_text()


def test_unknown_arms_are_refused(tmp_path):
    result = CliRunner().invoke(policies, ["--arms", "magic", "--out", str(tmp_path)], env={"EDGELOOP_LLM_BASE_URL": ""})
    assert result.exit_code != 0 and "unknown arms" in result.output


def test_lab_captures_are_used_when_present(tmp_path):
    sc = synthetic_scenario("fin_scan", n_benign=300)
    capture = sc.flows.drop(columns=["flow_id"]).assign(label=sc.flows["label"].str.upper())
    capture.to_parquet(tmp_path / "fin_scan.parquet")
    (loaded,) = load_scenarios(tmp_path)
    assert loaded.source == "lab:fin_scan.parquet+simulated-detector"
    assert (loaded.name, loaded.attacker, loaded.victim) == ("fin_scan", sc.attacker, sc.victim)
    assert loaded.dns is not None and (loaded.dns.port, loaded.dns.proto) == (53, "udp")
    assert loaded.web.port in (80, 443) and loaded.twin().truth == "labels"
    assert load_scenarios(tmp_path / "missing")[0].source == "synthetic+simulated-detector"
