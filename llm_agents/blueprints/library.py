"""The expert blueprints shipped with edgeloop: offline mode's policies and the LLM's examples.

Each expert is a blueprint draft (`experts/<name>.json`) and its step functions
(`experts/<name>.py`, one function per step, named after the step). They are generic:
the code reads its parameters (addresses, ports, class) from the `intent` input at run
time, so one expert serves every intent of its action.

    >>> lib = ExpertLibrary.load()
    >>> expert = lib.match(intent)                 # by the intent's action, or None
    >>> bp = expert.instantiate(intent)            # a Blueprint for this intent
    >>> expert.code["select_sources"]              # the step's source, run only in the sandbox
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from llm_agents.blueprints.schema import KPI, Blueprint, BlueprintDraft, Intent

EXPERTS = ("block_source", "rate_limit_source", "raise_class_threshold", "isolate_host",
           "allow_list_service", "suppress_alerts")


def merge_kpis(kpis: Iterable[KPI], required: Iterable[KPI]) -> list[KPI]:
    """`kpis` with each required KPI added, or replacing one on the same name and comparator."""
    out = {(k.name, k.comparator): k for k in kpis}
    for r in required:
        out[(r.name, r.comparator)] = r
    return list(out.values())


def step_sources(module_source: str) -> dict[str, str]:
    """Split a module into one self-contained source per top-level function (imports included)."""
    tree = ast.parse(module_source)
    imports = [ast.get_source_segment(module_source, n) for n in tree.body
               if isinstance(n, (ast.Import, ast.ImportFrom))]
    header = "\n".join(i for i in imports if i)
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            body = ast.get_source_segment(module_source, node) or ""
            out[node.name] = f"{header}\n\n\n{body}\n" if header else f"{body}\n"
    return out


@dataclass(frozen=True)
class ExpertBlueprint:
    name: str
    draft: BlueprintDraft
    code: dict[str, str]

    def instantiate(self, intent: Intent) -> Blueprint:
        """This expert as a blueprint for `intent`; the intent's required KPIs override the defaults."""
        data = self.draft.model_dump()
        data["kpis"] = merge_kpis(self.draft.kpis, intent.required_kpis())
        return Blueprint(intent=intent, **data)

    def example(self) -> dict[str, Any]:
        """The draft and its code, as an example for the Designer and Coder prompts."""
        return {"blueprint": self.draft.model_dump(mode="json"), "code": self.code}


class ExpertLibrary:
    def __init__(self, experts: dict[str, ExpertBlueprint]) -> None:
        self.experts = experts

    @classmethod
    def load(cls, directory: Path | None = None) -> "ExpertLibrary":
        """Read every `<name>.json` + `<name>.py` pair (default: the shipped library)."""
        root = directory or Path(str(resources.files("llm_agents.blueprints").joinpath("experts")))
        experts = {}
        for spec in sorted(root.glob("*.json")):
            draft = BlueprintDraft.model_validate(json.loads(spec.read_text(encoding="utf-8")))
            code = step_sources(spec.with_suffix(".py").read_text(encoding="utf-8"))
            missing = [s.name for s in draft.steps if s.name not in code]
            if missing:
                raise ValueError(f"expert {spec.stem}: no code for steps {missing}")
            experts[draft.name] = ExpertBlueprint(draft.name, draft, {s.name: code[s.name] for s in draft.steps})
        return cls(experts)

    def names(self) -> list[str]:
        return sorted(self.experts)

    def get(self, name: str) -> ExpertBlueprint:
        return self.experts[name]

    def match(self, intent: Intent) -> ExpertBlueprint | None:
        """The expert for the intent's action (experts are named after actions), or None."""
        return self.experts.get(intent.action or "")

    def examples(self, intent: Intent | None = None, n: int = 2) -> list[dict[str, Any]]:
        """Up to n experts as prompt examples: the matching one first, then others."""
        first = self.match(intent) if intent is not None else None
        rest = [e for name, e in sorted(self.experts.items()) if e is not first]
        return [e.example() for e in ([first] if first else []) + rest][:n]
