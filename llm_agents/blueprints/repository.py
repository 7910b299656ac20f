"""Validated blueprints with their code and success record, kept as JSON files for reuse.

    >>> repo = BlueprintRepository(Path("var/blueprints"))
    >>> rec = repo.add(blueprint, code, provenance="llm:qwen", kpis=report.kpis)
    >>> for rec in repo.find(intent): ...           # same action and target kinds, best first
    >>> repo.record(rec.record_id, intent, ok=False, kpis=report.kpis)

Similarity is deliberately simple: a stored blueprint is offered for an intent with the
same action and the same kinds of target (sources, hosts, services, attack class, rate,
confidence), ranked by its success rate (Laplace-smoothed) and then by use. Records are
written atomically (temporary file, then rename); one file per record.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_agents.blueprints.coder import code_sha256
from llm_agents.blueprints.schema import Blueprint, BlueprintDraft, Intent

MAX_HISTORY = 50


class Use(BaseModel):
    intent: str
    ok: bool
    kpis: dict[str, float]
    at_ms: int


class BlueprintRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["edgeloop.blueprint_record/1"] = Field("edgeloop.blueprint_record/1", alias="schema")
    record_id: str
    draft: BlueprintDraft
    code: dict[str, str]
    code_sha256: str
    provenance: str
    action: str
    target_kinds: list[str]
    successes: int = 0
    failures: int = 0
    history: list[Use] = Field(default_factory=list)
    created_ms: int
    updated_ms: int

    @property
    def success_rate(self) -> float:
        return (self.successes + 1) / (self.successes + self.failures + 2)

    def blueprint_for(self, intent: Intent) -> Blueprint:
        from llm_agents.blueprints.library import merge_kpis
        data = self.draft.model_dump()
        data["kpis"] = merge_kpis(self.draft.kpis, intent.required_kpis())
        return Blueprint(intent=intent, **data)


def _now_ms() -> int:
    return int(time.time() * 1000)


class BlueprintRepository:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, record_id: str) -> Path:
        return self.directory / f"{record_id}.json"

    def _write(self, rec: BlueprintRecord) -> None:
        path = self._path(rec.record_id)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(rec.model_dump_json(by_alias=True, indent=1), encoding="utf-8")
        tmp.replace(path)

    def get(self, record_id: str) -> BlueprintRecord | None:
        path = self._path(record_id)
        return BlueprintRecord.model_validate_json(path.read_text(encoding="utf-8")) if path.exists() else None

    def all(self) -> list[BlueprintRecord]:
        out = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                out.append(BlueprintRecord.model_validate_json(path.read_text(encoding="utf-8")))
            except ValueError:
                continue  # a record from another version or a broken file is not offered
        return out

    def add(self, blueprint: Blueprint, code: dict[str, str], *, provenance: str,
            kpis: dict[str, float]) -> BlueprintRecord:
        """Store a validated blueprint (or count one more success for the same code)."""
        sha = code_sha256(code)
        record_id = f"{blueprint.name[:40]}-{sha[:12]}"
        action, kinds = blueprint.intent.signature()
        rec = self.get(record_id) or BlueprintRecord(
            record_id=record_id, draft=blueprint.draft(), code=dict(code), code_sha256=sha, provenance=provenance,
            action=action, target_kinds=list(kinds), created_ms=_now_ms(), updated_ms=_now_ms())
        self._append(rec, blueprint.intent, True, kpis)
        return rec

    def record(self, record_id: str, intent: Intent, *, ok: bool, kpis: dict[str, float]) -> None:
        rec = self.get(record_id)
        if rec is not None:
            self._append(rec, intent, ok, kpis)

    def _append(self, rec: BlueprintRecord, intent: Intent, ok: bool, kpis: dict[str, float]) -> None:
        rec.successes += int(ok)
        rec.failures += int(not ok)
        rec.history = (rec.history + [Use(intent=intent.text[:300], ok=ok, kpis=kpis, at_ms=_now_ms())])[-MAX_HISTORY:]
        rec.updated_ms = _now_ms()
        self._write(rec)

    def find(self, intent: Intent, limit: int = 3) -> list[BlueprintRecord]:
        """Stored blueprints for intents like this one, best first."""
        action, kinds = intent.signature()
        hits = [r for r in self.all() if r.action == action and tuple(r.target_kinds) == kinds]
        hits.sort(key=lambda r: (-r.success_rate, -(r.successes + r.failures), r.record_id))
        return hits[:limit]

    def summary(self) -> list[dict[str, Any]]:
        return [{"record_id": r.record_id, "action": r.action, "provenance": r.provenance,
                 "successes": r.successes, "failures": r.failures} for r in self.all()]
