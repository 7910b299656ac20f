"""Live capture: NFStream meters an interface and the flows go to Kafka in batches.

Bounded by `duration_s` and/or `max_flows` so a capture started by hand or by a test
always stops by itself.
"""
from __future__ import annotations

import time
from typing import Callable

from contracts.errors import SourceError
from streams.producer import FlowPublisher, PublishStats


def capture(iface: str, pub: FlowPublisher, *, duration_s: float | None = None, max_flows: int | None = None,
            idle_timeout: int = 10, active_timeout: int = 60, batch: int = 200, flush_s: float = 1.0,
            on_batch: Callable[[int], None] | None = None, promiscuous: bool = False) -> PublishStats:
    try:
        from nfstream import NFStreamer

        from inference.flow_meter import nfstream_flow_to_record
    except ImportError as exc:
        raise SourceError("live capture needs NFStream: pip install 'edgeloop[capture]'") from exc
    try:
        streamer = NFStreamer(source=iface, statistical_analysis=True, idle_timeout=idle_timeout,
                              active_timeout=active_timeout, promiscuous_mode=promiscuous)
    except Exception as exc:  # NFStream raises ValueError/OSError variants for a bad interface
        raise SourceError(f"cannot capture on {iface!r}: {exc}") from exc
    t0 = last = time.monotonic()
    buf: list[dict] = []
    n = 0
    for flow in streamer:
        buf.append(nfstream_flow_to_record(flow, sensor=f"live-{iface}"))
        n += 1
        now = time.monotonic()
        if len(buf) >= batch or now - last >= flush_s:
            pub.publish(buf)
            if on_batch:
                on_batch(len(buf))
            buf, last = [], now
        if (max_flows and n >= max_flows) or (duration_s and now - t0 >= duration_s):
            break
    if buf:
        pub.publish(buf)
    return pub.flush()
