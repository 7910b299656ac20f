"""The agent's commands: `edgeloop agent`, `edgeloop review`, `edgeloop retrain`.

Click command objects, wired into `edgeloop_app.cli` (lazily: they need the agent extra).
`python -m llm_agents.cli <command>` runs them without that wiring.

    $ edgeloop agent                      # the service; Ctrl-C or SIGTERM stops it cleanly
    $ edgeloop agent --once               # decide what is on `uncertain` now, then exit
    $ edgeloop review                     # pending review items
    $ edgeloop review accept 12 --who alice
    $ edgeloop review correct 13 syn_flood --who alice
    $ edgeloop retrain                    # train a challenger now; prints the gate's figures
"""
from __future__ import annotations

import asyncio
import getpass
import json
import signal
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from contracts.errors import EdgeloopError
from streams.terminal import safe

console = Console(stderr=True)


def _settings() -> Any:
    from streams.settings import load_settings

    try:
        return load_settings()
    except EdgeloopError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc


def _bootstrap(s: Any) -> str:
    from streams.settings import bootstrap_of
    return bootstrap_of(s)


def single_threaded_blas() -> None:
    """One BLAS thread for this process. Acceptance runs small matrix products in a worker
    thread beside the event loop; a threaded OpenBLAS spin-waits against them, measured 15x
    slower on 2 cores (tests/bench/bench_agent.py). Training sets torch's own threads."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def retrain_config(s: Any, **overrides: Any) -> Any:
    """RetrainConfig from settings (`retrain_*` fields when streams.settings has them)."""
    from llm_agents.retrain import RetrainConfig

    names = {"epochs": "retrain_epochs", "holdout_fraction": "retrain_holdout_fraction",
             "synth_windows": "synth_windows", "synth_rounds": "synth_rounds",
             "max_recall_drop": "promotion_max_recall_drop"}
    kw = {f: getattr(s, n) for f, n in names.items() if hasattr(s, n)}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return RetrainConfig(**kw)


def seed_reference(store: Any, champion: Any, path: Path | None, flows: Any = None) -> str:
    """Give a store its reference data: `path` (or labelled `flows` already loaded), else
    the default training set (the lab training captures plus the nDPI train half as foreign
    benign), and the re-rendered copies of its attack runs the shipped recipe trains on. Each
    is seeded once: a store made before the copies existed gets them on its next start."""
    from inference.evaluate import load_labelled_flows
    from inference.train import RECIPE
    from llm_agents.store import VARIATION, reference_frame, variant_frame

    has_ref = bool(store.parts(("reference",)))
    copies = RECIPE.run_variants
    has_var = not copies or any(VARIATION in p.get("provenance", {}) for p in store.parts(("synthetic",)))
    if has_ref and has_var:
        return "reference data already in the store"
    if flows is not None:
        source = "given flows"
    elif path is None:
        from inference.datasets.training import training_flows
        try:
            flows, source = training_flows(), "default-training-set"
        except EdgeloopError:
            return ("no reference data (no lab dataset): acceptance leans on the detector's ranking "
                    "until labelled windows accumulate")
    else:
        flows, source = load_labelled_flows(path), Path(path).stem
    w = champion.meta.window
    said = []
    if not has_ref:
        frame = reference_frame(flows, classes=champion.class_names, k=w.k, seconds=w.seconds, key=w.key,
                                source=source, views=w.views)
        res = store.append("reference", frame, note=f"seeded from {path or source}")
        said.append(f"seeded {res.windows} reference windows from {path or source}")
    if not has_var:
        # The shipped recipe trains on re-rendered copies of each attack run beside the real
        # ones; a challenger trained without them loses what they taught (other paces,
        # round trips, lost answers), so they are stored once, beside the reference.
        seed = int((champion.meta.training or {}).get("seed", 0))
        var = variant_frame(flows, copies=copies, seed=seed, classes=champion.class_names, k=w.k,
                            seconds=w.seconds, key=w.key, views=w.views, benign=champion.meta.benign_class)
        if len(var):
            got = store.append("synthetic", var, note=f"{copies} re-rendered copies of each attack run")
            said.append(f"{got.windows} windows of re-rendered attack runs")
    return "; ".join(said) or "nothing to seed: no attack runs to re-render"


def _publisher(s: Any) -> Any:
    from streams.hotswap import publish_release
    from streams.signing import SigningKey
    from streams.topics import Topics

    bootstrap, topic = _bootstrap(s), Topics(s.topic_prefix).models
    key = SigningKey.load(s.release_key) if s.release_key else None  # a bad key fails at start
    return lambda bundle, reason: publish_release(bootstrap, topic, bundle, reason, key=key)


def build_retrainer(s: Any, state: Any, client: Any, metrics: Any = None, **overrides: Any) -> Any:
    from inference.registry import Registry, resolve_bundle
    from llm_agents.retrain import Retrainer

    champion = resolve_bundle(s.model, s.data_dir / "registry")
    return Retrainer(state.store, Registry(s.data_dir / "registry"), state.audit, client=client,
                     fallback=champion, publish=_publisher(s), config=retrain_config(s, **overrides),
                     metrics=metrics, reference=open_world_reference(s))


def open_world_reference(s: Any) -> Any:
    """The promotion gate's foreign reference (evaluation.gate), with the site baseline in
    EDGELOOP_DATA_DIR/baseline when there is one; loaded when a retrain needs it."""
    from evaluation.baseline import has_baseline
    from evaluation.gate import default_reference

    site = s.data_dir / "baseline"
    return lambda: default_reference(site_baseline=site if has_baseline(site) else None)


@click.command()
@click.option("--once", is_flag=True, help="Exit once the uncertain topic is drained.")
@click.option("--max-windows", type=int, default=None, help="Exit after finishing this many windows.")
@click.option("--batch-size", type=int, default=None, help="Windows per LLM call (default 20).")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Labelled flows to seed an empty store with (default: the lab training capture).")
@click.option("--retrain-min-labels", type=int, default=None,
              help="Retrain after this many new accepted labels (0: never on labels).")
@click.option("--no-retrain", is_flag=True, help="Label only; never retrain from this process.")
@click.option("--group-id", default=None, help="Consumer group on `uncertain` (default edgeloop-agent); "
              "the policy proposer uses it plus -policies on `alerts`.")
@click.option("--no-propose", is_flag=True, help="Do not follow `alerts` to propose policies.")
def agent(once: bool, max_windows: int | None, batch_size: int | None, reference: Path | None,
          retrain_min_labels: int | None, no_retrain: bool, group_id: str | None, no_propose: bool) -> None:
    """Run the LLM agent: label uncertain windows, keep the accepted ones, retrain and promote,
    and propose policies for alerts.

    Offline (no EDGELOOP_LLM_BASE_URL) every window waits in the review queue and policies
    come from the library of validated blueprints. Proposals wait for a person
    (`edgeloop policy list`). State lives under EDGELOOP_DATA_DIR; a restart picks up from
    the committed offsets. Metrics on EDGELOOP_METRICS_PORT. With --once or --max-windows
    (bounded runs) no policies are proposed.
    """
    from prometheus_client import CollectorRegistry

    from llm_agents.agent import AgentConfig, AgentState, LabelAgent
    from llm_agents.agent_metrics import PolicyStoreCollector, build_agent_metrics
    from llm_agents.client import LLMClient
    from llm_agents.policies.store import PolicyStore
    from streams.metrics import serve_metrics
    from streams.topics import Topics

    s = _settings()
    single_threaded_blas()
    reg = CollectorRegistry()
    metrics = build_agent_metrics(reg)
    over = {k: v for k, v in (("batch_size", batch_size), ("retrain_min_labels", retrain_min_labels),
                              ("group_id", group_id)) if v is not None}
    cfg = AgentConfig.from_settings(s, **over)
    try:
        client = LLMClient.from_settings(s, reg)
        state = AgentState.open(s.data_dir)
        retrainer = None if no_retrain else build_retrainer(s, state, client, metrics)
        note = seed_reference(state.store, retrainer.champion(), reference) if retrainer else ""
        reg.register(PolicyStoreCollector(PolicyStore(s.data_dir / "policies")))
        port = serve_metrics(reg, s.metrics_port, s.metrics_addr)
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    mode = (f"LLM {s.llm_model or '(server default)'} at {s.llm_base_url}" if client
            else "offline: windows wait for review")
    console.print(f"agent {cfg.worker}: {mode}; group {cfg.group_id}; batch {cfg.batch_size}; "
                  f"metrics http://{s.metrics_addr}:{port}/metrics")
    if note:
        console.print(note)
    la = LabelAgent(cfg, _bootstrap(s), Topics(s.topic_prefix), state, client, metrics=metrics, retrainer=retrainer)
    proposer = None
    if not (no_propose or once or max_windows is not None):
        from llm_agents.policies.alert_proposer import AlertProposer
        from llm_agents.blueprints.sandbox import sandbox_available
        from llm_agents.blueprints.sandbox_service import make_sandbox

        ok, why = sandbox_available()
        metrics.sandbox_available.labels(mode=make_sandbox().mode).set(1 if ok else 0)
        if ok:
            proposer = AlertProposer(s, _bootstrap(s), Topics(s.topic_prefix), llm=client, metrics=metrics,
                                     group_id=f"{cfg.group_id}-policies")
            console.print(f"proposing policies for {Topics(s.topic_prefix).alerts} (group {cfg.group_id}-policies); "
                          "proposals wait for `edgeloop policy approve`")
        else:  # labelling still works; say loudly that the policy half does not
            console.print(f"[red]not proposing policies: the blueprint sandbox cannot confine step code here "
                          f"({escape(why)}). It needs bubblewrap and libseccomp2, and root or unprivileged user "
                          "namespaces (see deploy/README.md, 'The blueprint sandbox'). Labelling goes on; "
                          "`edgeloop status` and edgeloop_agent_sandbox_available show it.[/]")
    stats = asyncio.run(_serve(la, max_windows, once, proposer))
    console.print(f"windows received {stats.received}, dead-lettered {stats.deadlettered}, "
                  f"outcomes {json.dumps(stats.outcomes)}, labels published {stats.published}, "
                  f"retries {stats.retries}, review queue {state.review.depth()}")


async def _serve(la: Any, max_windows: int | None, once: bool, proposer: Any = None) -> Any:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    policies = asyncio.create_task(proposer.run(stop)) if proposer is not None else None
    if policies is not None:
        # A proposer that dies (the broker gone for good) stops the whole agent, so the
        # service manager restarts it instead of it labelling on without proposing.
        policies.add_done_callback(lambda _t: stop.set())
    try:
        return await la.run(stop=stop, max_windows=max_windows, once=once)
    finally:
        stop.set()
        if policies is not None:
            try:
                await policies  # a batch in progress finishes and its offsets are committed
            except Exception as exc:  # noqa: BLE001 - reported as the command's error
                raise click.ClickException(f"the policy proposer stopped: {type(exc).__name__}: {exc}") from exc


def _open_review() -> tuple[Any, Any]:
    from llm_agents.agent import AgentState

    s = _settings()
    return s, AgentState.open(s.data_dir)


@click.group(invoke_without_command=True)
@click.pass_context
def review(ctx: click.Context) -> None:
    """The review queue: list parked windows; accept or correct each one.

    A verdict stores the window with label source human:<who> and queues a Label record
    that the agent publishes on `labels`.

    Reason `verify`: the LLM's label was accepted, but the window lies on the retrainer's
    holdout side, where only a person's (or a dataset's) label may judge a challenger. A
    class the LLM found is promoted only after some of its `verify` items are accepted.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_items)


@review.command("list")
@click.option("--all", "show_all", is_flag=True, help="Decided items too.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_items(show_all: bool, limit: int, as_json: bool) -> None:
    """List review items (pending ones, oldest first)."""
    _, st = _open_review()
    items = st.review.items(limit=limit) if show_all else st.review.pending(limit)
    if as_json:
        for i in items:
            click.echo(json.dumps({"id": i.id, "window_id": i.window_id, "key": i.window.key, "proposed": i.proposed,
                                   "label": i.label, "source": i.source, "confidence": i.confidence,
                                   "reason": i.reason, "status": i.status, "decided_label": i.decided_label,
                                   "decided_by": i.decided_by, "detector": i.window.predicted}))
        return
    t = Table(title=f"review queue: {st.review.depth()} pending")
    for col in ("id", "window", "key", "flows", "detector", "proposed", "conf", "source", "reason", "status"):
        t.add_column(col)
    for i in items:
        t.add_row(str(i.id), safe(i.window_id), safe(i.window.key), str(len(i.window.flows)),
                  safe(f"{i.window.predicted} {i.window.confidence:.2f}"), safe(i.proposed or "-"),
                  "-" if i.confidence is None else f"{i.confidence:.2f}", safe(i.source or "-"), safe(i.reason),
                  safe(i.status if i.status == "pending" else f"{i.status}: {i.decided_label} ({i.decided_by})"))
    Console().print(t)


def _verdict(item_id: int, label: str | None, who: str) -> None:
    from llm_agents.labeling.review import ReviewError, decide

    _, st = _open_review()
    known = set(st.store.counts()["reference"]) | set(st.store.counts()["labelled"])
    try:
        item, chosen = decide(st.review, st.store, st.ledger, item_id, label, who, known=known)
    except ReviewError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"item {item.id} (window {item.window_id}) stored as {chosen!r} by human:{who}; "
               f"the agent publishes the label")


@review.command()
@click.argument("item_id", type=int)
@click.option("--who", default=getpass.getuser, show_default="the login name", help="Who decided.")
def accept(item_id: int, who: str) -> None:
    """Accept an item's proposed label."""
    _verdict(item_id, None, who)


@review.command()
@click.argument("item_id", type=int)
@click.argument("label")
@click.option("--who", default=getpass.getuser, show_default="the login name", help="Who decided.")
def correct(item_id: int, label: str, who: str) -> None:
    """Label an item yourself (a known class, or a new lower_snake_case name)."""
    _verdict(item_id, label, who)


@click.command()
@click.option("--epochs", type=int, default=None, help="Training epochs for the challenger.")
@click.option("--synth-windows", type=int, default=None, help="Synthetic windows per class per round.")
@click.option("--synth-rounds", type=int, default=None, help="Self-evolution rounds per class.")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Labelled flows to seed an empty store with (default: the lab training capture).")
def retrain(epochs: int | None, synth_windows: int | None, synth_rounds: int | None, reference: Path | None) -> None:
    """Retrain now: challenger vs champion on held-out real windows; promote and release if it wins."""
    from llm_agents.agent import AgentState
    from llm_agents.client import LLMClient

    s = _settings()
    try:
        state = AgentState.open(s.data_dir)
        rt = build_retrainer(s, state, LLMClient.from_settings(s), epochs=epochs, synth_windows=synth_windows,
                             synth_rounds=synth_rounds)
        console.print(seed_reference(state.store, rt.champion(), reference))
        d = rt.run("request")
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    print_decision(d)


def print_decision(d: Any) -> None:
    out = Console()
    out.print(f"[bold]{'PROMOTED' if d.promoted else 'NOT PROMOTED'}[/] ({d.reason}); "
              f"champion {d.champion_version}, challenger {d.challenger_version or '-'}; "
              f"{json.dumps(d.seconds)} s")
    if d.champion and d.challenger:
        t = Table(title=f"held-out real windows: {d.champion.windows}")
        for col in ("class", "support", "recall champion", "recall challenger", "change", "windows lost / gained"):
            t.add_column(col)
        for c, n in d.champion.support.items():
            lost, gained = d.recall_flips.get(c, ("-", "-"))
            t.add_row(c, str(n), f"{d.champion.recall[c]:.3f}", f"{d.challenger.recall[c]:.3f}",
                      f"{100 * d.recall_delta[c]:+.1f} pt", f"{lost} / {gained}")
        t.add_row("macro-F1", "", f"{d.champion.macro_f1:.4f}", f"{d.challenger.macro_f1:.4f}",
                  f"{100 * (d.challenger.macro_f1 - d.champion.macro_f1):+.2f} pt")
        sig = d.significance
        if sig:
            t.add_row(f"gain, {sig['level']:.0%} paired interval", "", "", "",
                      f"[{100 * sig['low']:+.2f}, {100 * sig['high']:+.2f}] pt")
        out.print(t)
    ow = d.open_world
    if ow.get("champion"):
        t = Table(title=f"open-world reference: {ow['captures']} captures, "
                        f"{ow['champion']['benign_windows']} benign windows")
        for col in ("", "champion", "challenger", "change", "tolerance"):
            t.add_column(col)
        tol = ow["tolerance"]
        for name, tk in (("benign false alerts", "false_alerts"), ("benign deferred", "deferrals")):
            a, b = ow["champion"][tk], ow["challenger"][tk]
            t.add_row(name, f"{a:.2%}", f"{b:.2%}", f"{100 * (b - a):+.2f} pt", f"+{100 * tol[tk]:.1f} pt")
        for c, h in sorted(ow["champion"]["hits"].items()):
            b = ow["challenger"]["hits"].get(c, 0.0)
            t.add_row(f"hits {c}", f"{h:.1%}", f"{b:.1%}", f"{100 * (b - h):+.1f} pt", f"-{100 * tol['known_hits']:.0f} pt")
        if ow["champion"].get("heldout_known"):   # a tolerance of None: reported, not gated
            for name, tk, sign in (("hit", "heldout_hits", "-"), ("named wrong", "heldout_wrong", "+")):
                a, b = ow["champion"].get(tk, 0.0), ow["challenger"].get(tk, 0.0)
                held_tol = tol.get(tk)
                t.add_row(f"held-out conditions, known classes {name} ({ow['champion']['heldout_known']} windows)",
                          f"{a:.1%}", f"{b:.1%}", f"{100 * (b - a):+.1f} pt",
                          f"{sign}{100 * held_tol:.0f} pt" if held_tol is not None else "reported")
            # Per class, where it moved by a point or more: the pooled rate can hide a class's
            # fall behind another's rise (a review round: slow DoS up, brute forces down).
            by_a, by_b = ow["champion"].get("heldout_by_class", {}), ow["challenger"].get("heldout_by_class", {})
            for c in sorted(set(by_a) & set(by_b), key=lambda c: by_b[c] - by_a[c]):
                if abs(by_b[c] - by_a[c]) >= 0.01:
                    t.add_row(f"  held-out {c} hit", f"{by_a[c]:.1%}", f"{by_b[c]:.1%}",
                              f"{100 * (by_b[c] - by_a[c]):+.1f} pt", "reported")
        flips = ow["change"].get("unknown_flips")
        if flips and flips["windows"]:   # kinds neither model was trained on
            a = ow["change"]["unknown_missed"]
            t.add_row(f"unseen kinds called benign ({flips['windows']} windows)",
                      "", "", f"{100 * a:+.1f} pt ({flips['lost']} lost, {flips['gained']} gained)",
                      f"+{100 * tol.get('unknown_missed', 0.01):.0f} pt and a real loss")
        site = ow.get("site")
        if site:   # a site baseline: its own reference part must come out better
            for name, tk in (("site false alerts", "false_alerts"), ("site deferred", "deferrals")):
                a, b = site["champion"][tk], site["challenger"][tk]
                t.add_row(f"{name} ({site['champion']['benign_windows']} windows)", f"{a:.2%}", f"{b:.2%}",
                          f"{100 * (b - a):+.2f} pt", "lower, alerts no higher")
        out.print(t)
    elif ow.get("error"):
        out.print(f"open-world reference unavailable: {ow['error']}")
    out.print(f"training windows {json.dumps(d.train_windows)}; provenance {json.dumps(d.train_provenance)}")
    for c, f in d.synthetic.items():
        out.print(f"synthetic {c}: " + json.dumps({k: f.get(k) for k in ("generated", "kept", "dropped", "sources")}))


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """The agent's commands, for running them without `edgeloop` (python -m llm_agents.cli)."""
    import logging

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


main.add_command(agent)
main.add_command(review)
main.add_command(retrain)

if __name__ == "__main__":
    main()
