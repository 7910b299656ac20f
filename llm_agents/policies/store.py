"""Policy proposals and what became of them: a state machine and an audit log, on disk.

    data_dir/policies/
        proposals/<policy_id>.json   each proposal exactly as proposed (its sha256 is in the db)
        policies.sqlite              `policies` (one row per proposal, its state) and
                                     `audit` (who, when, action, policy_id, details)

    proposed ─approve─► approved ─activate─► active ─expire─► expired
       │                   │                  │
       └─reject─► rejected └─────revoke───────┴─revoke─► revoked

Every transition checks the current state and writes its audit row in the same SQLite
transaction (`BEGIN IMMEDIATE`), so two people approving and rejecting at once cannot
both win, and no change happens without its audit row. Only an approved or active
policy yields a `PolicyActivation`, the record that goes to `policies.active`.

    >>> store = PolicyStore(settings.data_dir / "policies")
    >>> store.add(proposal, who="proposer")
    >>> store.approve(pid, who="alice", note="scan from the guest VLAN")
    >>> store.activation(pid)          # edgeloop.policy_activation/1, for policies.active
    >>> store.audit(pid)
"""
from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from contracts.errors import EdgeloopError
from contracts.policy_model import PolicyProposal
from streams.active_policies import PolicyActivation, PolicyRevocation

STATES = ("proposed", "approved", "rejected", "active", "revoked", "expired")
LIVE = ("proposed", "approved", "active")
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "approve": (frozenset({"proposed"}), "approved"),
    "reject": (frozenset({"proposed"}), "rejected"),
    "activate": (frozenset({"approved"}), "active"),
    "revoke": (frozenset({"approved", "active"}), "revoked"),
    "expire": (frozenset({"active"}), "expired"),
}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (
    policy_id TEXT PRIMARY KEY, state TEXT NOT NULL, created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, proposal_sha256 TEXT NOT NULL, code_sha256 TEXT NOT NULL,
    provenance TEXT NOT NULL, action TEXT NOT NULL, attack TEXT NOT NULL, sources TEXT NOT NULL,
    summary TEXT NOT NULL, alert_id TEXT NOT NULL, approved_by TEXT, approved_ms INTEGER,
    expires_ms INTEGER, note TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, who TEXT NOT NULL,
    action TEXT NOT NULL, policy_id TEXT NOT NULL, details TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_policy ON audit (policy_id, seq);
"""


class PolicyStoreError(EdgeloopError):
    """A policy is unknown, ambiguous, or not in a state that allows the action."""


class PolicyNotFound(PolicyStoreError):
    pass


class PolicyStateError(PolicyStoreError):
    def __init__(self, policy_id: str, state: str, action: str, detail: str = "") -> None:
        self.policy_id, self.state, self.action = policy_id, state, action
        super().__init__(f"policy {policy_id} is {state}: cannot {action}{': ' + detail if detail else ''}")


@dataclass(frozen=True)
class PolicyRow:
    policy_id: str
    state: str
    created_ms: int
    updated_ms: int
    proposal_sha256: str
    code_sha256: str
    provenance: str
    action: str
    attack: str
    sources: list[str]
    summary: str
    alert_id: str
    approved_by: str | None
    approved_ms: int | None
    expires_ms: int | None
    note: str


@dataclass(frozen=True)
class AuditRow:
    seq: int
    at_ms: int
    who: str
    action: str
    policy_id: str
    details: dict[str, Any]


@dataclass(frozen=True)
class PolicyCounts:
    """What the store holds at one moment, for metrics (`PolicyStore.counts`)."""

    states: dict[str, int]           # every state in STATES, 0 included
    oldest_proposed_ms: int | None   # created_ms of the longest-waiting proposal
    actions: dict[str, int]          # audit rows per action, ever


def _now_ms() -> int:
    return int(time.time() * 1000)


def check_who(who: str) -> str:
    if not isinstance(who, str) or not who.strip() or len(who) > 200 or any(ord(c) < 32 for c in who):
        raise PolicyStoreError(f"who={who!r}: a name of 1-200 printable characters is needed")
    return who.strip()


def proposal_bytes(p: PolicyProposal) -> bytes:
    return p.dump_json()


class PolicyStore:
    def __init__(self, directory: Path, clock: Callable[[], int] = _now_ms) -> None:
        self.directory, self.clock = Path(directory), clock
        (self.directory / "proposals").mkdir(parents=True, exist_ok=True)
        self.db_path = self.directory / "policies.sqlite"
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            db.executescript(_SCHEMA)
        finally:
            db.close()

    @contextlib.contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _path(self, policy_id: str) -> Path:
        return self.directory / "proposals" / f"{policy_id}.json"

    @staticmethod
    def _audit(db: sqlite3.Connection, at: int, who: str, action: str, pid: str, details: dict) -> None:
        db.execute("INSERT INTO audit (at_ms, who, action, policy_id, details) VALUES (?, ?, ?, ?, ?)",
                   (at, who, action, pid, json.dumps(details, sort_keys=True, default=str)))

    # -- adding and reading -------------------------------------------------------------------
    def add(self, proposal: PolicyProposal, *, who: str = "proposer", alert_id: str = "",
            details: dict[str, Any] | None = None) -> bool:
        """Store a new proposal (state `proposed`); False when its id is already known."""
        pid, who = proposal.policy_id, check_who(who)
        if not _ID_RE.match(pid):
            raise PolicyStoreError(f"policy id {pid!r}: letters, digits, '_' and '-' only (max 64)")
        raw = proposal_bytes(proposal)
        sha = hashlib.sha256(raw).hexdigest()
        intent = proposal.intent
        pol = proposal.policy
        sources = sorted({*pol.block_sources, *(s for r in pol.rate_limit_sources for s in r.sources),
                          *pol.isolate_hosts})
        with self._tx() as db:
            if db.execute("SELECT 1 FROM policies WHERE policy_id = ?", (pid,)).fetchone():
                return False
            path = self._path(pid)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(raw)
            tmp.replace(path)
            now = self.clock()
            db.execute("INSERT INTO policies (policy_id, state, created_ms, updated_ms, proposal_sha256, "
                       "code_sha256, provenance, action, attack, sources, summary, alert_id) "
                       "VALUES (?, 'proposed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (pid, proposal.created_ms, now, sha, proposal.code_sha256, proposal.provenance,
                        str(intent.get("action") or ""), str(intent.get("attack") or ""), json.dumps(sources),
                        "; ".join(pol.describe()), alert_id))
            self._audit(db, now, who, "propose", pid, {"provenance": proposal.provenance, "alert_id": alert_id,
                                                       "proposal_sha256": sha, **(details or {})})
        return True

    def _row(self, r: sqlite3.Row) -> PolicyRow:
        d = dict(r)
        d["sources"] = json.loads(d["sources"])
        return PolicyRow(**d)

    def get(self, policy_id: str) -> PolicyRow:
        with self._tx(write=False) as db:
            r = db.execute("SELECT * FROM policies WHERE policy_id = ?", (policy_id,)).fetchone()
        if r is None:
            raise PolicyNotFound(f"no policy {policy_id!r}")
        return self._row(r)

    def resolve(self, prefix: str) -> str:
        """The full id for a unique prefix (ids are long; people type the start)."""
        if not prefix or not _ID_RE.match(prefix):
            raise PolicyNotFound(f"no policy {prefix!r}")
        with self._tx(write=False) as db:
            rows = db.execute("SELECT policy_id FROM policies WHERE substr(policy_id, 1, ?) = ? "
                              "ORDER BY policy_id LIMIT 3", (len(prefix), prefix)).fetchall()
        ids = [r[0] for r in rows]
        if prefix in ids:
            return prefix
        if not ids:
            raise PolicyNotFound(f"no policy {prefix!r}")
        if len(ids) > 1:
            raise PolicyStoreError(f"{prefix!r} is ambiguous: {', '.join(ids)}, ...")
        return ids[0]

    def proposal(self, policy_id: str) -> PolicyProposal:
        """The stored proposal, checked against the hash recorded when it was added."""
        row = self.get(policy_id)
        raw = self._path(policy_id).read_bytes()
        if hashlib.sha256(raw).hexdigest() != row.proposal_sha256:
            raise PolicyStoreError(f"proposal file of {policy_id} does not match its recorded sha256")
        return PolicyProposal.model_validate_json(raw)

    def list(self, states: Iterable[str] | None = None) -> list[PolicyRow]:
        want = tuple(states or STATES)
        marks = ",".join("?" * len(want))
        with self._tx(write=False) as db:
            rows = db.execute(f"SELECT * FROM policies WHERE state IN ({marks}) ORDER BY created_ms, policy_id",
                              want).fetchall()
        return [self._row(r) for r in rows]

    def audit(self, policy_id: str | None = None) -> list[AuditRow]:
        q, args = "SELECT * FROM audit", ()
        if policy_id is not None:
            q, args = q + " WHERE policy_id = ?", (policy_id,)
        with self._tx(write=False) as db:
            rows = db.execute(q + " ORDER BY seq", args).fetchall()
        return [AuditRow(r["seq"], r["at_ms"], r["who"], r["action"], r["policy_id"], json.loads(r["details"]))
                for r in rows]

    def live_covering(self, sources: Iterable[str]) -> list[PolicyRow]:
        """Proposed, approved or active policies whose network actions name all these sources."""
        want = set(sources)
        return [r for r in self.list(LIVE) if want and want <= set(r.sources)]

    # -- transitions ----------------------------------------------------------------------
    def transition(self, policy_id: str, action: str, who: str, details: dict[str, Any] | None = None,
                   **fields: Any) -> PolicyRow:
        """Move a policy along TRANSITIONS, with its audit row, atomically."""
        allowed, target = TRANSITIONS[action]
        who = check_who(who)
        with self._tx() as db:
            r = db.execute("SELECT state FROM policies WHERE policy_id = ?", (policy_id,)).fetchone()
            if r is None:
                raise PolicyNotFound(f"no policy {policy_id!r}")
            if r["state"] not in allowed:
                raise PolicyStateError(policy_id, r["state"], action)
            now = self.clock()
            sets = ", ".join(["state = ?", "updated_ms = ?", *(f"{k} = ?" for k in fields)])
            db.execute(f"UPDATE policies SET {sets} WHERE policy_id = ?",
                       (target, now, *fields.values(), policy_id))
            self._audit(db, now, who, action, policy_id,
                        {"from": r["state"], "to": target, "os_user": _os_user(), **(details or {})})
        return self.get(policy_id)

    def approve(self, policy_id: str, who: str, note: str = "", broad_reason: str = "") -> PolicyRow:
        """`broad_reason`: the operator's reason for broad actions (see streams.guard), kept in
        the audit log and carried by the activation so that the edge's guard lets them pass."""
        expires_s = self.proposal(policy_id).policy.expires_s
        now = self.clock()
        details = {k: v[:500] for k, v in (("note", note), ("broad", broad_reason.strip())) if v}
        return self.transition(policy_id, "approve", who, details or None,
                               approved_by=check_who(who), approved_ms=now, expires_ms=now + expires_s * 1000,
                               note=note[:2000])

    def reject(self, policy_id: str, who: str, reason: str) -> PolicyRow:
        if not reason.strip():
            raise PolicyStoreError("a reason is needed to reject a policy")
        return self.transition(policy_id, "reject", who, {"reason": reason[:2000]})

    def mark_active(self, policy_id: str, who: str, details: dict[str, Any] | None = None) -> PolicyRow:
        return self.transition(policy_id, "activate", who, details)

    def revoke(self, policy_id: str, who: str, reason: str = "") -> PolicyRow:
        return self.transition(policy_id, "revoke", who, {"reason": reason[:2000]})

    def expire_due(self, now_ms: int | None = None) -> list[str]:
        """Mark active policies past their expiry as expired (who: system); returns their ids."""
        now = self.clock() if now_ms is None else now_ms
        due = [r.policy_id for r in self.list(["active"]) if r.expires_ms is not None and r.expires_ms <= now]
        done = []
        for pid in due:
            try:
                self.transition(pid, "expire", "system", {"expires_ms": self.get(pid).expires_ms})
                done.append(pid)
            except PolicyStateError:
                continue  # revoked meanwhile
        return done

    def counts(self, now_ms: int | None = None) -> PolicyCounts:
        """Policies per state, the oldest waiting proposal and audit rows per action (read-only).

        An active policy past its expiry counts as expired: enforcers have already lifted
        it, whether or not `expire_due` has marked it yet."""
        now = self.clock() if now_ms is None else now_ms
        with self._tx(write=False) as db:
            rows = db.execute("SELECT CASE WHEN state = 'active' AND expires_ms <= ? THEN 'expired' ELSE state END, "
                              "COUNT(*) FROM policies GROUP BY 1", (now,)).fetchall()
            oldest = db.execute("SELECT MIN(created_ms) FROM policies WHERE state = 'proposed'").fetchone()[0]
            actions = db.execute("SELECT action, COUNT(*) FROM audit GROUP BY action").fetchall()
        return PolicyCounts({st: 0 for st in STATES} | {r[0]: r[1] for r in rows}, oldest,
                            {r[0]: r[1] for r in actions})

    def note(self, policy_id: str, who: str, action: str, details: dict[str, Any] | None = None) -> None:
        """An audit row without a state change (publication, refusal, republication)."""
        with self._tx() as db:
            self._audit(db, self.clock(), check_who(who), action, policy_id, details or {})

    # -- records for policies.active --------------------------------------------------------
    def activation(self, policy_id: str) -> PolicyActivation:
        """The activation record; only for an approved or active policy."""
        row = self.get(policy_id)
        if row.state not in ("approved", "active"):
            raise PolicyStateError(policy_id, row.state, "activate", "only approved policies reach policies.active")
        p = self.proposal(policy_id)
        assert row.approved_by and row.approved_ms is not None and row.expires_ms is not None
        return PolicyActivation(policy_id=policy_id, policy=p.policy, approved_by=row.approved_by,
                                approved_ms=row.approved_ms, expires_ms=row.expires_ms,
                                code_sha256=p.code_sha256, proposal_sha256=row.proposal_sha256,
                                provenance=p.provenance, note=row.note, broad_reason=self._broad_reason(policy_id))

    def _broad_reason(self, policy_id: str) -> str:
        last = next((a for a in reversed(self.audit(policy_id)) if a.action == "approve"), None)
        return str(last.details.get("broad", "")) if last and last.details else ""

    def revocation(self, policy_id: str, reason: str = "") -> PolicyRevocation:
        row = self.get(policy_id)
        if row.state != "revoked":
            raise PolicyStateError(policy_id, row.state, "publish a revocation")
        last = next((a for a in reversed(self.audit(policy_id)) if a.action == "revoke"), None)
        return PolicyRevocation(policy_id=policy_id, revoked_by=last.who if last else "?",
                                revoked_ms=last.at_ms if last else row.updated_ms,
                                reason=reason or (last.details.get("reason", "") if last else ""))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
