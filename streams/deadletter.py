"""Turning bad input into dead-letter records: reason, error, origin, raw value.

    >>> dl = dead_letter(exc, topic="edgeloop.flows", partition=2, offset=17, value=raw)
    >>> producer.send(topics.deadletter, encode(dl))

Nothing that fails decoding is dropped silently: it is counted by reason and published.
"""
from __future__ import annotations

import time

from streams.errors import RecordError
from streams.records import DeadLetter

MAX_VALUE_CHARS = 4096


def dead_letter(exc: Exception, *, topic: str, partition: int | None, offset: int | None,
                value: bytes | str | None, key: bytes | str | None = None, worker: str = "") -> DeadLetter:
    """Build the dead-letter record for a value that could not be used."""
    reason = exc.reason if isinstance(exc, RecordError) else type(exc).__name__
    raw = value if isinstance(value, str) else (value or b"").decode("utf-8", "replace")
    k = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    return DeadLetter(reason=reason, error=str(exc)[:1000], source_topic=topic, partition=partition,
                      offset=offset, key=k, value=raw[:MAX_VALUE_CHARS],
                      value_bytes=len(value or b""), worker=worker, at_ms=int(time.time() * 1000))
