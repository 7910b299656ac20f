"""The review queue: windows a person should label, and their verdicts.

A window is parked here when its LLM label was not accepted (with the acceptance reason
code), when the LLM gave no usable answer (`unanswered`, `llm_bad_output`, `llm_timeout`
after the retries, ...), or in offline mode (`offline`: there is no LLM to ask). The
window itself is kept (its flows, without any ground-truth field), so a person, or a
later acceptance pass, can decide without going back to Kafka.

    <data_dir>/review.sqlite      table items: one row per window id

    >>> q = ReviewQueue(data_dir / "review.sqlite")
    >>> q.park([Parked(window, reason="low_confidence", proposed="syn_scan", ...)])
    >>> q.pending()
    >>> decide(q, store, ledger, item_id=3, label=None, who="alice")   # accept as proposed
    >>> decide(q, store, ledger, item_id=4, label="syn_flood", who="bob")  # correct it

A verdict writes the window to the dataset store (label source `human:<who>`), closes the
item, and records the decision and a Label record in the ledger; the agent publishes
that on `labels` (so `edgeloop review` needs no broker).
"""
from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from contracts.records import Label, UncertainWindow, encode
from llm_agents.audit import Decision, LabelLedger, connect, now_ms
from llm_agents.store import DatasetStore, window_rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT, window_id TEXT NOT NULL UNIQUE, window TEXT NOT NULL,
    proposed TEXT, label TEXT, source TEXT NOT NULL DEFAULT '', confidence REAL,
    reason TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', novel INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending', decided_label TEXT, decided_by TEXT,
    created_ms INTEGER NOT NULL, decided_ms INTEGER);
CREATE INDEX IF NOT EXISTS items_status ON items(status, id);
"""
_CLASS_NAME = re.compile(r"^[a-z][a-z0-9_]{1,47}$")
NOVEL_PREFIX = "novel:"


class ReviewError(ValueError):
    """A verdict that cannot be applied: no such item, already decided, or a bad label."""


@dataclass(frozen=True)
class Parked:
    """A window to park, with the LLM's proposal when there was one."""

    window: UncertainWindow
    reason: str
    proposed: str | None = None   # the LLM's raw answer
    label: str | None = None      # the class it was read as (acceptance.parse_label)
    source: str = ""              # "llm:<model>", or "" when no LLM answered
    confidence: float | None = None
    novel: bool = False
    detail: str = ""


@dataclass(frozen=True)
class ReviewItem:
    id: int
    window_id: str
    window: UncertainWindow
    proposed: str | None
    label: str | None
    source: str
    confidence: float | None
    reason: str
    detail: str
    novel: bool
    status: str
    decided_label: str | None
    decided_by: str | None
    created_ms: int


class ReviewQueue:
    """Parked windows in SQLite; safe across threads and processes."""

    _COLS = ("id, window_id, window, proposed, label, source, confidence, reason, detail, novel, "
             "status, decided_label, decided_by, created_ms")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def park(self, items: Iterable[Parked]) -> int:
        """Add windows; one already in the queue (a redelivery) is left as it is."""
        rows = [(p.window.window_id, _strip_truth(p.window).model_dump_json(by_alias=True), p.proposed,
                 p.label, p.source, p.confidence, p.reason, p.detail[:1000], int(p.novel), now_ms())
                for p in items]
        with self._lock:
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO items(window_id, window, proposed, label, source, confidence, reason, "
                "detail, novel, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            return self._conn.total_changes - before

    def pending(self, limit: int = 10_000, novel_only: bool = False) -> list[ReviewItem]:
        q = f"SELECT {self._COLS} FROM items WHERE status = 'pending'"
        if novel_only:
            q += " AND novel = 1"
        return self._select(q + " ORDER BY id LIMIT ?", (limit,))

    def newest(self, limit: int = 10) -> list[ReviewItem]:
        """The most recently parked pending items, newest first."""
        return self._select(f"SELECT {self._COLS} FROM items WHERE status = 'pending' ORDER BY id DESC LIMIT ?",
                            (limit,))

    def items(self, status: str | None = None, limit: int = 10_000) -> list[ReviewItem]:
        if status is None:
            return self._select(f"SELECT {self._COLS} FROM items ORDER BY id LIMIT ?", (limit,))
        return self._select(f"SELECT {self._COLS} FROM items WHERE status = ? ORDER BY id LIMIT ?",
                            (status, limit))

    def get(self, item_id: int) -> ReviewItem | None:
        got = self._select(f"SELECT {self._COLS} FROM items WHERE id = ?", (item_id,))
        return got[0] if got else None

    def by_window(self, window_ids: Sequence[str]) -> dict[str, ReviewItem]:
        out: dict[str, ReviewItem] = {}
        for start in range(0, len(window_ids), 500):
            chunk = list(window_ids[start:start + 500])
            q = f"SELECT {self._COLS} FROM items WHERE window_id IN ({','.join('?' * len(chunk))})"
            out.update({i.window_id: i for i in self._select(q, tuple(chunk))})
        return out

    def depth(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM items WHERE status = 'pending'").fetchone()[0])

    def counts(self) -> dict[str, int]:
        """Items by status and, for pending ones, by reason ("pending:<reason>")."""
        with self._lock:
            by_status = self._conn.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall()
            by_reason = self._conn.execute("SELECT reason, COUNT(*) FROM items WHERE status = 'pending' "
                                           "GROUP BY reason").fetchall()
        return {**dict(by_status), **{f"pending:{r}": n for r, n in by_reason}}

    def resolve(self, item_id: int, label: str, by: str, status: str) -> bool:
        """Close a pending item; False if it was not pending."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE items SET status = ?, decided_label = ?, decided_by = ?, decided_ms = ? "
                "WHERE id = ? AND status = 'pending'", (status, label, by, now_ms(), item_id))
            return cur.rowcount == 1

    def _select(self, q: str, args: tuple) -> list[ReviewItem]:
        with self._lock:
            rows = self._conn.execute(q, args).fetchall()
        return [_item(r) for r in rows]


def _item(r: sqlite3.Row | tuple) -> ReviewItem:
    return ReviewItem(id=r[0], window_id=r[1], window=UncertainWindow.model_validate_json(r[2]),
                      proposed=r[3], label=r[4], source=r[5], confidence=r[6], reason=r[7], detail=r[8],
                      novel=bool(r[9]), status=r[10], decided_label=r[11], decided_by=r[12], created_ms=r[13])


def _strip_truth(w: UncertainWindow) -> UncertainWindow:
    """The window without the flows' ground-truth `label` field (never shown, never stored)."""
    if all(f.label is None for f in w.flows):
        return w
    return w.model_copy(update={"flows": [f.model_copy(update={"label": None}) for f in w.flows]})


def class_name(label: str) -> str:
    """A label a person typed, as a class name: `novel:` dropped, lower_snake_case checked."""
    name = label.strip().lower()
    name = name[len(NOVEL_PREFIX):] if name.casefold().startswith(NOVEL_PREFIX) else name
    if not _CLASS_NAME.match(name):
        raise ReviewError(f"{label!r} is not a class name (lower_snake_case, 2-48 characters)")
    return name


def decide(queue: ReviewQueue, store: DatasetStore, ledger: LabelLedger, item_id: int,
           label: str | None, who: str, known: Iterable[str] = ()) -> tuple[ReviewItem, str]:
    """A person's verdict: accept the proposal (`label` None) or correct it to `label`.

    Returns the item and the class it was stored as. Idempotent up to the queue update:
    re-running after a crash neither stores the window twice nor publishes twice.
    """
    item = queue.get(item_id)
    if item is None:
        raise ReviewError(f"no review item {item_id}")
    if item.status != "pending":
        raise ReviewError(f"item {item_id} was already decided ({item.status} as "
                          f"{item.decided_label!r} by {item.decided_by})")
    if label is None and not (item.label or item.proposed):
        raise ReviewError(f"item {item_id} has no proposed label to accept; use `correct`")
    chosen = class_name(label if label is not None else (item.label or item.proposed or ""))
    by_fold = {k.casefold(): k for k in known}
    chosen = by_fold.get(chosen.casefold(), chosen)
    action = "review_accept" if label is None else "review_correct"
    source = f"human:{who}"
    store.append("labelled", window_rows(item.window, chosen, label_source=source, confidence=1.0),
                 note=f"review item {item_id} by {who}")
    queue.resolve(item_id, chosen, source, "accepted" if label is None else "corrected")
    rec = Label(window_id=item.window_id, label=chosen, source=source, confidence=1.0, accepted=True,
                reason=action, novel=chosen not in by_fold.values(), model_version=item.window.model_version,
                rationale=f"review item {item_id}; proposed {item.proposed!r} ({item.reason})", at_ms=now_ms())
    ledger.commit([Decision(item.window_id, "accepted", chosen, actor=source, action=action,
                            figures={"item": item_id, "proposed": item.proposed, "source": item.source,
                                     "confidence": item.confidence, "parked_reason": item.reason},
                            publish=encode(rec))])
    return item, chosen
