"""Turning bad input into dead-letter records: reason, error, origin, raw value.

    >>> dl = dead_letter(exc, topic="edgeloop.flows", partition=2, offset=17, value=raw)
    >>> producer.send(topics.deadletter, encode(dl))

Nothing that fails decoding is dropped silently: it is counted by reason and published.
"""
from __future__ import annotations

import base64
import time

from contracts.errors import RecordError
from contracts.records import DeadLetter

# A flow record is under 2 KB, so one bad record of a batch is kept whole; a whole bad
# message over this is cut and `truncated` set (the message stays at partition/offset).
MAX_VALUE_CHARS = 65536


def dead_letter(exc: Exception, *, topic: str, partition: int | None, offset: int | None,
                value: bytes | str | None, key: bytes | str | None = None, worker: str = "") -> DeadLetter:
    """Build the dead-letter record for a value that could not be used. For one record of a
    batch (`exc.index` set), `value` is that record alone."""
    reason = exc.reason if isinstance(exc, RecordError) else type(exc).__name__
    encoding = "utf-8"
    try:
        raw = value if isinstance(value, str) else (value or b"").decode("utf-8")
        text = raw[:MAX_VALUE_CHARS]
    except UnicodeDecodeError:  # not text (an Arrow payload, broken bytes): base64, replayable
        assert isinstance(value, bytes)
        raw, encoding = value, "base64"
        text = base64.b64encode(value[:MAX_VALUE_CHARS]).decode("ascii")
    k = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    index = exc.index if isinstance(exc, RecordError) else None
    return DeadLetter(reason=reason, error=str(exc)[:1000], source_topic=topic, partition=partition,
                      offset=offset, key=k, value=text, value_encoding=encoding, index=index,
                      truncated=len(raw) > MAX_VALUE_CHARS,
                      value_bytes=len(value or b""), worker=worker, at_ms=int(time.time() * 1000))
