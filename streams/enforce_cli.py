"""`edgeloop enforce`: a network node follows policies.active and applies nftables.

    $ edgeloop enforce --netns el-123-vic        # follow policies.active, apply nftables
    $ edgeloop enforce --once --dry-run          # render and check what is active now

It runs on edge nodes, so it lives with the edge (an edge install has no agent): approving
and revoking are `edgeloop policy` in the core (llm_agents.policies.cli), which shares the
--scraper/--core options from here. Nothing heavy is imported at load.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from contracts.errors import BrokerError, EdgeloopError
from streams.settings import Settings, load_settings
from streams.topics import Topics

if TYPE_CHECKING:
    from streams.metrics import EnforcerMetrics

console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except EdgeloopError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc


def infrastructure_options(f: Any) -> Any:
    """--scraper and --core: more addresses the guard protects."""
    f = click.option("--core", "core", multiple=True, envvar="EDGELOOP_CORE_ADDRS",
                     help="The core host (agent, registry), by address or name (repeatable); never blocked.")(f)
    return click.option("--scraper", "scrapers", multiple=True, envvar="EDGELOOP_SCRAPER_ADDRS",
                        help="The Prometheus scraper, by address or name (repeatable); never blocked.")(f)


@click.command()
@click.option("--netns", default=None, envvar="EDGELOOP_ENFORCE_NETNS",
              help="Enforce inside this network namespace (e.g. a lab host) instead of the host's.")
@click.option("--mgmt-addr", "mgmt_addrs", multiple=True, envvar="EDGELOOP_ENFORCE_MGMT_ADDRS",
              help="This node's management address (repeatable); never blocked.")
@click.option("--protect", multiple=True, envvar="EDGELOOP_ENFORCE_PROTECTED_CIDRS",
              help="Allow-listed CIDRs no policy may touch (repeatable).")
@click.option("--no-protect-local", is_flag=True, help="Do not protect the node's own interface addresses.")
@infrastructure_options
@click.option("--nft", "nft_bin", default="nft", show_default=True, envvar="EDGELOOP_NFT_BIN")
@click.option("--table", default="edgeloop", show_default=True, envvar="EDGELOOP_ENFORCE_TABLE",
              help="The inet table this enforcer owns (and the only one it touches).")
@click.option("--once", is_flag=True, help="Apply what is on policies.active now, then exit.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--dry-run", is_flag=True, help="Render and check with nft -c, apply nothing, print the ruleset.")
@click.option("--clear-on-exit", is_flag=True, help="Delete the table on exit (else set timeouts lift it).")
@click.option("--status-file", type=click.Path(path_type=Path), default=None,
              help="JSON status after each change (default data_dir/enforce/<netns or host>.json).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Port of /metrics (default EDGELOOP_METRICS_PORT; 0: a free one).")
@click.option("--no-metrics", is_flag=True, help="Serve no /metrics.")
def enforce(netns: str | None, mgmt_addrs: tuple[str, ...], protect: tuple[str, ...], no_protect_local: bool,
            scrapers: tuple[str, ...], core: tuple[str, ...], nft_bin: str, table: str, once: bool, duration: float | None, dry_run: bool, clear_on_exit: bool,
            status_file: Path | None, metrics_port: int | None, no_metrics: bool) -> None:
    """Enforce approved policies on this node: follow policies.active, apply nftables, roll back.

    Renders one table (inet edgeloop) from the active policies, checks it with nft -c,
    applies it atomically, and renders it again without a policy at revocation or
    expiry. Refuses policies touching the brokers (bootstrap and cluster metadata), the
    management address, this node's addresses, gateways, resolvers and NTP servers, the
    scraper, the core, loopback or the --protect CIDRs, and broad ones approved without a
    reason (see `edgeloop policy approve --broad`).

    Serves /metrics on EDGELOOP_METRICS_PORT: policies in force, refusals, rollbacks,
    approval-to-enforcement latency, failed applies and dead letters. A bounded --once run
    serves none unless --metrics-port is given.
    """
    from prometheus_client import CollectorRegistry

    from streams.enforce import Enforcer
    from streams.guard import Guard, discover_infrastructure, local_addresses
    from streams.metrics import EnforcerMetrics, metrics_server
    from streams.nftables import Nft
    from streams.signing import trusted_keys

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = _settings()
    boot, topics = s.kafka_bootstrap or f"127.0.0.1:{s.embedded_port}", Topics(s.topic_prefix)
    with contextlib.ExitStack() as stack:
        try:
            local = [] if no_protect_local else local_addresses(netns)
            guard = Guard.build(bootstrap=boot, mgmt_addrs=mgmt_addrs, allow_list=protect, local_addrs=local,
                                infrastructure={} if no_protect_local else discover_infrastructure(netns),
                                scrapers=scrapers, core=core, metadata=True)
            nft = Nft(nft_bin, netns)
            nft.version()
            metrics = None
            if not no_metrics and not (once and metrics_port is None):
                metrics = EnforcerMetrics(CollectorRegistry())
                port = stack.enter_context(metrics_server(
                    metrics.registry, s.metrics_port if metrics_port is None else metrics_port, s.metrics_addr))
                console.print(f"metrics http://{s.metrics_addr}:{port}/metrics")
        except EdgeloopError as exc:
            raise click.ClickException(str(exc)) from exc
        status = status_file or Path(s.data_dir) / "enforce" / f"{netns or 'host'}.json"
        try:
            trusted = trusted_keys(s)
        except EdgeloopError as exc:
            raise click.ClickException(str(exc)) from exc
        enforcer = Enforcer(nft, guard, table=table, dry_run=dry_run, status_path=status, metrics=metrics,
                            trusted=trusted)
        console.print("accepting " + (escape(trusted.describe()) if trusted is not None
                                      else "unsigned records (EDGELOOP_ALLOW_UNSIGNED=true, no trusted keys)"))
        console.print(f"enforcing {topics.policies_active} in {'netns ' + netns if netns else 'the host namespace'}, "
                      f"table inet {table}{' (dry run)' if dry_run else ''}; protected: "
                      + ", ".join(f"{n} ({why})" for n, why in guard.protected.items()))
        _follow_until_stopped(enforcer, boot, topics, once=once, duration=duration, clear_on_exit=clear_on_exit)
    if dry_run:
        click.echo(enforcer.last_ruleset, nl=False)
    console.print(f"enforcer stopped: {len(enforcer.applied)} policies applied, {len(enforcer.refused)} refused")


def _follow_until_stopped(enforcer: Any, boot: str, topics: Topics, *, once: bool, duration: float | None,
                          clear_on_exit: bool) -> None:
    """Follow policies.active until SIGTERM, Ctrl-C, --duration or (--once) caught up."""
    from streams.enforce import follow

    stopping: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    deadline = time.monotonic() + duration if duration else None
    try:
        follow(enforcer, boot, topics.policies_active, once=once,
               on_bad=_dead_letter(boot, topics, enforcer.metrics),
               stop=lambda: bool(stopping) or (deadline is not None and time.monotonic() >= deadline))
    except KeyboardInterrupt:
        pass
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        signal.signal(signal.SIGTERM, previous)
        if clear_on_exit:
            enforcer.clear()


def _dead_letter(bootstrap: str, topics: Topics, metrics: EnforcerMetrics | None = None):  # noqa: ANN202
    def send(exc: Exception, m: Any) -> None:  # m: a kafka-python ConsumerRecord
        from contracts.records import encode
        from streams.deadletter import dead_letter

        dl = dead_letter(exc, topic=m.topic, partition=m.partition, offset=m.offset, value=m.value,
                         key=m.key, worker=f"enforcer:{os.uname().nodename}")
        if metrics is not None:
            metrics.deadletters.labels(reason=dl.reason, topic=m.topic).inc()
        try:
            _publish(bootstrap, topics.deadletter, dl.key or "", encode(dl))
        except EdgeloopError as err:
            logging.getLogger("edgeloop.enforce").error("dead letter not published: %s", err)
    return send


def _publish(bootstrap: str, topic: str, key: str, value: bytes, timeout_s: float = 10.0) -> None:
    """Send one value and wait for the broker's ack."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from streams.kafka_security import kafka_python_options

    ms = int(timeout_s * 1000)
    try:
        p = KafkaProducer(bootstrap_servers=bootstrap, **kafka_python_options(), acks="all",
                          request_timeout_ms=ms, max_block_ms=ms, bootstrap_timeout_ms=ms)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        p.send(topic, key=key.encode(), value=value).get(timeout=timeout_s)
    except KafkaError as exc:
        raise BrokerError(f"publishing to {topic} failed: {exc}") from exc
    finally:
        p.close(timeout=5)
