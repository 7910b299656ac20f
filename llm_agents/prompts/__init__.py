"""Prompt templates, kept as files next to this module and rendered with `string.Template`.

Each prompt is `<name>.md` in this folder, written with `$name` placeholders:

    >>> render("label_windows", classes=data_block("classes", ["benign", "dos"]), ...)

A `str` value is inserted verbatim: it is trusted prompt text written by edgeloop. Any
other value (numbers, lists, dicts) is inserted as quoted JSON (`quote_data`). Traffic
content must go in through `data_block`, never as a plain string. A placeholder with no
value is an error (KeyError naming the template and the missing names).
"""
from __future__ import annotations

import functools
import re
import string
from importlib import resources

from llm_agents.prompts.render_data import data_block, parse_data_blocks, quote_data

__all__ = ["data_block", "load", "parse_data_blocks", "quote_data", "render"]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@functools.lru_cache(maxsize=64)
def load(name: str) -> string.Template:
    """The template `<name>.md` from this package (read once, cached)."""
    name = name.removesuffix(".md")
    if not _NAME_RE.match(name):
        raise ValueError(f"prompt name {name!r} must match {_NAME_RE.pattern}")
    path = resources.files(__package__).joinpath(f"{name}.md")
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {name}.md in {__package__}")
    return string.Template(path.read_text(encoding="utf-8"))


def render(name: str, **variables: object) -> str:
    """Fill template `name`; strings verbatim, everything else as quoted JSON."""
    template = load(name)
    missing = [v for v in template.get_identifiers() if v not in variables]
    if missing:
        raise KeyError(f"prompt {name!r} needs {', '.join(sorted(missing))}")
    values = {k: v if isinstance(v, str) else quote_data(v) for k, v in variables.items()}
    return template.substitute(values)
