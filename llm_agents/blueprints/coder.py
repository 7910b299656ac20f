"""The Coder: one Python function per blueprint step, from an LLM or from the expert library.

    >>> coder = Coder(llm_client, library)            # or Coder(None, library): offline
    >>> code = coder.write(blueprint)                  # {step name: source}
    >>> code = coder.write(blueprint, feedback={"measure_rate": "ZeroDivisionError ..."},
    ...                    previous=code)              # rewrites only the failing steps

A step's function is named after the step, takes exactly the step's inputs as parameters
and returns a dict holding at least its outputs. `check_source` reads the code (it never
runs it) for those rules and for imports outside the sandbox's allowed modules. The code
runs only inside llm_agents.blueprints.sandbox.
"""
from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from llm_agents.blueprints.errors import CodeError
from llm_agents.blueprints.library import ExpertLibrary
from llm_agents.blueprints.sandbox import ALLOWED_MODULES
from llm_agents.blueprints.schema import GIVEN, Blueprint, Step
from llm_agents.errors import LLMContextExceeded, LLMError
from llm_agents.prompts import data_block

MAX_SOURCE = 20_000


class StepCodeAnswer(BaseModel):
    """The Coder LLM's answer (schema `step_code`)."""

    model_config = ConfigDict(extra="forbid", title="step_code")

    function_name: str = Field(max_length=64)
    source: str = Field(max_length=MAX_SOURCE)
    notes: str = Field("", max_length=2000)


@dataclass
class CodeResult:
    sources: dict[str, str]
    provenance: str
    llm_calls: int = 0
    models: set[str] = field(default_factory=set)

    def sha256(self) -> str:
        return code_sha256(self.sources)


def code_sha256(sources: Mapping[str, str]) -> str:
    """The hash a proposal carries: canonical JSON of the step sources in step order."""
    canon = json.dumps(list(sources.items()), separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def check_source(source: str, name: str, inputs: list[str]) -> list[str]:
    """Problems with a step's source, found by reading it: syntax, signature, imports."""
    if len(source) > MAX_SOURCE:
        return [f"{name}: source longer than {MAX_SOURCE} characters"]
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"{name}: syntax error line {exc.lineno}: {exc.msg}"]
    problems = []
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if fn is None:
        problems.append(f"{name}: no top-level `def {name}(...)`")
    else:
        params = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
        if sorted(params) != sorted(inputs) or fn.args.vararg or fn.args.kwarg:
            problems.append(f"{name}: parameters must be exactly {inputs}, got {params}")
    for node in ast.walk(tree):
        problems += [f"{name}: {p}" for p in _escape_forms(node)]
    return problems


# Names step code has no business touching: dynamic import and evaluation, the builtins
# and the interpreter's own machinery. The sandbox holds without this check; it is here so
# that such code is refused with a reason before it ever runs.
FORBIDDEN_NAMES = frozenset({
    "__import__", "__builtins__", "__loader__", "__spec__", "importlib", "eval", "exec", "compile", "open",
    "globals", "locals", "vars", "breakpoint", "input", "getattr", "setattr", "delattr", "memoryview",
    "sys", "os", "builtins", "ctypes", "subprocess", "socket"})
# numpy's doors to the rest of the system
FORBIDDEN_ATTRIBUTES = frozenset({"ctypeslib", "ctypes", "f2py", "distutils", "testing", "os", "sys", "_core"})


def _escape_forms(node: ast.AST) -> list[str]:
    """Every way of importing or reaching outside the allowed modules that reading can see."""
    if isinstance(node, ast.Import):
        bad = [a.name for a in node.names if a.name.split(".")[0] not in ALLOWED_MODULES
               or FORBIDDEN_ATTRIBUTES & set(a.name.split(".")[1:])]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            return ["relative imports are not allowed"]
        module = node.module or ""
        allowed = module == "__future__" or (module.split(".")[0] in ALLOWED_MODULES
                                             and not FORBIDDEN_ATTRIBUTES & set(module.split(".")[1:]))
        bad = [] if allowed else [module]
        bad += [f"{module}.{a.name}" for a in node.names if a.name in FORBIDDEN_ATTRIBUTES]
    elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
        return [f"uses {node.id!r} (line {node.lineno}): not available to step code"]
    elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
        return [f"uses the attribute {node.attr!r} (line {node.lineno}): not available to step code"]
    elif isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr.endswith("__"):
        return [f"uses the dunder attribute {node.attr!r} (line {node.lineno}): not available to step code"]
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "__" in node.value and \
            any(w in node.value for w in ("__class__", "__subclasses__", "__globals__", "__builtins__",
                                          "__import__", "__mro__", "__bases__", "__code__", "__dict__")):
        return [f"a string names interpreter internals (line {node.lineno})"]
    else:
        return []
    return [f"imports {bad}; allowed: {', '.join(ALLOWED_MODULES)}"] if bad else []


class Coder:
    def __init__(self, client: Any | None = None, library: ExpertLibrary | None = None, *,
                 max_tokens: int | None = None) -> None:
        self.client, self.library = client, library or ExpertLibrary.load()
        self.max_tokens = max_tokens

    @property
    def offline(self) -> bool:
        return self.client is None

    def write(self, blueprint: Blueprint, *, feedback: Mapping[str, str] | None = None,
              previous: Mapping[str, str] | None = None) -> CodeResult:
        """Source for every step. With `previous`, only steps named in `feedback` (or '*') are rewritten."""
        if self.offline:
            return self._from_library(blueprint)
        feedback, previous = dict(feedback or {}), dict(previous or {})
        result, failures = CodeResult({}, "llm"), {}
        for step in blueprint.steps:
            if step.name in previous and step.name not in feedback and "*" not in feedback:
                result.sources[step.name] = previous[step.name]
                continue
            note = feedback.get(step.name) or feedback.get("*") or ""
            try:
                result.sources[step.name] = self._ask(blueprint, step, note, previous.get(step.name, ""), result)
            except CodeError as exc:
                if isinstance(exc.__cause__, LLMContextExceeded) and blueprint.name in self.library.experts:
                    try:  # an endpoint whose context cannot hold the prompt never will: the library codes
                        lib = self._from_library(blueprint)
                    except CodeError:
                        raise exc from exc.__cause__
                    lib.provenance += " (the LLM's context is too small to code)"
                    lib.llm_calls = result.llm_calls
                    return lib
                failures[step.name] = "; ".join(exc.problems)
        if failures:
            raise CodeError([f"{k}: {v}" for k, v in failures.items()], failures=failures,
                            partial=result.sources, llm_calls=result.llm_calls)
        result.provenance = "llm:" + ",".join(sorted(result.models)) if result.models else "llm"
        return result

    def _from_library(self, blueprint: Blueprint) -> CodeResult:
        expert = self.library.experts.get(blueprint.name)
        if expert is None or [s.name for s in expert.draft.steps] != [s.name for s in blueprint.steps]:
            raise CodeError(f"offline: no expert code for blueprint {blueprint.name!r}")
        return CodeResult(dict(expert.code), f"library:{expert.name}")

    def _ask(self, bp: Blueprint, step: Step, feedback: str, previous: str, result: CodeResult) -> str:
        expert = self.library.match(bp.intent)
        variables = {
            "blueprint": data_block("blueprint", bp.draft().model_dump(mode="json")),
            "intent": data_block("intent", bp.intent.for_code()),
            "step": data_block("step", step.model_dump(mode="json")),
            "given": data_block("given", {k: GIVEN[k] for k in step.inputs if k in GIVEN}),
            "example": data_block("example", expert.example() if expert else {}),
            "allowed_modules": ", ".join(ALLOWED_MODULES),
            "function_name": step.name, "parameters": ", ".join(step.inputs),
            "outputs": ", ".join(step.outputs),
            "feedback": data_block("feedback", {"problem": feedback, "previous_source": previous}),
        }
        try:
            res = self.client.complete_json("code_step", variables, StepCodeAnswer, purpose="blueprint_code",
                                            max_tokens=self.max_tokens)
        except LLMError as exc:
            result.llm_calls += 1
            raise CodeError(f"the Coder LLM failed: {exc}") from exc
        result.llm_calls += 1
        result.models.add(res.model)
        problems = [p.removeprefix(f"{step.name}: ") for p in
                    check_source(res.data.source, step.name, list(step.inputs))]
        if problems:
            raise CodeError(problems)
        return res.data.source
