"""The blueprint loop: Designer → Coder → sandbox on the twin → validator, failures fed back.

    >>> loop = BlueprintLoop(Designer(llm, lib), Coder(llm, lib), Sandbox(), repository, max_rounds=3)
    >>> out = loop.run(intent, twin)
    >>> out.ok, out.provenance, out.report.kpis, [r.stage for r in out.rounds]
    >>> proposal = out.to_proposal()         # edgeloop.policy_proposal/1, when out.ok

The validator checks, in order: the schema (steps feed each other, the intent's KPIs are
present and not weakened), the code (one function per step with the step's inputs, allowed
imports), the run (every step in the sandbox against the twin's read-only view), the
policy (the final `policy` output parses as edgeloop.policy/1), and the KPIs (the twin's
report meets every target). A schema or KPI failure goes back to the Designer (a new
plan); a code, run or policy failure goes back to the Coder (only the failing step is
rewritten). Rounds are bounded. Offline, the library answers once: asking again would
give the same blueprint. A stored blueprint for a similar intent is tried first.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.policy_model import Policy, PolicyProposal
from llm_agents.blueprints.coder import Coder, check_source, code_sha256
from llm_agents.blueprints.designer import Designer
from llm_agents.blueprints.errors import CodeError, DesignError
from llm_agents.blueprints.repository import BlueprintRepository
from llm_agents.blueprints.sandbox import Sandbox, SandboxResult, StepSource
from llm_agents.blueprints.schema import Blueprint, Intent, dataflow_problems, kpi_problems
from llm_agents.twin.model import DigitalTwin, TwinReport


@dataclass
class Validation:
    stage: str                           # schema | code | run | policy | kpi | ok
    problems: list[str]
    failures: dict[str, str] = field(default_factory=dict)   # step -> problem, for the Coder
    policy: Policy | None = None
    report: TwinReport | None = None
    run: SandboxResult | None = None

    @property
    def ok(self) -> bool:
        return self.stage == "ok"


class Validator:
    """Checks a blueprint and its code by running them on a twin (see the module docstring)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def validate(self, bp: Blueprint, code: dict[str, str], twin: DigitalTwin, view: Path) -> Validation:
        problems = dataflow_problems(bp.steps) + kpi_problems(bp)
        if problems:
            return Validation("schema", problems)
        failures = {s.name: "; ".join(p) for s in bp.steps
                    if (p := check_source(code.get(s.name, ""), s.name, list(s.inputs)))}
        if failures:
            return Validation("code", list(failures.values()), failures)
        program = [StepSource(s.name, code[s.name], s.inputs, s.outputs) for s in bp.steps]
        run = self.sandbox.run(program, given=given_values(bp.intent, twin), view=view)
        if not run.ok:
            step = (run.error or {}).get("step", "*")
            return Validation("run", [run.problem()], {step if step in code else "*": run.problem()}, run=run)
        try:
            policy = Policy.from_actions(run.outputs.get("policy") or {})
        except (ValidationError, TypeError, ValueError) as exc:
            msg = f"the `policy` output is not a valid edgeloop.policy/1: {_short(exc)}"
            return Validation("policy", [msg], {bp.steps[-1].name: msg}, run=run)
        report = twin.evaluate(policy)
        misses = report.check(bp.kpis)
        if misses:
            return Validation("kpi", misses + [f"policy was: {'; '.join(policy.describe())}"],
                              policy=policy, report=report, run=run)
        return Validation("ok", [], policy=policy, report=report, run=run)


def given_values(intent: Intent, twin: DigitalTwin) -> dict[str, Any]:
    return {"intent": intent.for_code(), "class_names": twin.class_names, "alert_threshold": twin.alert_threshold}


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
    return str(exc)[:300]


@dataclass
class RoundRecord:
    round: int
    stage: str
    problems: list[str]
    blueprint: str
    provenance: str
    seconds: float


@dataclass
class LoopOutcome:
    ok: bool
    intent: Intent
    blueprint: Blueprint | None
    code: dict[str, str]
    policy: Policy | None
    report: TwinReport | None
    provenance: str
    rounds: list[RoundRecord]
    llm_calls: int = 0

    @property
    def code_sha256(self) -> str:
        return code_sha256(self.code)

    def to_proposal(self) -> PolicyProposal:
        if not (self.ok and self.blueprint and self.policy and self.report):
            raise ValueError("only a validated outcome becomes a proposal")
        return PolicyProposal(intent=self.intent.model_dump(mode="json", by_alias=True),
                              blueprint=self.blueprint.dump(), code_sha256=self.code_sha256, policy=self.policy,
                              kpis={**self.report.kpis, "truth": self.report.truth,
                                    "services": [s.model_dump() for s in self.report.services],
                                    "notes": self.report.notes},
                              provenance=self.provenance, created_ms=int(time.time() * 1000))

    def failure_record(self) -> dict[str, Any]:
        return {"ok": self.ok, "intent": self.intent.text, "provenance": self.provenance,
                "rounds": [r.__dict__ for r in self.rounds]}


class BlueprintLoop:
    def __init__(self, designer: Designer, coder: Coder, sandbox: Sandbox,
                 repository: BlueprintRepository | None = None, *, max_rounds: int = 3) -> None:
        if max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")
        self.designer, self.coder, self.repository = designer, coder, repository
        self.validator, self.max_rounds = Validator(sandbox), max_rounds

    def run(self, intent: Intent, twin: DigitalTwin) -> LoopOutcome:
        work = Path(tempfile.mkdtemp(prefix="edgeloop-loop-"))
        try:
            view = twin.export_view(work)
            reused, feedback = self._try_repository(intent, twin, view)
            return reused or self._rounds(intent, twin, view, feedback)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _try_repository(self, intent: Intent, twin: DigitalTwin, view: Path) -> tuple[LoopOutcome | None, list[str]]:
        if self.repository is None:
            return None, []
        feedback = []
        for rec in self.repository.find(intent):
            t0 = time.perf_counter()
            try:
                bp = rec.blueprint_for(intent)
            except ValidationError:
                continue
            v = self.validator.validate(bp, rec.code, twin, view)
            kpis = v.report.kpis if v.report else {}
            self.repository.record(rec.record_id, intent, ok=v.ok, kpis=kpis)
            rnd = RoundRecord(0, v.stage, v.problems, bp.name, f"repository:{rec.record_id}", time.perf_counter() - t0)
            if v.ok:
                prov = f"repository:{rec.record_id} ({rec.provenance})"
                return LoopOutcome(True, intent, bp, rec.code, v.policy, v.report, prov, [rnd]), []
            feedback += [f"a stored blueprint {bp.name!r} for a similar intent failed: {p}" for p in v.problems[:3]]
        return None, feedback

    def _rounds(self, intent: Intent, twin: DigitalTwin, view: Path, feedback: list[str]) -> LoopOutcome:
        summary = twin.summary()
        rounds: list[RoundRecord] = []
        bp: Blueprint | None = None
        previous_bp: Blueprint | None = None
        code: dict[str, str] = {}
        code_feedback: dict[str, str] = {}
        provenance, calls = "", 0
        last: Validation | None = None
        for n in range(1, self.max_rounds + 1):
            t0 = time.perf_counter()
            try:
                if bp is None:
                    design = self.designer.design(intent, summary, feedback, previous_bp)
                    bp, provenance, calls = design.blueprint, design.provenance, calls + design.llm_calls
                    code, code_feedback = {}, {}
                result = self.coder.write(bp, feedback=code_feedback, previous=code)
                code, calls = result.sources, calls + result.llm_calls
                v = self.validator.validate(bp, code, twin, view)
            except DesignError as exc:
                rounds.append(RoundRecord(n, "design", exc.problems, "", provenance, time.perf_counter() - t0))
                feedback = exc.problems
                if self.designer.offline:
                    break
                continue
            except CodeError as exc:
                calls += exc.llm_calls
                rounds.append(RoundRecord(n, "code", exc.problems, bp.name if bp else "", provenance,
                                          time.perf_counter() - t0))
                code, code_feedback = exc.partial, exc.failures or {"*": "; ".join(exc.problems)}
                if self.coder.offline:
                    break
                continue
            rounds.append(RoundRecord(n, v.stage, v.problems, bp.name, provenance, time.perf_counter() - t0))
            if v.ok:
                if self.repository is not None:
                    self.repository.add(bp, code, provenance=provenance, kpis=v.report.kpis if v.report else {})
                return LoopOutcome(True, intent, bp, code, v.policy, v.report, provenance, rounds, calls)
            if self.designer.offline and self.coder.offline:
                return LoopOutcome(False, intent, bp, code, v.policy, v.report, provenance, rounds, calls)
            if v.stage in ("schema", "kpi"):
                feedback, previous_bp, bp = v.problems, bp, None
            else:
                code_feedback = v.failures or {"*": "; ".join(v.problems)}
            last = v
        return LoopOutcome(False, intent, bp, code, last.policy if last else None,
                           last.report if last else None, provenance, rounds, calls)
