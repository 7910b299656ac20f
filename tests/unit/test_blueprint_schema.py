"""The blueprint schema, intents, the expert library's data, rendering and the policy model."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from contracts.policy_model import Policy, PolicyProposal
from llm_agents.blueprints import (EXPERTS, KPI, Blueprint, BlueprintDraft, ExpertLibrary, Intent,
                                   check_source, intent_from_alert, parse_intent, render_markdown,
                                   render_yaml)
from llm_agents.blueprints.schema import kpi_problems

STEPS = [
    {"name": "pick", "kind": "functional", "inputs": ["intent"], "outputs": ["ips"],
     "formula": "ips = intent.sources", "explanation": "take what the operator named"},
    {"name": "emit", "kind": "operational", "inputs": ["ips"], "outputs": ["policy"],
     "formula": "policy = {block_sources: ips}", "explanation": "block them"},
]
KPIS = [{"name": "attack_flows_stopped_frac", "comparator": ">=", "target": 0.95, "why": "stop it"}]


def blueprint(steps=STEPS, kpis=KPIS, intent=None) -> Blueprint:
    intent = intent or Intent(text="block 10.9.0.66", action="block_source", sources=["10.9.0.66"])
    return Blueprint(name="bp", action="block_source", assumptions=["a: b"], steps=steps, kpis=kpis, intent=intent)


def test_blueprint_is_versioned_and_round_trips_as_json():
    bp = blueprint()
    doc = bp.dump()
    assert doc["schema"] == "edgeloop.blueprint/1"
    assert Blueprint.model_validate_json(json.dumps(doc)) == bp
    assert [s.kind for s in bp.steps] == ["functional", "operational"]


@pytest.mark.parametrize("steps, needle", [
    ([{**STEPS[0], "inputs": ["nowhere"]}, STEPS[1]], "neither given nor outputs"),
    ([STEPS[0]], "last step must be operational"),
    ([{**STEPS[0], "outputs": ["policy"]}, STEPS[1]], "only an operational step"),
    ([STEPS[0], {**STEPS[1], "name": "pick"}], "name used twice"),
    ([{**STEPS[0], "outputs": ["flows"]}, STEPS[1]], "overwrite given values"),
])
def test_dataflow_errors_are_named(steps, needle):
    with pytest.raises(ValidationError, match=needle):
        blueprint(steps=steps)


def test_kpis_must_be_ones_the_twin_reports():
    with pytest.raises(ValidationError, match="unknown KPI"):
        KPI(name="happiness", comparator=">=", target=1)


def test_a_blueprint_cannot_weaken_the_intents_targets():
    intent = Intent(text="x", action="block_source", sources=["10.9.0.66"],
                    targets=[KPI(name="attack_flows_stopped_frac", comparator=">=", target=0.99)])
    assert kpi_problems(blueprint(intent=intent)) == [
        "KPI attack_flows_stopped_frac target 0.95 is weaker than the intent's attack_flows_stopped_frac >= 0.99"]
    missing = Intent(text="x", action="block_source", sources=["10.9.0.66"])  # defaults: two KPIs
    assert any("benign_flows_hurt_frac" in p for p in kpi_problems(blueprint(intent=missing)))


def test_markdown_shows_intent_steps_and_kpis():
    md = render_markdown(blueprint())
    assert "**Intent** (operator): block 10.9.0.66" in md
    assert "### 2. `emit` (operational)" in md and "- formula: policy = {block_sources: ips}" in md
    assert "| attack_flows_stopped_frac | >= 0.95 | stop it |" in md


def test_yaml_is_valid_and_equal_to_the_json():
    yaml = pytest.importorskip("yaml")
    for name in EXPERTS:
        lib = ExpertLibrary.load()
        bp = lib.get(name).instantiate(parse_intent("block 10.9.0.66 port 80 'quoted': #x"))
        assert yaml.safe_load(render_yaml(bp)) == bp.dump()


def test_yaml_quotes_what_would_change_meaning():
    text = render_yaml(blueprint(intent=Intent(text="yes: no # comment", action="block_source")))
    assert 'text: "yes: no # comment"' in text
    assert "action: block_source" in text


@pytest.mark.parametrize("text, action, field, value", [
    ("stop the scan from 10.9.0.66 without hurting the web service", "block_source", "sources", ["10.9.0.66"]),
    ("rate-limit 10.9.0.0/24 to 50 pps", "rate_limit_source", "rate_pps", 50.0),
    ("isolate host 10.9.0.20 now", "isolate_host", "hosts", ["10.9.0.20"]),
    ("allow-list 10.9.0.10:53/udp", "allow_list_service", "services", [{"ip": "10.9.0.10", "port": 53, "proto": "udp"}]),
    ("too many false alerts of syn_scan, raise the threshold to 0.8", "raise_class_threshold", "attack", "syn_scan"),
])
def test_parse_intent(text, action, field, value):
    intent = parse_intent(text, classes=("syn_scan",))
    assert intent.action == action
    got = getattr(intent, field)
    assert (got if not isinstance(got, list) or not got or isinstance(got[0], str)
            else [s.model_dump() for s in got]) == value


def test_intent_from_an_alert_aggregate():
    alert = {"alert_id": "a1", "key": "10.9.0.66", "attack": "syn_flood", "windows": 9,
             "max_confidence": 0.97, "src_ips": ["10.9.0.66"]}
    intent = intent_from_alert(alert, "rate_limit_source")
    assert (intent.origin, intent.action, intent.sources, intent.attack) == (
        "alert", "rate_limit_source", ["10.9.0.66"], "syn_flood")
    assert [str(k) for k in intent.required_kpis()] == ["attack_packets_stopped_frac >= 0.5",
                                                        "benign_flows_hurt_frac <= 0.01"]
    assert intent_from_alert(alert, "isolate_host").hosts == ["10.9.0.66"]


def test_library_ships_every_expert_with_code_for_every_step():
    lib = ExpertLibrary.load()
    assert set(lib.names()) == set(EXPERTS)
    for name in EXPERTS:
        expert = lib.get(name)
        bp = expert.instantiate(Intent(text="t", action=name))
        assert bp.action == name
        for step in bp.steps:
            assert check_source(expert.code[step.name], step.name, list(step.inputs)) == []
        assert isinstance(BlueprintDraft.model_validate(expert.example()["blueprint"]), BlueprintDraft)


def test_check_source_reads_signature_and_imports():
    assert check_source("def f(a, b):\n    return {}", "f", ["b", "a"]) == []
    assert "no top-level" in check_source("def g(a):\n    return {}", "f", ["a"])[0]
    assert "parameters must be exactly" in check_source("def f(a, *rest):\n    return {}", "f", ["a"])[0]
    assert "imports ['subprocess']" in check_source("import subprocess\ndef f():\n    return {}", "f", [])[0]
    assert "syntax error" in check_source("def f(:\n", "f", [])[0]


def test_policy_parses_addresses_strictly_and_round_trips():
    p = Policy(block_sources=["10.9.0.66", "10.8.0.0/16"], isolate_hosts=["2001:db8::1"],
               rate_limit_sources=[{"sources": ["10.9.0.7"], "packets_per_s": 10}],
               class_thresholds=[{"attack": "syn_scan", "min_confidence": 0.8}],
               suppress_alerts=[{"key": "10.9.0.0/24"}],
               allow_services=[{"ip": "10.9.0.10", "port": 53, "proto": "udp"}], expires_s=600)
    again = Policy.model_validate_json(p.model_dump_json(by_alias=True))
    assert again == p and again.thresholds == {"syn_scan": 0.8}
    for bad in (["10.9.0.66/8"], ["example.com"], [" 10.9.0.66"], ["10.9.0.300"]):
        with pytest.raises(ValidationError):
            Policy(block_sources=bad)
    with pytest.raises(ValidationError):
        Policy(isolate_hosts=["10.9.0.0/24"])  # a host is one address
    with pytest.raises(ValidationError):
        Policy(suppress_alerts=[{}])
    with pytest.raises(ValidationError):
        Policy(class_thresholds=[{"attack": "a", "min_confidence": 0.5}, {"attack": "a", "min_confidence": 0.7}])


def test_proposal_is_self_contained_json():
    bp = blueprint()
    prop = PolicyProposal(intent=bp.intent.model_dump(mode="json", by_alias=True), blueprint=bp.dump(),
                          code_sha256="0" * 64, policy=Policy(block_sources=["10.9.0.66"]),
                          kpis={"attack_flows_stopped_frac": 1.0}, provenance="library:block_source",
                          created_ms=1)
    again = PolicyProposal.model_validate_json(prop.dump_json())
    assert again == prop and json.loads(prop.dump_json())["schema"] == "edgeloop.policy_proposal/1"
    assert Blueprint.model_validate(again.blueprint) == bp


@pytest.mark.parametrize("src", [
    "def f():\n    return {'m': __import__('os')}",
    "def f():\n    import importlib\n    return {}",
    "def f():\n    return {'m': ().__class__.__mro__[1].__subclasses__()}",
    "def f():\n    return {'b': __builtins__}",
    "def f():\n    return {'e': eval('1')}",
    "def f():\n    return {'o': open('/etc/passwd').read()}",
    "def f():\n    return {'g': getattr((), '__cl' + 'ass__')}",
    "def f():\n    x = '__subclasses__'\n    return {}",
    "def f():\n    from . import sibling\n    return {}",
    "def f():\n    from os import path\n    return {}",
    "def f(flows):\n    return {'c': flows.__class__}",
    "def f():\n    import numpy.ctypeslib as c\n    return {'c': c.ctypes}",
    "def f():\n    import numpy as np\n    return {'c': np.ctypeslib}",
    "def f():\n    from numpy import testing\n    return {}",
])
def test_check_source_sees_every_form_of_import_and_escape(src):
    inputs = ["flows"] if "f(flows)" in src else []
    assert check_source(src, "f", inputs), src
