"""The core: LLM client layer, labeling and acceptance, synthesis, blueprints, twin, policies.

Names load their module (and openai, sklearn, ...) on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LLMClient": "llm_agents.client", "LLMResult": "llm_agents.client",
    "LLMError": "llm_agents.errors", "LLMRateLimited": "llm_agents.errors", "LLMTimeout": "llm_agents.errors",
    "LLMUnavailable": "llm_agents.errors", "LLMBadRequest": "llm_agents.errors",
    "LLMBadOutput": "llm_agents.errors", "LLMBudgetExceeded": "llm_agents.errors",
    "build_llm_metrics": "llm_agents.metrics",
    "Labeler": "llm_agents.labeler", "LabelProposal": "llm_agents.labeler",
    "judge": "llm_agents.acceptance", "AcceptancePolicy": "llm_agents.acceptance",
    "Synthesizer": "llm_agents.synthesizer", "make_sklearn_evaluator": "llm_agents.sklearn_eval",
    "check_flows": "llm_agents.constraints", "score_batch": "llm_agents.fidelity",
    "smote_windows": "llm_agents.baselines", "KDEWindowGenerator": "llm_agents.baselines",
    "run_experiment": "llm_agents.experiment_augment",
    "DigitalTwin": "llm_agents.twin", "Policy": "contracts.policy_model",
    "PolicyProposal": "contracts.policy_model",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llm_agents' has no attribute {name!r}")
