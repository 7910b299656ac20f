"""A package surface whose names import their module on first use.

Importing `llm_agents` or one of its stages must stay cheap (no openai, torch or sklearn
until a name that needs them is touched):

    __getattr__, __all__ = lazy_surface(__name__, {"Labeler": "llm_agents.labeling.labeler"})
"""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_surface(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """(`__getattr__`, `__all__`) for a package exporting `name -> module` lazily."""
    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__, sorted(exports)
