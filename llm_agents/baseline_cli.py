"""`edgeloop baseline`: learn this site's ordinary traffic and release a detector that knows it.

    edgeloop baseline --capture monday.pcap --capture tuesday.pcap
    edgeloop baseline --minutes 30            # the live flows topic, from now on
    edgeloop baseline --capture site.parquet --no-retrain   # build the baseline only

See evaluation.baseline for what is kept and left out, and how it is split. The baseline's
training part enters the dataset store as benign windows (label source `baseline:site`);
the retrain that follows goes through the same promotion gate as every other, with the
baseline's reference part added to its foreign reference.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from contracts.errors import EdgeloopError, SourceError
from streams.kafka_security import kafka_python_options

console = Console(stderr=True)


def live_flows(bootstrap: str, topic: str, minutes: float, max_flows: int) -> Any:
    """Flows published on `topic` over the next `minutes` (at most `max_flows`), decoded."""
    import pandas as pd
    from kafka import KafkaConsumer, TopicPartition

    from contracts.records import RecordError, decode_flows

    c = KafkaConsumer(bootstrap_servers=bootstrap, **kafka_python_options(), group_id=None, enable_auto_commit=False,
                      fetch_max_wait_ms=200, max_poll_interval_ms=60_000, consumer_timeout_ms=1000)
    rows: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or {0})]
        c.assign(tps)
        c.seek_to_end(*tps)
        end = time.monotonic() + minutes * 60
        cols = (TextColumn("baseline: reading flows"), BarColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"))
        with Progress(*cols, console=console) as bar:
            task = bar.add_task("", total=minutes * 60)
            while time.monotonic() < end and len(rows) < max_flows:
                for batch in c.poll(timeout_ms=500, max_records=5000).values():
                    for m in batch:
                        rows += [r.model_dump() for r in decode_flows(m.value or b"")
                                 if not isinstance(r, RecordError)]
                bar.update(task, completed=minutes * 60 - max(0.0, end - time.monotonic()),
                           description=f"{len(rows):,} flows")
    finally:
        c.close()
    return pd.DataFrame(rows[:max_flows])


@click.command("baseline")
@click.option("--capture", "captures", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A capture of the site's ordinary traffic: pcap (metered with NFStream), CSV or "
                   "Parquet flows. Repeatable; each file is a capture of its own.")
@click.option("--minutes", type=click.FloatRange(0.1, 24 * 60), default=None,
              help="Instead of captures: read the live flows topic for this many minutes.")
@click.option("--max-flows", type=int, default=500_000, show_default=True,
              help="Stop reading the live topic after this many flows.")
@click.option("--train-share", type=click.FloatRange(0.1, 0.9), default=0.5, show_default=True,
              help="Share that trains (whole captures when there are several, else the first "
                   "stretch of time); the rest is the gate's site reference.")
@click.option("--split", type=click.Choice(["auto", "capture", "time"]), default="auto", show_default=True,
              help="How the training part is chosen: capture (whole captures train, the others are "
                   "the gate's site reference), time (the first share of each capture trains, its "
                   "later traffic is the reference), auto (by capture when there are several).")
@click.option("--no-retrain", is_flag=True, help="Build the baseline only; do not retrain.")
@click.option("--epochs", type=int, default=None, help="Training epochs for the challenger.")
def baseline(captures: tuple[Path, ...], minutes: float | None, max_flows: int, train_share: float,
             split: str, no_retrain: bool, epochs: int | None) -> None:
    """Learn the site's own benign traffic, retrain, and release through the promotion gate.

    Scores the traffic with the current model and leaves out every flow in a window it
    calls an attack (its best class, confident or not); splits the rest into a training part and a reference
    part (EDGELOOP_DATA_DIR/baseline/); adds the training part to the dataset store as
    benign; retrains. The challenger is promoted (and released to every detector) only if
    it passes the lab gate and the open-world gate, whose reference now includes the
    site's reference part. Being a site baseline, the challenger need not beat the
    champion on the lab holdout (only be no worse there), but must do better on the site's
    reference part: fewer benign windows alerted on or deferred, no more alerted on.
    """
    from evaluation.baseline import build_baseline
    from inference.registry import resolve_bundle
    from llm_agents.agent import AgentState
    from llm_agents.cli import _bootstrap, _settings, build_retrainer, print_decision, seed_reference
    from llm_agents.client import LLMClient
    from llm_agents.retrain import SITE_TRIGGER
    from llm_agents.store import reference_frame

    s = _settings()
    if bool(captures) == (minutes is not None):
        raise click.UsageError("give --capture FILE (one or more) or --minutes N, not both")
    try:
        bundle = resolve_bundle(s.model, s.data_dir / "registry")
        flows = _collect(captures, minutes, max_flows, s, _bootstrap)
        with _steps(len(flows)) as step:
            b = build_baseline(flows, bundle, s.data_dir / "baseline", train_share=train_share, split=split,
                               progress=step)
        c = b.counts
        console.print(f"baseline {b.path}: {c['kept_flows']:,} of {c['flows']:,} flows kept "
                      f"({c['left_out_flows']:,} left out: in windows {bundle.version} calls attacks); "
                      f"train {c['train_flows']:,}, reference {c['reference_flows']:,}")
        if no_retrain:
            return
        state = AgentState.open(s.data_dir)
        rt = build_retrainer(s, state, LLMClient.from_settings(s), epochs=epochs)
        console.print(seed_reference(state.store, rt.champion(), None))
        from evaluation.baseline import load_baseline

        w = bundle.meta.window
        frame = reference_frame(load_baseline(b.path, part="train"), classes=[bundle.meta.benign_class],
                                k=w.k, seconds=w.seconds, key=w.key, source="baseline", views=w.views)
        res = state.store.append("labelled", frame.assign(label_source="baseline:site"), note="site baseline")
        console.print(f"added {res.windows} baseline windows to the store ({len(res.skipped)} already there)")
        d = rt.run(SITE_TRIGGER, {"baseline": str(b.path), **c})
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    print_decision(d)


def _collect(captures: tuple[Path, ...], minutes: float | None, max_flows: int, s: Any, bootstrap: Any) -> dict[str, Any]:
    from streams.sources.files import load_flows
    from streams.topics import Topics

    if minutes is not None:
        df = live_flows(bootstrap(s), Topics(s.topic_prefix).flows, minutes, max_flows)
        if df.empty:
            raise SourceError(f"no flows arrived on the flows topic in {minutes:g} minutes")
        return {"live": df}
    out = {}
    for p in captures:
        df = load_flows(p)
        if len(df):
            out[p.name] = df
        else:
            console.print(f"[yellow]{p}: no flows, skipped[/]")
    return out


class _steps:
    """A progress bar over the captures being scored."""

    def __init__(self, total: int) -> None:
        cols = (TextColumn("baseline: scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"))
        self.bar = Progress(*cols, console=console)
        self.total = total

    def __enter__(self) -> Any:
        self.bar.__enter__()
        task = self.bar.add_task("", total=self.total)
        return lambda name: self.bar.update(task, advance=1, description=name)

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)
