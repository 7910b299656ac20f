"""The digital twin's KPIs: the catalogue of names, the report, and how targets are compared.

    >>> report.kpis["attack_flows_stopped_frac"], report.services, report.truth
    >>> report.check(blueprint.kpis)     # ["KPI benign_flows_hurt_frac = 0.04, target <= 0.01"]
"""
from __future__ import annotations

from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict

# Every numeric KPI the twin reports; blueprint KPIs must name one of these.
KPI_CATALOGUE: dict[str, str] = {
    "flows_total": "flows in the time range",
    "attack_flows": "flows whose truth is an attack",
    "benign_flows": "flows whose truth is benign",
    "attack_flows_stopped": "attack flows stopped by the policy (fractional for rate limits)",
    "attack_flows_stopped_frac": "attack_flows_stopped / attack_flows (1 when there are none)",
    "attack_bytes_stopped": "attack bytes stopped",
    "attack_bytes_stopped_frac": "attack_bytes_stopped / attack bytes (1 when there are none)",
    "attack_packets_stopped_frac": "attack packets stopped / attack packets (1 when there are none)",
    "benign_flows_hurt": "benign flows stopped by the policy (collateral)",
    "benign_flows_hurt_frac": "benign_flows_hurt / benign_flows",
    "benign_bytes_hurt": "benign bytes stopped",
    "benign_bytes_hurt_frac": "benign_bytes_hurt / benign bytes",
    "alerts_before": "alerting windows without the policy",
    "alerts_after": "alerting windows with the policy",
    "alert_reduction_frac": "1 - alerts_after / alerts_before (0 when there were none)",
    "true_alerts_before": "alerting windows whose truth is an attack, without the policy",
    "true_alerts_after": "alerting windows whose truth is an attack, with the policy",
    "true_alerts_kept_frac": "true_alerts_after / true_alerts_before (1 when there were none)",
    "false_alerts_before": "alerting windows whose truth is benign, without the policy",
    "false_alerts_after": "alerting windows whose truth is benign, with the policy",
    "false_alert_reduction_frac": "1 - false_alerts_after / false_alerts_before (0 when none)",
    "services_affected": "services (dst address, port, protocol) with benign flows hurt",
}


class ServiceImpact(BaseModel):
    model_config = ConfigDict(frozen=True)

    dst_ip: str
    dst_port: int
    proto: int
    benign_flows_hurt: float
    benign_bytes_hurt: float


class TwinReport(BaseModel):
    """What a policy did on the twin: numeric KPIs, the services it hurt, and the caveats."""

    model_config = ConfigDict(frozen=True)

    kpis: dict[str, float]
    services: list[ServiceImpact]
    truth: str  # "labels" or "detector"
    notes: list[str]
    twin: str
    eval_seconds: float

    def check(self, targets: Iterable[Any]) -> list[str]:
        """Each target (anything with name, comparator, target) that the KPIs miss, as a sentence."""
        misses = []
        for t in targets:
            value = self.kpis.get(t.name)
            if value is None:
                misses.append(f"KPI {t.name!r} is not one the twin reports")
            elif not compare(value, t.comparator, t.target):
                misses.append(f"KPI {t.name} = {value:.4g}, target {t.comparator} {t.target:g}")
        return misses


def compare(value: float, comparator: str, target: float) -> bool:
    eps = 1e-9
    return {"<=": value <= target + eps, ">=": value >= target - eps, "<": value < target,
            ">": value > target, "==": abs(value - target) <= eps}[comparator]


def frac(num: float, den: float, empty: float) -> float:
    return float(num / den) if den > 0 else empty
