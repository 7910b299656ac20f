"""The core, by stage. Names load their module (and openai, sklearn, ...) on first use.

    client, errors, metrics, local_llm   the LLM client layer (any OpenAI-compatible endpoint)
    labeling/     labeler, acceptance, decider, review: uncertain window -> label or review item
    synthesis/    synthesizer, prompt, constraints, fidelity, baselines: checked synthetic data
    blueprints/   design, code and sandbox-run policy programs
    twin/         the digital twin blueprints and proposals are scored on
    policies/     alert -> proposal -> a person's approval -> policies.active
    experiments/  offline studies behind `edgeloop experiment` (nothing at run time uses them)
    agent, retrain, store, audit, window_frames   the running agent and its durable state
    cli, llm_cli, baseline_cli, sandbox_cli       the `edgeloop` commands of the core
"""
from __future__ import annotations

from llm_agents._lazy import lazy_surface

_EXPORTS = {
    "LLMClient": "llm_agents.client", "LLMResult": "llm_agents.client",
    "LLMError": "llm_agents.errors", "LLMRateLimited": "llm_agents.errors", "LLMTimeout": "llm_agents.errors",
    "LLMUnavailable": "llm_agents.errors", "LLMBadRequest": "llm_agents.errors",
    "LLMBadOutput": "llm_agents.errors", "LLMBudgetExceeded": "llm_agents.errors",
    "build_llm_metrics": "llm_agents.metrics",
    "Labeler": "llm_agents.labeling.labeler", "LabelProposal": "llm_agents.labeling.labeler",
    "judge": "llm_agents.labeling.acceptance", "AcceptancePolicy": "llm_agents.labeling.acceptance",
    "Synthesizer": "llm_agents.synthesis.synthesizer", "make_sklearn_evaluator": "llm_agents.synthesis.sklearn_eval",
    "check_flows": "llm_agents.synthesis.constraints", "score_batch": "llm_agents.synthesis.fidelity",
    "smote_windows": "llm_agents.synthesis.baselines", "KDEWindowGenerator": "llm_agents.synthesis.baselines",
    "run_experiment": "llm_agents.experiments.augment",
    "DigitalTwin": "llm_agents.twin.model", "Policy": "contracts.policy_model",
    "PolicyProposal": "contracts.policy_model",
}
__getattr__, __all__ = lazy_surface(__name__, _EXPORTS)
