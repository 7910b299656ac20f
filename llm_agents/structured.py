"""Structured answers: the JSON schema each output form sends, and parsing what comes back.

OpenAI's strict `json_schema` mode needs every property required and no extras
(`strict_json_schema`); answers from weaker endpoints may wrap the object in prose, a code
fence or `<think>` reasoning, so `parse_json_as` tries each JSON object in the text in turn.

    >>> parse_json_as('Sure! ```json\n{"label": "syn_scan"}\n```', Answer).label
    'syn_scan'
"""
from __future__ import annotations

import functools
import json
import re
from typing import Any, Iterator, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_MAX_CANDIDATES = 64  # JSON objects tried per answer; bounds the work on long garbage


def schema_name(schema: type[BaseModel]) -> str:
    """The json_schema name for `schema`: its model_config title, else its snake_cased name."""
    title = schema.model_config.get("title")
    if title:
        return str(title)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", schema.__name__).lower()


@functools.lru_cache(maxsize=128)
def strict_json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the form OpenAI's strict mode accepts (cached: don't mutate).

    Every object lists all its properties as required and forbids others; defaults are
    dropped; a `$ref` loses its sibling keywords. Use plain models (no free-form dicts).
    """
    return _strict(schema.model_json_schema())


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "default":
            continue
        if key in ("properties", "$defs"):
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        else:
            out[key] = _strict(value)
    if out.get("type") == "object" and "properties" in out:
        out["additionalProperties"] = False
        out["required"] = list(out["properties"])
    if "$ref" in out and len(out) > 1:
        out = {"$ref": out["$ref"]}
    return out


def json_candidates(text: str) -> Iterator[Any]:
    """JSON objects found in `text`, most likely first: the whole text, then each `{...}`."""
    text = _THINK_RE.sub("", text).strip()
    try:
        yield json.loads(text)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for n, match in enumerate(re.finditer(r"\{", text)):
        if n >= _MAX_CANDIDATES:
            return
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        yield obj


def parse_json_as(text: str, schema: type[T]) -> T:
    """The first JSON object in `text` valid as `schema`; ValueError naming why none is."""
    first_error: str | None = None
    for obj in json_candidates(text):
        if not isinstance(obj, dict):
            continue
        tries = [obj]
        if len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
            tries.append(next(iter(obj.values())))
        for candidate in tries:
            try:
                return schema.model_validate(candidate)
            except ValidationError as exc:
                first_error = first_error or _short(exc)
    raise ValueError(first_error or "no JSON object in the answer")


def _short(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"schema: {loc}: {err['msg']}" if loc else f"schema: {err['msg']}"


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)
