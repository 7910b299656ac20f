"""Showing traffic-derived strings on a terminal: never as markup, never as control codes.

Window keys, addresses, ports, flow ids, policy summaries and reasons come from the
network (or from an LLM) and may hold Rich markup (`[red]`, `[link=...]`) or terminal
escape sequences. Every table cell and message that shows one goes through here.

    >>> str(safe("[red]10.0.0.1[/]\\x1b[2J"))
    '[red]10.0.0.1[/]'
    >>> plain("10.0.0.1\\x1b]0;owned\\x07\\n")
    '10.0.0.1?]0;owned??'
    >>> str(safe("a\x1b]0;title\x07b"))
    'ab'
"""
from __future__ import annotations

import re
from typing import Any

from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?)")


def safe(value: Any, style: str = "") -> Text:
    """A Rich Text cell: shown literally (no markup), control codes stripped."""
    return Text(_CONTROL.sub("", _ANSI.sub("", str(value))), style=style)


def plain(value: Any) -> str:
    """For click.echo and logs: every control character (newlines included) shown as '?'."""
    return _CONTROL.sub("?", str(value))
