"""Replay a flow DataFrame onto Kafka, as fast as possible or paced by its timestamps.

`speed=0` sends as fast as the producer allows; `speed=1` keeps the capture's own pace
(by first_seen_ms), `speed=10` ten times faster. A rich progress bar shows flows sent.
"""
from __future__ import annotations

import time

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streams.producer import FlowPublisher, PublishStats
from streams.sources.files import iter_flow_dicts

CHUNK = 2000


def replay_frame(df: pd.DataFrame, pub: FlowPublisher, speed: float = 0.0, progress: bool = True,
                 limit: int | None = None) -> PublishStats:
    """Publish rows in order; return what was sent."""
    if limit is not None:
        df = df.iloc[:limit]
    ts = df["first_seen_ms"].to_numpy() if speed > 0 else None
    t_wall0, t_ev0 = time.monotonic(), (ts[0] if ts is not None and len(ts) else 0)
    step = CHUNK if speed <= 0 else 200
    with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                  TimeRemainingColumn(), disable=not progress, transient=False) as bar:
        task = bar.add_task("replay", total=len(df), rate="")
        for start in range(0, len(df), step):
            chunk = df.iloc[start:start + step]
            if ts is not None:
                due = (ts[start] - t_ev0) / 1000.0 / speed
                delay = due - (time.monotonic() - t_wall0)
                if delay > 0:
                    time.sleep(delay)
            pub.publish(iter_flow_dicts(chunk))
            elapsed = max(time.monotonic() - t_wall0, 1e-9)
            bar.update(task, advance=len(chunk), rate=f"{(start + len(chunk)) / elapsed:,.0f} flows/s")
    return pub.flush()
