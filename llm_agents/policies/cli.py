"""`edgeloop policy ...` (a person decides) and `edgeloop enforce` (a node applies).

    $ edgeloop policy list                       # proposals and their state
    $ edgeloop policy show 3f2a                  # blueprint, KPIs, code hash, provenance, audit
    $ edgeloop policy approve 3f2a --who alice   # -> policies.active
    $ edgeloop policy reject 3f2a --who alice --reason "the scanner is our own"
    $ edgeloop policy revoke 3f2a --who alice
    $ edgeloop enforce --netns el-123-vic        # follow policies.active, apply nftables

Every decision is written to the audit log (data_dir/policies/policies.sqlite: who,
when, action, policy, details). `list`, `show` and `approve` first take in proposals
published on `policies.proposed` that this data directory has not seen (`--no-sync`
skips that). Policy ids can be shortened to any unique prefix.

`edgeloop enforce` lives with the edge (streams.enforce_cli); `cli` below still runs both.
This module imports nothing heavy at load.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from contracts.errors import EdgeloopError
from llm_agents.policies.store import STATES, PolicyStore
from streams.enforce_cli import enforce, infrastructure_options
from streams.settings import Settings, load_settings
from streams.terminal import plain, safe
from streams.topics import Topics

console = Console(stderr=True)
out = Console()


def _settings() -> Settings:
    try:
        return load_settings()
    except EdgeloopError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc


def _bootstrap(s: Settings) -> str:
    return s.kafka_bootstrap or f"127.0.0.1:{s.embedded_port}"


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


class _Ctx:
    def __init__(self) -> None:
        self.settings = _settings()
        self.store = PolicyStore(Path(self.settings.data_dir) / "policies")
        self.topics = Topics(self.settings.topic_prefix)
        self.bootstrap = _bootstrap(self.settings)

    def sync(self, enabled: bool) -> None:
        from kafka.errors import KafkaError

        from llm_agents.policies.proposals import sync_proposals

        if enabled:
            try:
                n = sync_proposals(self.store, self.bootstrap, self.topics.policies_proposed, timeout_s=10)
            except (KafkaError, EdgeloopError, OSError) as exc:
                console.print(f"[yellow]could not read {self.topics.policies_proposed} ({exc}); "
                              "showing this data directory only[/]")
                return
            if n:
                console.print(f"{n} new proposals from {self.topics.policies_proposed}")
        self.store.expire_due()

    def resolve(self, policy_id: str) -> str:
        return self.store.resolve(policy_id)


def _run(fn):  # noqa: ANN001, ANN202 - a decorator turning edgeloop errors into click errors
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return fn(*args, **kwargs)
        except EdgeloopError as exc:
            raise click.ClickException(str(exc)) from exc
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


sync_option = click.option("--no-sync", is_flag=True, help="Do not read new proposals from policies.proposed first.")
who_option = click.option("--who", required=True, help="Your name, for the audit log.")


def approver_options(f: Any) -> Any:
    """--who and --key for approve and revoke: with a key, the name is the key's."""
    f = click.option("--key", "key_path", type=click.Path(path_type=Path), default=None,
                     envvar="EDGELOOP_APPROVER_KEY",
                     help="Your signing key (`edgeloop keys new`): signs the record, and its name is who you are.")(f)
    return click.option("--who", default=None,
                        help="Your name, for the audit log (with --key: the key's name). Without --key the record is "
                             "unsigned, and nodes refuse it unless EDGELOOP_ALLOW_UNSIGNED=true.")(f)


def _approver(who: str | None, key_path: Path | None) -> tuple[str, Any]:
    if key_path is None:
        if not who:
            raise click.UsageError("give --key (signed) or --who (unsigned)")
        return who, None
    from streams.signing import SigningKey

    key = SigningKey.load(key_path)
    if who and who != key.name:
        raise click.UsageError(f"--who {who!r} is not the key's name {key.name!r}: the key says who you are")
    return key.name, key


@click.group()
def policy() -> None:
    """Policy proposals: list, show, approve, reject, revoke. Every decision is audited."""


@policy.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="Only these states (repeatable).")
@sync_option
@_run
def list_(states: tuple[str, ...], no_sync: bool) -> None:
    """Proposals and their state, oldest first."""
    ctx = _Ctx()
    ctx.sync(not no_sync)
    rows = ctx.store.list(states or None)
    t = Table(title=f"{len(rows)} policies ({ctx.store.directory})")
    for col in ("id", "state", "created"):
        t.add_column(col, no_wrap=True)
    for col in ("attack", "actions", "provenance", "decided by"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(safe(r.policy_id[:12]), r.state, _when(r.created_ms)[5:16], safe(r.attack),
                  Text("\n").join(safe(x) for x in r.summary.split("; ")),
                  safe(r.provenance), safe(r.approved_by or ""))
    out.print(t)


@policy.command()
@click.argument("policy_id")
@sync_option
@_run
def show(policy_id: str, no_sync: bool) -> None:
    """A proposal in full: blueprint, KPIs, code hash, provenance, policy, audit trail."""
    from llm_agents.blueprints.schema import Blueprint, render_markdown

    ctx = _Ctx()
    ctx.sync(not no_sync)
    pid = ctx.resolve(policy_id)
    row, p = ctx.store.get(pid), ctx.store.proposal(pid)
    click.echo(f"policy {plain(pid)}: {row.state}\nprovenance: {plain(p.provenance)}\ncode sha256: {p.code_sha256}\n"
               f"proposal sha256: {row.proposal_sha256}\ncreated: {_when(p.created_ms)}")
    if row.approved_by:
        click.echo(f"approved by {plain(row.approved_by)} at {_when(row.approved_ms)}; expires {_when(row.expires_ms)}")
    click.echo("\nactions:\n" + "\n".join(f"  - {plain(line)}" for line in p.policy.describe()) + "\n")
    bp = Blueprint.model_validate(p.blueprint)
    click.echo("\n".join(plain(line) for line in render_markdown(bp).split("\n")))
    targets = {k.name: str(k) for k in bp.kpis}
    t = Table(title="the twin's KPIs for this policy")
    for col, justify in (("KPI", "left"), ("value", "right"), ("target", "left")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for k, v in p.kpis.items():
        if isinstance(v, (int, float)):
            t.add_row(safe(k), f"{v:.4g}", safe(targets.get(k, "").removeprefix(k).strip()))
    out.print(t)
    for key in ("truth", "notes", "services", "evidence"):
        if p.kpis.get(key):
            click.echo(f"{key}: {plain(p.kpis[key])}")
    click.echo("\naudit:")
    for a in ctx.store.audit(pid):
        click.echo(f"  {_when(a.at_ms)}  {plain(a.who):<16} {a.action:<10} {plain(a.details)}")


@policy.command()
@click.argument("policy_id")
@approver_options
@click.option("--note", default="", help="Why, for the audit log.")
@click.option("--protect", multiple=True, envvar="EDGELOOP_ENFORCE_PROTECTED_CIDRS",
              help="CIDRs no policy may touch (repeatable); the brokers and loopback always are.")
@infrastructure_options
@click.option("--broad", "broad_reason", default="", metavar="REASON",
              help="Let broad actions pass (blocks wider than /16 or /48, suppressions of every class or wider "
                   "than /24 or /64, muted classes), with this reason for the audit log and the edge's guard.")
@sync_option
@_run
def approve(policy_id: str, who: str | None, key_path: Path | None, note: str, protect: tuple[str, ...],
            scrapers: tuple[str, ...], core: tuple[str, ...], broad_reason: str, no_sync: bool) -> None:
    """Approve a proposal and publish it to policies.active.

    The guard refuses it first if it touches protected infrastructure (brokers of the
    cluster metadata, this host's gateways, resolvers and NTP servers, the scraper, the core,
    --protect) or is broad without --broad REASON."""
    from llm_agents.policies.proposals import approve_policy
    from streams.guard import Guard, discover_infrastructure

    who, key = _approver(who, key_path)
    ctx = _Ctx()
    ctx.sync(not no_sync)
    pid = ctx.resolve(policy_id)
    guard = Guard.build(bootstrap=ctx.bootstrap, allow_list=protect, infrastructure=discover_infrastructure(),
                        scrapers=scrapers, core=core, metadata=True)
    act = approve_policy(ctx.store, pid, who, bootstrap=ctx.bootstrap, topics=ctx.topics, guard=guard, note=note,
                         broad_reason=broad_reason, key=key)
    console.print(f"[green]approved[/] {escape(pid)} by {escape(who)}; published to {ctx.topics.policies_active}; "
                  f"expires {_when(act.expires_ms)}; " + (f"signed by key {act.signer}" if key else
                                                        "[yellow]unsigned: detectors and enforcers refuse it unless "
                                                        "EDGELOOP_ALLOW_UNSIGNED=true (sign with --key)[/]")
                  + (f"; broad actions allowed: {escape(broad_reason)}"
                                                        if broad_reason else ""))


@policy.command()
@click.argument("policy_id")
@who_option
@click.option("--reason", required=True, help="Why, for the audit log.")
@_run
def reject(policy_id: str, who: str, reason: str) -> None:
    """Reject a proposal: it never reaches policies.active."""
    from llm_agents.policies.proposals import reject_policy

    ctx = _Ctx()
    pid = ctx.resolve(policy_id)
    reject_policy(ctx.store, pid, who, reason)
    console.print(f"rejected {escape(pid)} by {escape(who)}")


@policy.command()
@click.argument("policy_id")
@approver_options
@click.option("--reason", default="", help="Why, for the audit log.")
@_run
def revoke(policy_id: str, who: str | None, key_path: Path | None, reason: str) -> None:
    """Revoke an approved or active policy; enforcers roll it back. Again: publish again."""
    from llm_agents.policies.proposals import revoke_policy

    who, key = _approver(who, key_path)
    ctx = _Ctx()
    pid = ctx.resolve(policy_id)
    revoke_policy(ctx.store, pid, who, bootstrap=ctx.bootstrap, topics=ctx.topics, reason=reason, key=key)
    console.print(f"revoked {escape(pid)} by {escape(who)}; revocation published to {ctx.topics.policies_active}")


# Standalone use until the commands are wired into `edgeloop`: python -m llm_agents.policies.cli policy list
cli = click.Group("edgeloop-policy", commands={"policy": policy, "enforce": enforce},
                  help="Policy approval and enforcement (also `edgeloop policy` and `edgeloop enforce`).")

if __name__ == "__main__":
    cli()
