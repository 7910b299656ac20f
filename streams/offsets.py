"""Which `flows` offsets are safe to commit: at-least-once against open windows.

faust commits a message's offset once its handler returns, but the message's flows then
sit in open windows for up to T seconds. A worker that dies in between loses them: the
next owner starts after them. The ledger gates commits on window state instead (the
design note ../shared/notes/state-and-commits.md, section 6):

- every consumed message gets a token and a count of the window memberships its good
  flows hold (flows x views);
- a scored and produced window releases one membership per flow;
- per partition, the safe offset is the lowest offset whose message still has a
  membership open, else the last consumed offset + 1.

Tokens ride with each flow through the windower (`origins`), so the ledger never needs
the windows themselves.

    >>> ledger = OffsetLedger()
    >>> tok = ledger.consumed(partition=0, offset=41, refs=16)   # 8 flows x 2 views
    >>> ledger.release(closed_window.origins)                    # after it was produced
    >>> ledger.committable()                                     # {0: 41} until all 16 are back
"""
from __future__ import annotations

from collections import Counter, deque
from typing import Any, Iterable

from streams.kafka_security import aiokafka_options


class _Partition:
    __slots__ = ("queue", "next", "committed")

    def __init__(self) -> None:
        self.queue: deque[int] = deque()  # tokens of messages with memberships open, offset order
        self.next: int | None = None      # last consumed offset + 1
        self.committed: int | None = None


class OffsetLedger:
    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}
        self._open: dict[int, list[int]] = {}  # token -> [partition, offset, memberships left]
        self._seq = 0

    def consumed(self, partition: int, offset: int, refs: int) -> int:
        """Record a consumed message whose good flows hold `refs` window memberships;
        return its token (pass it as each flow's origin)."""
        p = self._parts.get(partition)
        if p is None:
            p = self._parts[partition] = _Partition()
        p.next = offset + 1 if p.next is None else max(p.next, offset + 1)
        self._seq += 1
        if refs > 0:
            self._open[self._seq] = [partition, offset, refs]
            p.queue.append(self._seq)
        return self._seq

    def release(self, origins: Iterable[int]) -> None:
        """Give back one membership per origin token (a window's flows, once produced).
        Tokens of a dropped partition are ignored."""
        for tok, n in Counter(origins).items():
            entry = self._open.get(tok)
            if entry is None:
                continue
            entry[2] -= n
            if entry[2] <= 0:
                del self._open[tok]

    def safe_offset(self, partition: int) -> int | None:
        """The offset to commit for `partition`: every flow before it is in an emitted window."""
        p = self._parts.get(partition)
        if p is None:
            return None
        q = p.queue
        while q and q[0] not in self._open:
            q.popleft()
        return self._open[q[0]][1] if q else p.next

    def committable(self) -> dict[int, int]:
        """{partition: offset} that moved past the last commit."""
        out = {}
        for part, p in self._parts.items():
            off = self.safe_offset(part)
            if off is not None and (p.committed is None or off > p.committed):
                out[part] = off
        return out

    def committed(self, offsets: dict[int, int]) -> None:
        for part, off in offsets.items():
            if part in self._parts:
                self._parts[part].committed = off

    def held(self, partition: int | None = None) -> int:
        """Messages whose flows still sit in open windows (all partitions, or one)."""
        if partition is None:
            return len(self._open)
        return sum(1 for e in self._open.values() if e[0] == partition)

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions given up in a rebalance: their next owner starts at our last commit."""
        gone = set(partitions)
        for part in gone:
            self._parts.pop(part, None)
        for tok in [t for t, e in self._open.items() if e[0] in gone]:
            del self._open[tok]

    def consumed_up_to(self, partition: int) -> int | None:
        """The last consumed offset + 1 (None before the first message)."""
        p = self._parts.get(partition)
        return None if p is None else p.next

    def partitions(self) -> list[int]:
        return sorted(self._parts)


class ReadMarks:
    """How far each partition was read (the last consumed offset + 1), kept where the next
    owner can find it after a kill -9: as the committed offsets of a side consumer group,
    `<group>.read`, committed with manual assignment (no membership, no rebalances).

    Commit metadata would be the natural place, but Tansu drops it (measured: metadata
    "1234" reads back as ""); a side group's offsets work on Tansu and Kafka alike. A new
    owner that reads below a partition's mark is reading flows again (at-least-once
    duplicates), and counts them.
    """

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.bootstrap, self.group, self.topic = bootstrap, f"{group}.read", topic
        self._consumer: Any = None

    async def _client(self, partitions: Iterable[int]) -> Any:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, **aiokafka_options(),
                                              group_id=self.group,
                                              enable_auto_commit=False)
            await self._consumer.start()
        want = {TopicPartition(self.topic, p) for p in partitions}
        if not want <= set(self._consumer.assignment()):
            self._consumer.assign(sorted(want | set(self._consumer.assignment())))
        return self._consumer

    async def save(self, marks: dict[int, int]) -> None:
        from aiokafka.structs import TopicPartition

        if marks:
            c = await self._client(marks)
            await c.commit({TopicPartition(self.topic, p): m for p, m in marks.items()})

    async def load(self, partitions: Iterable[int]) -> dict[int, int]:
        from aiokafka.structs import TopicPartition

        parts = sorted(partitions)
        c = await self._client(parts)
        out = {}
        for p in parts:
            m = await c.committed(TopicPartition(self.topic, p))
            if m is not None:
                out[p] = m
        return out

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
