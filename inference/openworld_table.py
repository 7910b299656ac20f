"""The open-world report as a rich table: one row per group, kind and view, targets beside.

    >>> print_report(report, Console(stderr=True))
"""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from inference.openworld_captures import REASONS
from inference.openworld_verdicts import ALL_VIEWS

_STYLE = {"ok": "green", "false_alert": "red", "deferred": "yellow", "miss": "red",
          "wrong_class": "magenta", "caught_uncertain": "cyan", "caught_alert": "green"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _shares(block: dict[str, Any]) -> str:
    return "\n".join(f"[{_STYLE.get(v, '')}]{v} {_pct(r)}[/]" for v, r in block["rates"].items()
                     if block["counts"][v])


def _target_cell(targets: list[dict[str, Any]], group: str, kind: str, view: str) -> str:
    if view != ALL_VIEWS:
        return ""
    cells = [f"[{'green' if t['met'] else 'red'}]{t['verdict']} {_pct(t['value'])} {t['op']} "
             f"{_pct(t['target'])} {'met' if t['met'] else 'MISSED'}[/]" + _interval(t)
             for t in targets if t["group"] == group and t["kind"] == kind]
    return "\n".join(cells)


def _interval(t: dict[str, Any]) -> str:
    """ "  3 of 222; 95% 0.5-3.9%, unsettled": the windows behind a target and their interval."""
    if not t.get("interval"):
        return ""
    lo, hi = t["interval"]
    return (f"\n[dim]  {t['count']:,} of {t['windows']:,}; 95% {100 * lo:.1f}-{100 * hi:.1f}%"
            f"{'' if t['settled'] else ', unsettled'}[/]")


def report_table(report: dict[str, Any]) -> Table:
    t = Table(title=f"open world: {report['manifest']['name']}, bundle {report['bundle']['version']}",
              show_lines=True)
    for col in ("group", "kind", "view", "windows", "window verdicts", "captures",
                "capture verdicts", "fan-out flagged\n(win / cap)", "target (all views, by window)"):
        t.add_column(col, justify="right" if col in ("windows", "captures") else "left")
    for name, g in report["groups"].items():
        first = True
        for view, kinds in g.get("views", {}).items():
            for kind, b in kinds.items():
                f = b["fanout"]
                caps = str(b["captures"]["total"]) + (f"\n+{g['failed']} failed" if first and g["failed"] else "")
                t.add_row(name if first else "", kind, view, str(b["windows"]["total"]),
                          _shares(b["windows"]), caps, _shares(b["captures"]),
                          f"{_pct(f['windows_rate'])} / {_pct(f['captures_rate'])}",
                          _target_cell(report["targets"], name, kind, view))
                first = False
        if not g.get("views"):
            t.add_row(name, "", "", "0", "nothing scored", f"0\n+{g['failed']} failed", "", "", "")
    return t


def describe_shape_settings(settings: dict[str, dict[str, Any]]) -> str:
    """A report's `bundle.shape_settings` on one line: each rule with its constants."""
    return ", ".join(f"{rule} ({', '.join(f'{k} {v}' for k, v in p.items())})"
                     for rule, p in settings.items()) or "none"


def print_report(report: dict[str, Any], console: Console) -> None:
    """The table, then failures by reason, totals, targets and the files written."""
    console.print(report_table(report))
    tot = report["totals"]
    console.print(f"{tot['captures']} captures: {tot['scored']} scored, {tot['failed']} failed; "
                  f"{tot['flows']:,} flows ({tot['bad_rows']} invalid rows not scored), "
                  f"{tot['windows']:,} windows")
    settings = report.get("bundle", {}).get("shape_settings")
    if settings is not None:
        console.print(f"shape rules applied: {describe_shape_settings(settings)}", highlight=False)
    for reason, n in sorted(report["failures"].items(), key=lambda kv: -kv[1]):
        examples = [c for c in report["captures"] if c.get("reason") == reason][:2]
        console.print(f"[yellow]failed: {reason} ({REASONS.get(reason, '?')}): {n} captures[/]"
                      + "".join(f"\n    {c['name']}: {c['detail']}" for c in examples))
    missed = [t for t in report["targets"] if not t["met"]]
    if not report["targets"]:
        console.print("[yellow]targets: none could be checked (nothing scored)[/]")
    else:
        met, n = len(report["targets"]) - len(missed), len(report["targets"])
        sure = [t for t in report["targets"] if t.get("settled")]
        console.print("targets: " + ("all met" if not missed else f"{len(missed)} of {n} missed")
                      + f"; settled by the windows' 95% interval: {sum(t['met'] for t in sure)} of {met} "
                      f"met, {sum(not t['met'] for t in sure)} of {len(missed)} missed")
    for t in missed:
        _print_examples(report, t, console)
    for key, path in report["files"].items():
        console.print(f"{key}: {path}")


# Which window verdicts stand behind a target missed, by the target's verdict.
_BEHIND = {"false_alert": ("false_alert",), "deferred": ("deferred",), "ok": ("miss", "wrong_class", "deferred"),
           "miss": ("miss",)}


def _print_examples(report: dict[str, Any], target: dict[str, Any], console: Console, most: int = 3) -> None:
    """Up to `most` windows behind a missed target, each with its capture, key, view and
    flows, and what the detector said (the report's per-capture `examples`)."""
    want = _BEHIND.get(target["verdict"], ())
    rows = [(c["name"], e) for c in report["captures"] if c.get("group") == target["group"]
            for e in c.get("examples", ()) if e["kind"] == target["kind"] and e["verdict"] in want]
    if not rows:
        return
    console.print(f"  windows behind {target['group']} / {target['kind']} {target['verdict']} "
                  f"(first {min(most, len(rows))} of the {len(rows)} the report keeps):")
    for name, e in rows[:most]:
        said = f"{e['predicted']} {e['confidence']:.3f}" + (" uncertain" if e["uncertain"] else "")
        console.print(f"    {name}: {e['view']} window {e['window_id']} key {e['key']}, {e['flows']} flows, "
                      f"expected {e['label']}, {e['verdict']}: {said}")
