"""The digital twin: recorded flows and verdicts replayed under a candidate policy.

    model  DigitalTwin: apply a policy to a time range, vectorised, deterministic
    kpis   the KPI catalogue, service impact and the comparison of two reports

Blueprints are scored on it and policy proposals carry its report; it imports nothing of
the core but the policy contract.
"""
from __future__ import annotations

from llm_agents._lazy import lazy_surface

_EXPORTS = {
    "DigitalTwin": "llm_agents.twin.model", "detections_frame": "llm_agents.twin.model",
    "KPI_CATALOGUE": "llm_agents.twin.kpis", "TwinReport": "llm_agents.twin.kpis",
    "compare": "llm_agents.twin.kpis",
}
__getattr__, __all__ = lazy_surface(__name__, _EXPORTS)
