"""Labelling and acceptance: from an uncertain window to a stored label or a review item.

    labeler     the LLM proposes a class per window (prompt, parsing, budget)
    acceptance  the rules a proposal must pass (agreement with the detector, neighbours,
                the novel-class cluster rule); the LLM's text never decides alone
    decider     one batch, end to end: propose, judge, store, park, ledger (crash-safe order)
    review      the queue a person works with `edgeloop review`, and their verdicts
"""
from __future__ import annotations

from llm_agents._lazy import lazy_surface

_EXPORTS = {
    "Labeler": "llm_agents.labeling.labeler", "LabelProposal": "llm_agents.labeling.labeler",
    "judge": "llm_agents.labeling.acceptance", "AcceptancePolicy": "llm_agents.labeling.acceptance",
    "AgentState": "llm_agents.labeling.decider", "Decider": "llm_agents.labeling.decider",
    "ReviewQueue": "llm_agents.labeling.review", "decide": "llm_agents.labeling.review",
}
__getattr__, __all__ = lazy_surface(__name__, _EXPORTS)
