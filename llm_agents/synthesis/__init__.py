"""Synthetic training windows, checked against real data before any reaches the store.

    synthesizer   rounds of generate -> check -> score -> keep, per class below its target
    prompt        the synthesis prompt and the JSON shape the LLM must answer in
    constraints   physical checks and repairs of generated flows (ports, sizes, timing)
    fidelity      distances between synthetic and real feature distributions
    baselines     SMOTE and KDE generators, the non-LLM arms synthesis is compared with
    sklearn_eval  the quick classifier that says whether kept windows help
"""
from __future__ import annotations

from llm_agents._lazy import lazy_surface

_EXPORTS = {
    "Synthesizer": "llm_agents.synthesis.synthesizer",
    "make_sklearn_evaluator": "llm_agents.synthesis.sklearn_eval",
    "check_flows": "llm_agents.synthesis.constraints", "repair_flows": "llm_agents.synthesis.constraints",
    "score_batch": "llm_agents.synthesis.fidelity",
    "smote_windows": "llm_agents.synthesis.baselines", "KDEWindowGenerator": "llm_agents.synthesis.baselines",
}
__getattr__, __all__ = lazy_surface(__name__, _EXPORTS)
