"""The audit log and the label ledger: who decided what, when, and with which figures.

One SQLite file, `<data_dir>/audit.sqlite`, three tables:

    events     append-only: every label decision, review verdict, retrain, promotion and
               release, with the actor ("agent", "llm:<model>", "human:<who>"), the
               subject (a window id, a bundle version) and its figures as JSON
    decided    one row per window (or dead-lettered offset) the agent has finished with:
               accepted, parked, known or deadletter. A redelivered window found here
               is not labelled twice
    outbox     Label records waiting to be published on `labels`; the agent drains it.
               A review verdict written while no agent runs waits here, not lost

`LabelLedger.commit` writes decisions, outbox rows and their audit events in one
transaction, so a crash leaves either all of them or none.

    >>> log = AuditLog(data_dir / "audit.sqlite")
    >>> log.record("retrain", subject="3f1c...", actor="agent", figures={"macro_f1": 0.97})
    >>> log.events(action="promoted")
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, subject TEXT NOT NULL DEFAULT '', figures TEXT NOT NULL DEFAULT '{}',
    detail TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS events_action ON events(action, at_ms);
CREATE TABLE IF NOT EXISTS decided (
    window_id TEXT PRIMARY KEY, outcome TEXT NOT NULL, label TEXT, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, window_id TEXT NOT NULL, value BLOB NOT NULL,
    created_ms INTEGER NOT NULL, published_ms INTEGER);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(published_ms);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in WAL mode that waits for other writers (agent and `edgeloop review`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@dataclass(frozen=True)
class Event:
    id: int
    at_ms: int
    actor: str
    action: str
    subject: str
    figures: dict[str, Any]
    detail: str


@dataclass
class Decision:
    """One finished window: what the ledger, the outbox and the audit log get for it."""

    window_id: str
    outcome: str                     # accepted | parked | known | deadletter
    label: str | None = None
    actor: str = "agent"
    action: str = ""                 # the audit action; default label_<outcome>
    figures: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    publish: bytes | None = None     # an encoded Label for the outbox, if any


class AuditLog:
    """Append-only events. Thread-safe; several processes may write the same file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def record(self, action: str, *, subject: str = "", actor: str = "agent",
               figures: dict[str, Any] | None = None, detail: str = "") -> int:
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO events(at_ms, actor, action, subject, figures, detail) VALUES (?,?,?,?,?,?)",
                (now_ms(), actor, action, subject, _json(figures or {}), detail))
            return int(cur.lastrowid or 0)

    def events(self, action: str | None = None, subject: str | None = None,
               since_ms: int = 0, limit: int = 100_000) -> list[Event]:
        q, args = "SELECT id, at_ms, actor, action, subject, figures, detail FROM events WHERE at_ms >= ?", [since_ms]
        if action is not None:
            q, args = q + " AND action = ?", [*args, action]
        if subject is not None:
            q, args = q + " AND subject = ?", [*args, subject]
        with self._lock:
            rows = self._conn.execute(q + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [Event(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in rows]

    def count(self, actions: str | Sequence[str], since_ms: int = 0) -> int:
        """Events of the action (or any of the actions) at or after `since_ms`."""
        names = (actions,) if isinstance(actions, str) else tuple(actions)
        marks = ",".join("?" * len(names))
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM events WHERE action IN ({marks}) AND at_ms >= ?",
                                          (*names, since_ms)).fetchone()[0])

    def last(self, actions: Sequence[str]) -> Event | None:
        marks = ",".join("?" * len(actions))
        with self._lock:
            r = self._conn.execute(f"SELECT id, at_ms, actor, action, subject, figures, detail FROM events "
                                   f"WHERE action IN ({marks}) ORDER BY id DESC LIMIT 1", tuple(actions)).fetchone()
        return Event(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) if r else None


class LabelLedger:
    """Which windows are finished, and the Label records still to publish (same file as the log)."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def commit(self, decisions: Iterable[Decision]) -> list[Decision]:
        """Record decisions with their outbox rows and audit events, atomically.

        A window already decided keeps its first decision unless the new one is a
        review verdict or a late acceptance (outcome "accepted" over "parked").
        Returns the decisions written.
        """
        at, written = now_ms(), []
        conn = self.log._conn
        with self.log._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for d in decisions:
                    prev = conn.execute("SELECT outcome FROM decided WHERE window_id = ?",
                                        (d.window_id,)).fetchone()
                    if prev is not None and not (d.outcome == "accepted" and prev[0] == "parked"):
                        continue
                    conn.execute("INSERT OR REPLACE INTO decided(window_id, outcome, label, at_ms) VALUES (?,?,?,?)",
                                 (d.window_id, d.outcome, d.label, at))
                    conn.execute("INSERT INTO events(at_ms, actor, action, subject, figures, detail) "
                                 "VALUES (?,?,?,?,?,?)", (at, d.actor, d.action or f"label_{d.outcome}",
                                                          d.window_id, _json(d.figures), d.detail))
                    if d.publish is not None:
                        conn.execute("INSERT INTO outbox(window_id, value, created_ms) VALUES (?,?,?)",
                                     (d.window_id, d.publish, at))
                    written.append(d)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return written

    def decided(self, window_ids: Iterable[str]) -> dict[str, str]:
        """window_id -> outcome, for those already finished."""
        ids = list(window_ids)
        out: dict[str, str] = {}
        with self.log._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                q = f"SELECT window_id, outcome FROM decided WHERE window_id IN ({','.join('?' * len(chunk))})"
                out.update(dict(self.log._conn.execute(q, chunk).fetchall()))
        return out

    def outcomes(self) -> dict[str, int]:
        with self.log._lock:
            return dict(self.log._conn.execute("SELECT outcome, COUNT(*) FROM decided GROUP BY outcome").fetchall())

    def pending(self, limit: int = 1000) -> list[tuple[int, str, bytes]]:
        """(outbox id, window_id, encoded Label) not yet published, oldest first."""
        with self.log._lock:
            return self.log._conn.execute("SELECT id, window_id, value FROM outbox WHERE published_ms IS NULL "
                                          "ORDER BY id LIMIT ?", (limit,)).fetchall()

    def mark_published(self, ids: Sequence[int]) -> None:
        with self.log._lock:
            self.log._conn.executemany("UPDATE outbox SET published_ms = ? WHERE id = ?",
                                       [(now_ms(), i) for i in ids])

    def unpublished(self) -> int:
        with self.log._lock:
            return int(self.log._conn.execute("SELECT COUNT(*) FROM outbox WHERE published_ms IS NULL").fetchone()[0])


def _json(obj: Any) -> str:
    return json.dumps(_finite(obj), sort_keys=True, separators=(",", ":"), default=_plain,
                      allow_nan=False)


def _finite(obj: Any) -> Any:
    """Figures with NaN/inf replaced by None: JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _plain(v: Any) -> Any:
    """numpy scalars and arrays, sets and paths, as JSON; NaN is not JSON, so None."""
    import numpy as np

    if isinstance(v, np.generic):
        v = v.item()
        return None if isinstance(v, float) and v != v else v
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    return str(v)
