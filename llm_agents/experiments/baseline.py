"""`edgeloop experiment baseline`: what a site baseline buys, measured on captures it never saw.

A set of foreign benign captures stands in for a site (default: the nDPI test half, which
the shipped detector never trained on). It is split in two: by file (a fixed hash; half B
is networks the baseline never saw) or by time (each capture's first half of time is half
A, its second half B: the same networks later). The baseline is built and a challenger
retrained through the promotion gate on half A only (evaluation.baseline,
llm_agents.retrain), exactly as `edgeloop baseline` does; then the champion and the
challenger are judged window by window on half B, which neither saw.

    edgeloop experiment baseline
    edgeloop experiment baseline --split time
    edgeloop experiment baseline --out var/experiments/baseline --epochs 30
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import click

TARGET_FALSE_ALERTS = 0.001


def site_halves(flows: Any, column: str = "file") -> tuple[dict[str, Any], dict[str, Any]]:
    """{capture: flows} for half A and half B, split by a keyed hash of the capture name."""
    names = sorted(flows[column].astype(str).unique(),
                   key=lambda n: hashlib.blake2b(n.encode(), key=b"edgeloop/site-halves", digest_size=8).hexdigest())
    a = set(names[: len(names) // 2])
    groups = {str(k): g.drop(columns=[c for c in (column, "split") if c in g.columns])
              for k, g in flows.groupby(flows[column].astype(str), sort=True)}
    return ({k: g for k, g in groups.items() if k in a}, {k: g for k, g in groups.items() if k not in a})


def site_halves_by_time(flows: Any, column: str = "file") -> tuple[dict[str, Any], dict[str, Any]]:
    """{capture: flows} before and after each capture's middle: the site baselined on its
    first half of time and judged on the second, as an operator baselines a stretch of
    traffic and lives with what comes after. A capture with flows on one side only is on
    that side only."""
    a, b = {}, {}
    for k, g in flows.groupby(flows[column].astype(str), sort=True):
        g = g.drop(columns=[c for c in (column, "split") if c in g.columns])
        t = g["first_seen_ms"].to_numpy(dtype=float)
        early = t <= (t.min() + t.max()) / 2
        if early.any():
            a[str(k)] = g[early]
        if (~early).any():
            b[str(k)] = g[~early]
    return a, b


SPLITS = {"files": site_halves, "time": site_halves_by_time}


def benign_rates(bundle: Any, captures: dict[str, Any]) -> dict[str, float]:
    """Benign verdicts (evaluation.gate) of `bundle` on the captures, by window."""
    from evaluation.gate import RefCapture, reference_figures

    f = reference_figures(bundle, [RefCapture(k, v.drop(columns=["label"], errors="ignore"), "benign")
                                   for k, v in captures.items()])
    return {"windows": f.benign_windows, "false_alerts": f.false_alerts, "deferrals": f.deferrals}


def run(out_dir: Path, *, epochs: int | None = None, split: str = "files",
        say: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    from evaluation.baseline import build_baseline, load_baseline
    from evaluation.gate import default_reference
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.datasets.ndpi import load_ndpi
    from inference.registry import Registry
    from llm_agents.cli import seed_reference
    from llm_agents.labeling.decider import AgentState
    from llm_agents.retrain import SITE_TRIGGER, RetrainConfig, Retrainer
    from llm_agents.store import reference_frame

    out_dir.mkdir(parents=True, exist_ok=True)
    champion = Bundle.load(DEFAULT_BUNDLE_DIR)
    half_a, half_b = SPLITS[split](load_ndpi("test", purpose="evaluate"))
    say(f"site ({split} split): {len(half_a)} captures to baseline on, {len(half_b)} to judge on")
    data = Path(tempfile.mkdtemp(prefix="edgeloop-baseline-exp-", dir=out_dir))
    t0 = time.perf_counter()
    # By time, every capture's own early traffic trains and its later traffic is the
    # gate's site reference; by files, whole captures are (networks learnt vs. not).
    b = build_baseline(half_a, champion, data / "baseline", train_share=0.5,
                       split="time" if split == "time" else "capture")
    state = AgentState.open(data)
    say(seed_reference(state.store, champion, None))
    w = champion.meta.window
    site = reference_frame(load_baseline(b.path, part="train"), classes=[champion.meta.benign_class],
                           k=w.k, seconds=w.seconds, key=w.key, source="baseline", views=w.views)
    state.store.append("labelled", site.assign(label_source="baseline:site"), note="site baseline")
    registry = Registry(data / "registry")
    cfg = RetrainConfig(epochs=epochs or RetrainConfig().epochs)
    rt = Retrainer(state.store, registry, state.audit, fallback=champion, config=cfg,
                   reference=lambda: default_reference(site_baseline=b.path))
    rt.keep_challengers = data / "challengers"
    d = rt.run(SITE_TRIGGER, {"experiment": "site halves of the nDPI test set"})
    say(f"retrain: {d.reason} ({d.seconds.get('total', 0):.0f} s)")
    kept = rt.keep_challengers / d.challenger_version if d.challenger_version else None
    challenger = Bundle.load(kept) if kept is not None and kept.is_dir() else None
    result = {"schema": "edgeloop.baseline_experiment/1", "split": split,
              "site_captures": {"a": len(half_a), "b": len(half_b)},
              "baseline": b.counts, "decision": {"promoted": d.promoted, "reason": d.reason,
                                                 "champion": d.champion_version,
                                                 "challenger": d.challenger_version},
              "open_world_gate": d.open_world, "seconds": round(time.perf_counter() - t0, 1),
              "half_b": {"champion": benign_rates(champion, half_b)}}
    if challenger is not None:
        result["half_b"]["challenger"] = benign_rates(challenger, half_b)
    (out_dir / "baseline-experiment.json").write_text(json.dumps(result, indent=2, default=float))
    return result


@click.command("baseline")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("var/experiments/baseline"), show_default=True, help="Where results go.")
@click.option("--epochs", type=int, default=None, help="Challenger epochs.")
@click.option("--split", type=click.Choice(sorted(SPLITS)), default="files", show_default=True,
              help="files: half of the captures (by a fixed hash) baseline, the other half judge, "
                   "so the judged captures are networks the baseline never saw; time: every "
                   "capture's first half of time baselines and its second half judges.")
def baseline(out_dir: Path, epochs: int | None, split: str) -> None:
    """Baseline on half of a foreign capture set; judge champion and challenger on the other half.

    Prints the false-alert and deferral rates of benign windows on the half neither model
    saw, before and after the baseline, beside the target (<= 0.1% false alerts), and what
    the promotion gate decided. Writes baseline-experiment.json in --out.
    """
    from rich.console import Console
    from rich.table import Table

    err = Console(stderr=True)
    res = run(out_dir, epochs=epochs, split=split, say=err.log)
    t = Table(title=f"site half B ({split} split): {res['half_b']['champion']['windows']:,} benign windows "
                    "neither model saw")
    for col in ("model", "false alerts", "deferred", f"target false alerts <= {TARGET_FALSE_ALERTS:.1%}"):
        t.add_column(col)
    for who, r in res["half_b"].items():
        t.add_row(who, f"{r['false_alerts']:.2%}", f"{r['deferrals']:.2%}",
                  "met" if r["false_alerts"] <= TARGET_FALSE_ALERTS else "[red]missed[/]")
    Console().print(t)
    d = res["decision"]
    Console().print(f"gate: {'promoted' if d['promoted'] else 'refused'} ({d['reason']}); baseline kept "
                    f"{res['baseline']['kept_flows']:,} of {res['baseline']['flows']:,} flows")
