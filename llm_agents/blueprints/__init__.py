"""Blueprints: Hermes-style plans that turn an intent into a policy validated on the digital twin.

    intent ─► Designer (LLM + self-review, or the expert library) ─► Blueprint
           ─► Coder (one function per step) ─► Sandbox (on the twin's read-only view)
           ─► Validator (schema, code, run, policy, KPIs) ─► feedback, bounded rounds
           ─► BlueprintRepository (validated blueprints, reused for similar intents)

    >>> loop = BlueprintLoop(Designer(llm), Coder(llm), Sandbox(), BlueprintRepository(path))
    >>> outcome = loop.run(parse_intent("block 10.9.0.66"), twin)
"""
from llm_agents.blueprints.coder import Coder, CodeResult, StepCodeAnswer, check_source, code_sha256
from llm_agents.blueprints.designer import BlueprintReview, DesignResult, Designer
from llm_agents.blueprints.errors import BlueprintError, CodeError, DesignError
from llm_agents.blueprints.library import EXPERTS, ExpertBlueprint, ExpertLibrary, merge_kpis
from llm_agents.blueprints.loop import BlueprintLoop, LoopOutcome, RoundRecord, Validation, Validator
from llm_agents.blueprints.repository import BlueprintRecord, BlueprintRepository
from llm_agents.blueprints.sandbox import Sandbox, SandboxLimits, SandboxResult, StepSource
from llm_agents.blueprints.schema import (ACTIONS, BLUEPRINT_SCHEMA, GIVEN, KPI, Blueprint, BlueprintDraft,
                                          Intent, Step, intent_from_alert, parse_intent, render_markdown,
                                          render_yaml)

__all__ = ["ACTIONS", "BLUEPRINT_SCHEMA", "EXPERTS", "GIVEN", "KPI", "Blueprint", "BlueprintDraft",
           "BlueprintError", "BlueprintLoop", "BlueprintRecord", "BlueprintRepository", "BlueprintReview",
           "CodeError", "CodeResult", "Coder", "DesignError", "DesignResult", "Designer", "ExpertBlueprint",
           "ExpertLibrary", "Intent", "LoopOutcome", "RoundRecord", "Sandbox", "SandboxLimits", "SandboxResult",
           "Step", "StepCodeAnswer", "StepSource", "Validation", "Validator", "check_source", "code_sha256",
           "intent_from_alert", "merge_kpis", "parse_intent", "render_markdown", "render_yaml"]
