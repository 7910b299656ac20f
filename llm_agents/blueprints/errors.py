"""What can go wrong while turning an intent into a validated blueprint.

    EdgeloopError                 (contracts.errors)
     └── BlueprintError           a blueprint could not be designed or coded
          ├── DesignError         no usable blueprint: invalid draft, no expert for the intent
          └── CodeError           no usable step code: invalid source, no expert code offline

LLM failures keep their own types (llm_agents.errors.LLMError); the loop turns both
kinds into feedback for the next round instead of giving up.
"""
from __future__ import annotations

from contracts.errors import EdgeloopError


class BlueprintError(EdgeloopError):
    """Carries `problems`, the sentences fed back to the Designer or Coder."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class DesignError(BlueprintError):
    pass


class CodeError(BlueprintError):
    """`failures` maps step name to its problem; `partial` holds the steps that were coded."""

    def __init__(self, problems: list[str] | str, *, failures: dict[str, str] | None = None,
                 partial: dict[str, str] | None = None, llm_calls: int = 0) -> None:
        self.failures, self.partial, self.llm_calls = failures or {}, partial or {}, llm_calls
        super().__init__(problems)
