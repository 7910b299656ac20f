"""The Designer: intent → blueprint, drafted by an LLM and self-reviewed, or taken from the library.

    >>> designer = Designer(llm_client, library)          # Designer(None, library): offline
    >>> d = designer.design(intent, twin.summary())
    >>> d.blueprint, d.provenance, d.review_issues

With an LLM, the draft prompt holds the intent, the twin's aggregates, the KPI catalogue,
the values steps can read, one or two expert blueprints as examples, and the feedback of
earlier rounds. An evaluator prompt then reviews the draft against the intent; a rejected
draft with a valid revision is replaced by it. The intent's required KPIs are always
merged in, so a draft cannot weaken the operator's targets. Offline, the expert for the
intent's action is instantiated (DesignError when there is none).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm_agents.blueprints.errors import DesignError
from llm_agents.blueprints.library import ExpertLibrary, merge_kpis
from llm_agents.blueprints.schema import (ACTIONS, GIVEN, Blueprint, BlueprintDraft, Intent,
                                          kpi_problems)
from llm_agents.errors import LLMContextExceeded, LLMError
from llm_agents.prompts import data_block
from llm_agents.twin.model import KPI_CATALOGUE


class BlueprintReview(BaseModel):
    """The evaluator's answer (schema `blueprint_review`)."""

    model_config = ConfigDict(extra="forbid", title="blueprint_review")

    approved: bool
    issues: list[str] = Field(max_length=20)
    revised: BlueprintDraft | None


@dataclass
class DesignResult:
    blueprint: Blueprint
    provenance: str
    review_issues: list[str] = field(default_factory=list)
    llm_calls: int = 0


class Designer:
    def __init__(self, client: Any | None = None, library: ExpertLibrary | None = None, *,
                 self_review: bool = True, max_tokens: int | None = None) -> None:
        self.client, self.library = client, library or ExpertLibrary.load()
        self.self_review, self.max_tokens = self_review, max_tokens

    @property
    def offline(self) -> bool:
        return self.client is None

    def design(self, intent: Intent, twin_summary: dict[str, Any] | None = None,
               feedback: Sequence[str] = (), previous: Blueprint | None = None) -> DesignResult:
        if self.offline:
            return self._from_library(intent)
        variables = self._variables(intent, twin_summary or {}, feedback, previous)
        try:
            draft, model, calls = self._ask("design_blueprint", variables, BlueprintDraft, "blueprint_design")
        except DesignError as exc:
            # An endpoint whose context cannot hold the design prompt never will: the expert
            # library designs instead, and the provenance says so.
            if not isinstance(exc.__cause__, LLMContextExceeded) or self.library.match(intent) is None:
                raise
            res = self._from_library(intent)
            return DesignResult(res.blueprint, f"{res.provenance} (the LLM's context is too small to design)",
                                res.review_issues, res.llm_calls)
        blueprint = self._finish(draft, intent)
        issues: list[str] = []
        if self.self_review:
            blueprint, issues, model2 = self._review(blueprint, variables)
            calls += 1
            model = model2 or model
        return DesignResult(blueprint, f"llm:{model}", issues, calls)

    def _from_library(self, intent: Intent) -> DesignResult:
        expert = self.library.match(intent)
        if expert is None:
            raise DesignError(f"offline: no expert blueprint for action {intent.action!r} "
                              f"(experts: {', '.join(self.library.names())})")
        return DesignResult(expert.instantiate(intent), f"library:{expert.name}")

    def _variables(self, intent: Intent, summary: dict[str, Any], feedback: Sequence[str],
                   previous: Blueprint | None) -> dict[str, object]:
        return {
            "intent": data_block("intent", intent.for_code()),
            "required_kpis": data_block("required_kpis", [k.model_dump(mode="json") for k in intent.required_kpis()]),
            "twin": data_block("twin", summary),
            "kpi_catalogue": data_block("kpi_catalogue", KPI_CATALOGUE),
            "given": data_block("given", GIVEN),
            "actions": ", ".join(ACTIONS),
            "examples": data_block("examples", self.library.examples(intent, n=2)),
            "feedback": data_block("feedback", {"problems": list(feedback),
                                                "previous_blueprint": previous.draft().model_dump(mode="json")
                                                if previous else None}),
        }

    def _ask(self, template: str, variables: dict[str, object], schema: type[BaseModel],
             purpose: str) -> tuple[Any, str, int]:
        try:
            res = self.client.complete_json(template, variables, schema, purpose=purpose, max_tokens=self.max_tokens)
        except LLMError as exc:
            raise DesignError(f"the Designer LLM failed ({purpose}): {exc}") from exc
        return res.data, res.model, 1

    @staticmethod
    def _finish(draft: BlueprintDraft, intent: Intent) -> Blueprint:
        """A blueprint from a draft, with the intent's KPIs merged in; DesignError listing problems."""
        if intent.action and draft.action != intent.action:
            raise DesignError(f"the blueprint's action {draft.action!r} is not the intent's {intent.action!r}")
        data = draft.model_dump()
        data["kpis"] = merge_kpis(draft.kpis, intent.required_kpis())
        try:
            bp = Blueprint(intent=intent, **data)
        except ValidationError as exc:
            raise DesignError([e["msg"] for e in exc.errors()][:10]) from None
        problems = kpi_problems(bp)
        if problems:
            raise DesignError(problems)
        return bp

    def _review(self, bp: Blueprint, variables: dict[str, object]) -> tuple[Blueprint, list[str], str]:
        review_vars = {k: variables[k] for k in ("intent", "required_kpis", "twin", "kpi_catalogue", "given")}
        review_vars["blueprint"] = data_block("blueprint", bp.draft().model_dump(mode="json"))
        review, model, _ = self._ask("review_blueprint", review_vars, BlueprintReview, "blueprint_review")
        if review.approved or review.revised is None:
            return bp, list(review.issues), model
        try:
            return self._finish(review.revised, bp.intent), list(review.issues), model
        except DesignError as exc:  # a broken revision: keep the draft, note why
            return bp, list(review.issues) + [f"revision rejected: {exc}"], model
