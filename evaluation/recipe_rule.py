"""Adoption rules for a recipe change, written as a file before the candidate is trained, and
judged on two `edgeloop experiment open-world` results (openworld-seeds.json).

A rule is a list of clauses. Each takes one figure per capture and seed, reduces it over the
seeds (and over the captures, where it says so), and tests the candidate's value against a
bound, the baseline's same value, or both:

    figure   lab_macro_f1 | false_alerts | deferred (benign windows) | known_right |
             unknown_missed | right:<class> (one known class's windows called right)
    captures manifest names, shell patterns allowed (["lab-heldout*"]); not for lab_macro_f1
    over     each (the clause holds on every capture) | pooled (the captures' windows
             summed, then the rate) | mean_of_medians (each capture's median seed, averaged)
    seeds    min | median | max: the candidate's and the baseline's value over the seeds
    tests    min, max (absolute); gain (>= baseline + g); max_over_baseline (<= baseline + d,
             or <= max(floor, baseline + d) with floor); min_under_baseline (>= baseline - d);
             max_ratio (<= baseline * r)

    >>> rule = load_rule("docs/rules/rule-15.toml")
    >>> verdict = judge(rule, candidate_seeds_json, baseline_seeds_json)
    >>> verdict["met"], verdict["rows"][0]

    $ edgeloop experiment judge docs/rules/rule-15.toml CAND/openworld-seeds.json BASE/openworld-seeds.json

A clause whose captures match nothing judged by both results is an error, not a pass.
"""
from __future__ import annotations

import fnmatch
import json
import statistics
import tomllib
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.errors import EdgeloopError

RULE_SCHEMA = "edgeloop.recipe_rule/1"
FIGURES = {"false_alerts": ("benign", "false_alert"), "deferred": ("benign", "deferred"),
           "known_right": ("known", "ok"), "unknown_missed": ("unknown", "miss")}
TESTS = ("min", "max", "gain", "max_over_baseline", "min_under_baseline", "max_ratio")


class RuleError(EdgeloopError):
    """A rule file that cannot be read or judged."""


class Clause(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    what: str = ""
    figure: str
    captures: list[str] = Field(default_factory=list)
    over: Literal["each", "pooled", "mean_of_medians"] = "each"
    seeds: Literal["min", "median", "max"] = "median"
    min: float | None = None
    max: float | None = None
    gain: float | None = None
    max_over_baseline: float | None = None
    floor: float | None = None
    min_under_baseline: float | None = None
    max_ratio: float | None = None

    @model_validator(mode="after")
    def _check(self) -> "Clause":
        if self.figure not in FIGURES and self.figure != "lab_macro_f1" and not self.figure.startswith("right:"):
            raise ValueError(f"figure {self.figure!r}: one of lab_macro_f1, {', '.join(FIGURES)}, right:<class>")
        if not any(getattr(self, t) is not None for t in TESTS):
            raise ValueError(f"clause {self.id}: no test ({', '.join(TESTS)})")
        if self.figure == "lab_macro_f1" and self.captures:
            raise ValueError(f"clause {self.id}: lab_macro_f1 has no captures")
        if self.figure != "lab_macro_f1" and not self.captures:
            raise ValueError(f"clause {self.id}: which captures? (captures = [\"ndpi-test\"], patterns allowed)")
        if self.floor is not None and self.max_over_baseline is None:
            raise ValueError(f"clause {self.id}: floor goes with max_over_baseline")
        return self


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str = Field(RULE_SCHEMA, alias="schema")
    name: str
    written: str = ""
    note: str = ""
    clause: list[Clause]


def load_rule(path: str | Path) -> Rule:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RuleError(f"{p}: cannot read the rule ({exc})") from exc
    if doc.get("schema", RULE_SCHEMA) != RULE_SCHEMA:
        raise RuleError(f"{p}: schema {doc.get('schema')!r}, not {RULE_SCHEMA!r}")
    try:
        return Rule.model_validate(doc)
    except ValidationError as exc:
        raise RuleError(f"{p}: {exc.errors()[0]['msg']} (at {'.'.join(map(str, exc.errors()[0]['loc']))})") from exc


def _counts(result: dict[str, Any], figure: str) -> dict[int, dict[str, tuple[float, float]]]:
    """Per seed, per manifest: (windows with the verdict, windows) of the figure."""
    if figure.startswith("right:"):
        kind, verdict, label = "known", "ok", figure.split(":", 1)[1]
    else:
        (kind, verdict), label = FIGURES[figure], None
    out: dict[int, dict[str, tuple[float, float]]] = {}
    for rec in result["per_seed"]:
        per = out.setdefault(rec["seed"], {})
        for f in rec["figures"]:
            if f["kind"] == kind and f["verdict"] == verdict and (label is None or f["label"] == label):
                n = f["windows"] or 0
                k, w = per.get(f["manifest"], (0.0, 0.0))
                per[f["manifest"]] = (k + n * f["value"], w + n)
    return out


def _reduce(values: list[float], how: str) -> float:
    return {"min": min, "max": max, "median": statistics.median}[how](values)


def _test(c: Clause, cand: float, base: float | None) -> tuple[bool, list[tuple[str, float, str]]]:
    """Whether the candidate's value passes every test of the clause, and each bound as
    (operator, value, how it was made)."""
    bounds: list[tuple[str, float, str]] = []
    if c.min is not None:
        bounds.append((">=", c.min, ""))
    if c.max is not None:
        bounds.append(("<=", c.max, ""))
    if base is not None:
        if c.gain is not None:
            bounds.append((">=", base + c.gain, f"baseline + {c.gain:g}"))
        if c.max_over_baseline is not None:
            b = base + c.max_over_baseline
            floor = c.floor is not None and c.floor > b
            bounds.append(("<=", c.floor if floor else b,
                           f"floor {c.floor:g}" if floor else f"baseline + {c.max_over_baseline:g}"))
        if c.min_under_baseline is not None:
            bounds.append((">=", base - c.min_under_baseline, f"baseline - {c.min_under_baseline:g}"))
        if c.max_ratio is not None:
            bounds.append(("<=", base * c.max_ratio, f"baseline x {c.max_ratio:g}"))
    ok = all(cand >= v if op == ">=" else cand <= v for op, v, _ in bounds)
    return ok, bounds


def _values(c: Clause, result: dict[str, Any], manifests: list[str]) -> dict[str, float]:
    """The clause's value per capture (over = each) or once ("*"), over the seeds."""
    if c.figure == "lab_macro_f1":
        return {"*": _reduce([r["lab_macro_f1"]["all"] for r in result["per_seed"]], c.seeds)}
    counts = _counts(result, c.figure)

    def rate(seed: int, ms: list[str]) -> float | None:
        k = sum(counts[seed].get(m, (0.0, 0.0))[0] for m in ms)
        n = sum(counts[seed].get(m, (0.0, 0.0))[1] for m in ms)
        return k / n if n else None

    seeds = sorted(counts)
    if c.over == "pooled":
        vals = [v for s in seeds if (v := rate(s, manifests)) is not None]
        return {"*": _reduce(vals, c.seeds)} if vals else {}
    per = {}
    for m in manifests:
        vals = [v for s in seeds if (v := rate(s, [m])) is not None]
        if vals:
            per[m] = _reduce(vals, c.seeds if c.over == "each" else "median")
    if c.over == "mean_of_medians":
        return {"*": statistics.mean(per.values())} if per else {}
    return per


def _manifests(result: dict[str, Any]) -> set[str]:
    return {f["manifest"] for r in result["per_seed"] for f in r["figures"]}


def judge(rule: Rule, candidate: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Every clause's rows (per capture, or one) with both sides' values and the verdict."""
    both = _manifests(candidate) & _manifests(baseline)
    rows = []
    for c in rule.clause:
        ms = sorted(m for m in both if any(fnmatch.fnmatchcase(m, p) for p in c.captures))
        if c.figure != "lab_macro_f1" and not ms:
            raise RuleError(f"clause {c.id}: no capture judged by both results matches {c.captures} "
                            f"(both have: {', '.join(sorted(both)) or 'none'})")
        cv, bv = _values(c, candidate, ms), _values(c, baseline, ms)
        if not cv:
            raise RuleError(f"clause {c.id}: the candidate has no {c.figure} windows on {c.captures}")
        for where, v in cv.items():
            ok, bounds = _test(c, v, bv.get(where))
            if not bounds:
                raise RuleError(f"clause {c.id}: the baseline has no {c.figure} value on {where} to bound it by")
            rows.append({"clause": c.id, "what": c.what or _describe(c), "capture": where,
                         "candidate": v, "baseline": bv.get(where),
                         "bounds": [{"op": op, "value": b, "from": how} for op, b, how in bounds], "met": ok})
    failed = sorted({r["clause"] for r in rows if not r["met"]}, key=[c.id for c in rule.clause].index)
    return {"rule": rule.name, "written": rule.written, "rows": rows, "failed_clauses": failed, "met": not failed}


def _describe(c: Clause) -> str:
    where = "" if c.figure == "lab_macro_f1" else f" on {', '.join(c.captures)} ({c.over.replace('_', ' ')})"
    return f"{c.figure}, {c.seeds} seed{where}"


def _pct(figure: str, v: float | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits + 2}f}" if figure == "lab_macro_f1" else f"{v:.{digits}%}"


def _digits(figure: str, row: dict[str, Any]) -> int:
    """Enough decimals that the candidate's value reads apart from every bound it is held to
    (a miss by one window in 6,000 must not print as 0.10% against <= 0.10%)."""
    for d in range(2, 6):
        if all(_pct(figure, row["candidate"], d) != _pct(figure, b["value"], d) for b in row["bounds"]):
            return d
    return 6


def shape_settings_line(run: dict[str, Any]) -> str:
    """The shape rules and constants an `experiment open-world` run was scored with, as its
    reports recorded them (one line; "differ by seed" where its seeds disagree)."""
    got = [json.dumps(r.get("shape_settings"), sort_keys=True) for r in run.get("per_seed", [])]
    if not got or got[0] == "null":
        return "not recorded (a run made before reports kept them)"
    if len(set(got)) > 1:
        return "differ by seed: " + "; ".join(got)
    from inference.openworld_table import describe_shape_settings

    return describe_shape_settings(json.loads(got[0]))


@click.command("judge")
@click.argument("rule_file", metavar="RULE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the verdict here.")
@click.option("--all-rows", is_flag=True, help="Every row, not only the clauses' failed rows and one-row clauses.")
def judge_cmd(rule_file: Path, candidate: Path, baseline: Path, json_out: Path | None, all_rows: bool) -> None:
    """Judge a recipe change by a rule written before it was trained (a TOML file: see
    docs/rules/, and evaluation/recipe_rule.py for the clauses), on two `experiment
    open-world` results. Prints each clause's figures and bound, PASS or FAIL; exits 1
    when the rule is not met.

    \b
    edgeloop experiment judge docs/rules/rule-15.toml CAND/openworld-seeds.json BASE/openworld-seeds.json
    """
    from rich.console import Console
    from rich.table import Table

    from evaluation.experiment_openworld import _load_seeds

    try:
        rule = load_rule(rule_file)
        cand, base = _load_seeds(candidate), _load_seeds(baseline)
        v = judge(rule, cand, base)
    except RuleError as exc:
        raise click.ClickException(str(exc)) from exc
    figure = {c.id: c.figure for c in rule.clause}
    per_clause: dict[str, list[dict[str, Any]]] = {}
    for r in v["rows"]:
        per_clause.setdefault(r["clause"], []).append(r)
    out = Console()
    out.print(f"{rule.name}{f' (written {rule.written})' if rule.written else ''}:")
    for c in rule.clause:
        out.print(f"  {c.id}  {c.what or _describe(c)}")
    for side, run in (("candidate", cand), ("baseline", base)):
        out.print(f"{side} shape rules: {shape_settings_line(run)}", highlight=False)
    t = Table()
    for col in ("clause", "capture", "candidate", "baseline", "bound", ""):
        t.add_column(col)
    for cid, rows in per_clause.items():
        shown = rows if all_rows or len(rows) == 1 else [r for r in rows if not r["met"]]
        if not shown:
            t.add_row(cid, f"all {len(rows)} captures", "", "", "", "[green]PASS[/]")
        over = {c.id: c.over for c in rule.clause}
        for r in shown:
            f, d = figure[cid], _digits(figure[cid], r)
            bound = "; ".join(f"{b['op']} {_pct(f, b['value'], d)}" + (f" ({b['from']})" if b["from"] else "")
                              for b in r["bounds"])
            where = ("over the seeds" if f == "lab_macro_f1" else over[cid].replace("_", " ")) if r["capture"] == "*" \
                else r["capture"]
            t.add_row(cid, where, _pct(f, r["candidate"], d), _pct(f, r["baseline"], d), bound,
                      "[green]PASS[/]" if r["met"] else "[red]FAIL[/]")
    out.print(t)
    Console().print(f"{rule.name}: " + ("[green]MET[/]" if v["met"] else
                                        f"[red]NOT MET[/] (clauses {', '.join(v['failed_clauses'])})"))
    if json_out is not None:
        json_out.write_text(json.dumps(v, indent=2))
    if not v["met"]:
        raise SystemExit(1)
