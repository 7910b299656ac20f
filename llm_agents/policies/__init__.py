"""Policy proposals, from an alert to a person's approval and `policies.active`.

    alert_proposer  the agent loop: alerts in, one proposal per incident
    proposals       intent -> blueprint loop on the twin -> PolicyProposal; approve, revoke
    store           durable proposals and their state (proposed, approved, active, revoked)
    cli             `edgeloop policy list|show|approve|revoke`
"""
from __future__ import annotations

from llm_agents._lazy import lazy_surface

_EXPORTS = {
    "AlertProposer": "llm_agents.policies.alert_proposer",
    "propose_from_alerts": "llm_agents.policies.proposals", "approve_policy": "llm_agents.policies.proposals",
    "revoke_policy": "llm_agents.policies.proposals",
    "PolicyStore": "llm_agents.policies.store", "PolicyStoreError": "llm_agents.policies.store",
}
__getattr__, __all__ = lazy_surface(__name__, _EXPORTS)
