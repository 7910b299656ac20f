"""Offline experiments behind `edgeloop experiment`: nothing at run time imports them.

    augment         does synthetic data help? real-only vs SMOTE, KDE and LLM arms
    policies        proposed policies against library and direct ones on twin scenarios
    twin_scenarios  the lab scenarios as twin datasets (recorded, else synthetic)
    baseline        the site baseline against the agent's labels
    cli             the `edgeloop experiment` commands
"""
from __future__ import annotations

from llm_agents._lazy import lazy_surface

_EXPORTS = {
    "run_experiment": "llm_agents.experiments.augment", "AugmentConfig": "llm_agents.experiments.augment",
    "synthetic_scenario": "llm_agents.experiments.twin_scenarios",
}
__getattr__, __all__ = lazy_surface(__name__, _EXPORTS)
