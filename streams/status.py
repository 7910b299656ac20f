"""`edgeloop status`: the health of running edgeloop services, read from their own /metrics.

    $ edgeloop status --target node-a:9400 --target node-a:9401 --target core:9391 \
        --target node-a:9380 --target node-a:9390        # a sensor and the enforcer

Each target is scraped twice, `--interval` seconds apart, so rates (flows/s, dead
letters/s, the uncertain share, the LLM failure share) describe what the service is doing
now rather than since it started. Each service is recognised by what it exports:
detectors (flows in), sensors (flows the broker acknowledged), enforcers (policies in
force, refused) and the agent (labels; policies waiting for approval). No Prometheus is needed: this is the view an operator
gets on a node with nothing else installed. The exit status is 0 when every target is
up and inside the thresholds, 1 otherwise, so scripts and probes can use it.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

import click
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

# name -> [(labels, value)]: one scrape of one target.
Scrape = dict[str, list[tuple[dict[str, str], float]]]


@dataclass(frozen=True)
class Thresholds:
    """Above any of these a target is unhealthy."""

    max_lag: float = 10_000  # messages behind on the flows topic, all partitions
    max_uncertain: float = 0.5  # share of windows scored uncertain during the interval
    max_deadletters_per_s: float = 1.0
    max_llm_failure_ratio: float = 0.25  # failed LLM calls over all calls during the interval


@dataclass
class Health:
    """What one target looks like now; None where the target does not export the metric."""

    target: str
    up: bool
    service: str = "?"
    flows_per_s: float | None = None
    lag: float | None = None
    uncertain_ratio: float | None = None
    deadletters: float | None = None
    deadletters_per_s: float | None = None
    model_version: str | None = None
    llm_failures: float | None = None
    llm_failure_ratio: float | None = None
    policies: str | None = None  # enforcer: in force / refused; agent: waiting for approval
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.up and not self.problems


def parse_exposition(text: str) -> Scrape:
    """The samples of a Prometheus text exposition, by sample name."""
    out: Scrape = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def scrape(target: str, timeout_s: float = 3.0) -> Scrape:
    """Fetch and parse http://<target>/metrics; raises OSError (URLError) when unreachable."""
    url = target if "://" in target else f"http://{target}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return parse_exposition(r.read().decode("utf-8", "replace"))


def total(s: Scrape, name: str, where: Callable[[dict[str, str]], bool] = lambda _: True) -> float | None:
    """Sum of a metric's samples (matching `where`), None when the target lacks the metric."""
    if name not in s:
        return None
    return sum(v for labels, v in s[name] if where(labels))


def _delta(a: Scrape, b: Scrape, name: str, where: Callable[[dict[str, str]], bool] = lambda _: True) -> float | None:
    # A labelled counter may first appear between the two scrapes: it counts from 0.
    after = total(b, name, where)
    if after is None:
        return None
    before = total(a, name, where) or 0.0
    d = after - before
    return d if d >= 0 else None  # a counter went down: the process restarted in between


def _not_audit(labels: dict[str, str]) -> bool:
    return labels.get("reason") != "audit"


def service_of(s: Scrape) -> str:
    if "edgeloop_flows_in_total" in s:
        return "detector"
    if "edgeloop_sensor_flows_sent_total" in s:
        return "sensor"
    if "edgeloop_enforcer_policies_enforced" in s:
        return "enforcer"
    if any(n.startswith(("edgeloop_agent_", "edgeloop_llm_")) for n in s):
        return "agent"
    return "edgeloop" if any(n.startswith("edgeloop_") for n in s) else "?"


def assess(target: str, first: Scrape, second: Scrape, seconds: float,
           limits: Thresholds = Thresholds()) -> Health:
    """Health of one target from two scrapes `seconds` apart (pure: no I/O)."""
    h = Health(target=target, up=True, service=service_of(second))

    def per_s(d: float | None) -> float | None:
        return None if d is None or seconds <= 0 else d / seconds

    flows = "edgeloop_sensor_flows_sent_total" if h.service == "sensor" else "edgeloop_flows_in_total"
    h.flows_per_s = per_s(_delta(first, second, flows))
    h.lag = total(second, "edgeloop_consumer_lag_messages")
    scored = _delta(first, second, "edgeloop_windows_scored_total")
    if scored:
        unsure = (_delta(first, second, "edgeloop_uncertain_windows_total", _not_audit) or 0.0) + \
                 (_delta(first, second, "edgeloop_uncertain_rate_limited_total") or 0.0)
        h.uncertain_ratio = unsure / scored
    h.deadletters = total(second, "edgeloop_deadletter_records_total")
    if h.deadletters is None and h.service in ("detector", "enforcer", "agent"):
        h.deadletters = 0.0  # labelled: absent until the first dead letter
    h.deadletters_per_s = per_s(_delta(first, second, "edgeloop_deadletter_records_total"))
    versions = [lbl.get("version", "") for lbl, v in second.get("edgeloop_model_info", []) if v == 1]
    h.model_version = ",".join(sorted(versions)) or None
    h.llm_failures = total(second, "edgeloop_llm_failures_total")
    calls = _delta(first, second, "edgeloop_llm_requests_total")
    if calls:
        errors = _delta(first, second, "edgeloop_llm_requests_total", lambda lb: lb.get("outcome") == "error")
        h.llm_failure_ratio = (errors or 0.0) / calls
    h.policies = policies_of(second)
    h.problems = problems(h, limits, refused=_delta(first, second, "edgeloop_model_swaps_refused_total"))
    h.problems += service_problems(first, second)
    return h


def policies_of(s: Scrape) -> str | None:
    """What a service knows of policies: an enforcer's table, the agent's waiting proposals."""
    enforced = total(s, "edgeloop_enforcer_policies_enforced")
    if enforced is not None:
        refused = total(s, "edgeloop_enforcer_policies_refused_total") or 0.0
        return f"{enforced:.0f} enforced, {refused:.0f} refused"
    waiting = total(s, "edgeloop_policies", lambda lb: lb.get("state") == "proposed")
    if waiting is None:
        return None
    age = total(s, "edgeloop_policy_oldest_proposed_age_seconds") or 0.0
    return f"{waiting:.0f} awaiting approval" + (f" (oldest {age / 60:,.0f} min)" if waiting else "")


def service_problems(first: Scrape, second: Scrape) -> list[str]:
    """Sensor and enforcer failures during the interval; an agent that cannot propose policies."""
    out = []
    lost = _delta(first, second, "edgeloop_sensor_flows_lost_total")
    if lost:
        out.append(f"{lost:,.0f} flows lost (Kafka refused their messages)")
    failed = _delta(first, second, "edgeloop_enforcer_reconciles_total", lambda lb: lb.get("outcome") == "error")
    if failed:
        out.append("nftables apply failing (previous table in force)")
    refused = _delta(first, second, "edgeloop_enforcer_policies_refused_total")
    if refused:
        out.append(f"{refused:.0f} approved policies refused")
    if total(second, "edgeloop_agent_sandbox_available") == 0:
        out.append("not proposing policies: the blueprint sandbox cannot start here (agent only labels)")
    return out


def problems(h: Health, limits: Thresholds, refused: float | None = None) -> list[str]:
    out = []
    if h.lag is not None and h.lag > limits.max_lag:
        out.append(f"lag {h.lag:,.0f} > {limits.max_lag:,.0f} messages")
    if h.uncertain_ratio is not None and h.uncertain_ratio > limits.max_uncertain:
        out.append(f"uncertain {h.uncertain_ratio:.0%} > {limits.max_uncertain:.0%}")
    if h.deadletters_per_s is not None and h.deadletters_per_s > limits.max_deadletters_per_s:
        out.append(f"dead letters {h.deadletters_per_s:.1f}/s > {limits.max_deadletters_per_s:g}/s")
    if h.llm_failure_ratio is not None and h.llm_failure_ratio > limits.max_llm_failure_ratio:
        out.append(f"LLM failures {h.llm_failure_ratio:.0%} > {limits.max_llm_failure_ratio:.0%}")
    if refused:
        out.append(f"{refused:.0f} model release(s) refused")
    return out


def check(targets: list[str], interval_s: float = 2.0, timeout_s: float = 3.0,
          limits: Thresholds = Thresholds()) -> list[Health]:
    """Scrape every target twice, `interval_s` apart, in parallel; one Health per target."""
    def safe(t: str) -> Scrape | str:
        try:
            return scrape(t, timeout_s)
        except (OSError, ValueError) as exc:  # URLError is an OSError; a bad exposition a ValueError
            reason = getattr(exc, "reason", exc)
            return getattr(reason, "strerror", None) or str(reason)

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(targets)))) as pool:
        t0 = time.monotonic()
        first = list(pool.map(safe, targets))
        time.sleep(max(0.0, interval_s - (time.monotonic() - t0)))
        t1 = time.monotonic()
        second = list(pool.map(safe, targets))
    seconds = max(t1 - t0, 1e-3)
    out = []
    for t, a, b in zip(targets, first, second):
        if isinstance(b, str):
            out.append(Health(target=t, up=False, problems=[f"down: {b}"]))
        else:
            out.append(assess(t, a if isinstance(a, dict) else {}, b, seconds, limits))
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(healths: list[Health]) -> Table:
    t = Table(title="edgeloop status")
    for col in ("service", "target", "state", "flows/s", "lag", "uncertain", "dead letters",
                "model", "LLM failures", "policies", "problems"):
        t.add_column(col, overflow="fold")
    for h in healths:
        state = "[green]ok[/]" if h.healthy else ("[red]down[/]" if not h.up else "[yellow]unhealthy[/]")
        dl = "-" if h.deadletters is None else f"{h.deadletters:,.0f}" + (
            "" if h.deadletters_per_s is None else f" (+{h.deadletters_per_s:.1f}/s)")
        llm = "-" if h.llm_failures is None else \
            f"{h.llm_failures:,.0f}" + ("" if h.llm_failure_ratio is None else f" ({h.llm_failure_ratio:.0%} now)")
        t.add_row(h.service, h.target, state, _fmt(h.flows_per_s, ",.0f"), _fmt(h.lag, ",.0f"),
                  _fmt(h.uncertain_ratio, ".1%"), dl, h.model_version or "-", llm, h.policies or "-",
                  "; ".join(h.problems))
    return t


def _default_targets() -> list[str]:
    from contracts.errors import EdgeloopError
    from streams.settings import load_settings

    try:
        return [f"127.0.0.1:{load_settings().metrics_port}"]
    except EdgeloopError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc


@click.command()
@click.option("--target", "targets", multiple=True, envvar="EDGELOOP_STATUS_TARGETS", metavar="HOST:PORT",
              help="A service's metrics address (repeatable; or EDGELOOP_STATUS_TARGETS, space-separated). "
                   "Default: 127.0.0.1:EDGELOOP_METRICS_PORT.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between the two scrapes that rates are taken over.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True, help="Per-request timeout.")
@click.option("--max-lag", type=float, default=Thresholds.max_lag, show_default=True,
              help="Unhealthy above this many messages behind on flows.")
@click.option("--max-uncertain", type=click.FloatRange(0, 1), default=Thresholds.max_uncertain, show_default=True,
              help="Unhealthy above this share of uncertain windows.")
@click.option("--max-deadletter-rate", type=float, default=Thresholds.max_deadletters_per_s, show_default=True,
              help="Unhealthy above this many dead letters per second.")
@click.option("--max-llm-failures", type=click.FloatRange(0, 1), default=Thresholds.max_llm_failure_ratio,
              show_default=True, help="Unhealthy above this share of failed LLM calls.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per target instead of a table.")
def status(targets: tuple[str, ...], interval: float, timeout: float, max_lag: float, max_uncertain: float,
           max_deadletter_rate: float, max_llm_failures: float, as_json: bool) -> None:
    """Health of running services from their own metrics: up, flows/s, lag, uncertain share,
    dead letters, model version, LLM failures, policies. Exits 1 when any target is down or unhealthy.

    Detectors, sensors (flows sent; flows lost), enforcers (policies in force; refusals and
    failed applies) and the agent (LLM failures; proposals awaiting approval) are told apart
    by the metrics they export."""
    limits = Thresholds(max_lag, max_uncertain, max_deadletter_rate, max_llm_failures)
    healths = check(list(targets) or _default_targets(), interval, timeout, limits)
    if as_json:
        for h in healths:
            click.echo(json.dumps({**asdict(h), "healthy": h.healthy}))
    else:
        # Piped or captured output gets the whole table rather than 80 wrapped columns.
        Console(width=None if sys.stdout.isatty() else 200).print(table(healths))
    if not all(h.healthy for h in healths):
        click.get_current_context().exit(1)
