"""`edgeloop experiment review-round`: one round of the loop on a capture of held-out conditions.

The shipped detector misses known classes sent by tools, settings and links it never saw
(slow HTTP DoS over a lossy link most: docs/openworld.md). What does one round of the loop
buy there? The edge's engine scores one held-out lab capture (default: the fourth,
`lab-heldout-d`); the windows it is unsure about go to the review queue, as they would on
a live node; a person labels them with what the capture's labels say they are (`edgeloop
review correct`, the open-world judge's reading of who carries each attack), and a retrain
runs through the promotion gate with the foreign reference, as the agent runs it. The
champion and each challenger are then judged on the other held-out captures and the nDPI
test half, none of which any model learnt from.

Two arms, one retrain each:
    attacks   the person labels the queue's windows of classes the detector knows
    all       ... and its benign windows too

Windows of kinds no model knows (FTP brute force, ICMP and UDP floods) are left in the
queue in both arms, so they stay unseen kinds for every model judged.

    edgeloop experiment review-round
    edgeloop experiment review-round --capture lab-heldout-f --arms attacks
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import click

from evaluation.gate import REPO

MANIFESTS = REPO / "data" / "openworld"
HELDOUT = tuple(f"lab-heldout{s}" for s in ("", *(f"-{c}" for c in "bcdefghijklm")))
ARMS = ("attacks", "all")


def judged_windows(manifest: Path, bundle: Any, out: Path) -> Any:
    """Every window of the manifest's captures as `edgeloop evaluate --open-world` judges it."""
    import pandas as pd

    from evaluation.openworld import evaluate_open_world

    out.mkdir(parents=True, exist_ok=True)
    evaluate_open_world(manifest, bundle, out_dir=out, plots=False, progress=False,
                        windows_out=out / f"{manifest.stem}.parquet")
    w = pd.read_parquet(out / f"{manifest.stem}.parquet")
    return w[w["scoped"]]


def rates(w: Any) -> dict[str, Any]:
    """Benign false alerts and deferrals, known classes right (pooled and per class),
    unknown kinds missed: shares of windows."""
    ben, known, unk = (w[w["kind"] == k] for k in ("benign", "known", "unknown"))
    out: dict[str, Any] = {"benign_windows": int(len(ben)), "known_windows": int(len(known)),
                           "unknown_windows": int(len(unk))}
    if len(ben):
        out["false_alerts"] = float((ben["verdict"] == "false_alert").mean())
        out["deferred"] = float((ben["verdict"] == "deferred").mean())
    if len(known):
        out["known_right"] = float((known["verdict"] == "ok").mean())
        out["known_right_by_class"] = {str(c): float((g["verdict"] == "ok").mean())
                                       for c, g in known.groupby("expected")}
    if len(unk):
        out["unknown_missed"] = float((unk["verdict"] == "miss").mean())
    return out


def review_queue(bundle: Any, capture: Path, audit: float = 0.0) -> list[Any]:
    """The capture's windows the edge sends to `uncertain` (UncertainWindow, flows
    included): those it is unsure of, and `audit` of the confident ones (the edge's audit
    sample, reason "audit")."""
    from contracts.records import UncertainWindow, decode
    from inference.openworld_captures import expand
    from inference.openworld_manifest import load_manifest
    from streams.detector import DetectorConfig, EdgeDetector
    from streams.score import detector_for
    from streams.sources.files import records_from_frame

    eng = EdgeDetector(detector_for(bundle), DetectorConfig(uncertain_rate_per_s=0, audit_sample=audit),
                       clock=lambda: 0.0)
    for cap in (c for e in load_manifest(capture).entries for c in expand(e)):
        flows = cap.load().flows
        if flows is not None:
            eng.ingest(records_from_frame(flows)[0])
    return [decode(UncertainWindow, o.value) for o in eng.flush_all() if o.topic == "uncertain"]


def person_labels(queue: list[Any], judged: Any, arm: str, benign: str = "benign") -> dict[str, str]:
    """The label a person gives each queued window in this arm (window id -> class), read
    from the judged windows: a known class by its name, benign ones only in the `all` arm,
    kinds no model knows never; windows out of the judge's scope are left out."""
    truth = judged.drop_duplicates("window_id").set_index("window_id")
    labels: dict[str, str] = {}
    for u in queue:
        if u.window_id not in truth.index:
            continue
        row = truth.loc[u.window_id]
        if row["kind"] == "known":
            labels[u.window_id] = str(row["expected"])
        elif arm == "all" and row["kind"] == "benign":
            labels[u.window_id] = benign
    return labels


def run(out_dir: Path, *, capture: str = "lab-heldout-d", arms: tuple[str, ...] = ARMS,
        judge: tuple[str, ...] | None = None, epochs: int | None = None, members: int | None = None,
        audit: float | None = None, champion: Any = None, reference: Any = None, plot: bool = True,
        say: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """One review round (see `review_round`). `champion`: the bundle it starts from (default:
    the shipped one); `reference`: labelled flows its retrain learns beside the labels
    (default: the default training set)."""
    from collections import Counter

    from evaluation.gate import default_reference
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.registry import Registry
    from llm_agents.cli import seed_reference
    from llm_agents.labeling.decider import AgentState
    from llm_agents.labeling.review import Parked, decide
    from llm_agents.retrain import RetrainConfig, Retrainer

    from streams.detector import DetectorConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    audit = DetectorConfig().audit_sample if audit is None else audit
    champion = champion if champion is not None else Bundle.load(DEFAULT_BUNDLE_DIR)
    judge = tuple(judge) if judge is not None else tuple(m for m in (*HELDOUT, "ndpi-test") if m != capture)
    if capture in judge:
        raise click.BadParameter(f"{capture} is the labelled capture: it cannot also judge", param_hint="--judge")
    src = MANIFESTS / f"{capture}.toml"
    judged = judged_windows(src, champion, out_dir / "champion")
    say(f"{capture}: {judged['window_id'].nunique():,} judged windows; the edge audits {audit:.0%} of its confident ones")
    result: dict[str, Any] = {"schema": "edgeloop.review_round/1", "capture": capture, "judge": list(judge),
                              "champion": champion.version, "audit": audit, "arms": {},
                              "judged": {"champion": {}}}
    for m in judge:
        result["judged"]["champion"][m] = rates(judged_windows(MANIFESTS / f"{m}.toml", champion, out_dir / "champion"))
    cfg = RetrainConfig()
    cfg = replace(cfg, epochs=epochs or cfg.epochs, members=members or cfg.members)
    unc = review_queue(champion, src, audit)   # the same queue for every arm
    for arm in arms:
        labels = person_labels(unc, judged, arm, champion.meta.benign_class)
        data = Path(tempfile.mkdtemp(prefix=f"review-round-{arm}-", dir=out_dir))
        state = AgentState.open(data)
        say(seed_reference(state.store, champion, None, flows=reference))
        state.review.park([Parked(window=u, reason=u.reason, proposed=u.predicted) for u in unc if u.window_id in labels])
        for item in state.review.pending():
            decide(state.review, state.store, state.ledger, item.id, labels[item.window.window_id], who="operator")
        say(f"arm {arm}: {len(unc)} windows in the queue, {len(labels)} labelled "
            f"{dict(Counter(labels.values()).most_common())}")
        rt = Retrainer(state.store, Registry(data / "registry"), state.audit, fallback=champion, config=cfg,
                       reference=default_reference)
        rt.keep_challengers = data / "challengers"
        d = rt.run("labels", {"experiment": f"review round on {capture}, arm {arm}"})
        say(f"arm {arm}: retrain {d.reason} ({d.seconds.get('total', 0):.0f} s)")
        result["arms"][arm] = {"queued": len(unc), "audited": sum(u.reason == "audit" for u in unc),
                               "labelled": dict(Counter(labels.values())),
                               "decision": {"promoted": d.promoted, "reason": d.reason,
                                            "challenger": d.challenger_version},
                               "open_world_gate": d.open_world.get("change", {})}
        kept = rt.keep_challengers / d.challenger_version if d.challenger_version else None
        if kept is not None and kept.is_dir():
            chall = Bundle.load(kept)
            result["judged"][arm] = {m: rates(judged_windows(MANIFESTS / f"{m}.toml", chall, out_dir / arm))
                                     for m in judge}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out_dir / "review-round.json").write_text(json.dumps(result, indent=2, default=float))
    if plot:
        review_round_png(result, out_dir / "review-round.png")
    return result


def review_round_png(res: dict[str, Any], path: Path) -> Path:
    """Per judged capture, known classes right and unknown kinds missed, one bar per model,
    beside the targets (95% right, 1% missed)."""
    import numpy as np

    from inference.plots import _pyplot

    plt = _pyplot()
    caps = [m for m in res["judge"] if "known_right" in res["judged"]["champion"].get(m, {})]
    models = list(res["judged"])
    fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 0.75 * len(caps) + 2), 6.5), sharex=True)
    x, w = np.arange(len(caps)), 0.8 / max(1, len(models))
    for i, who in enumerate(models):
        for ax, key in zip(axes, ("known_right", "unknown_missed")):
            vals = [100 * res["judged"][who].get(m, {}).get(key, np.nan) for m in caps]
            d = res["arms"].get(who, {}).get("decision")
            label = who if d is None else f"{who} ({'promoted' if d['promoted'] else 'refused: ' + d['reason']})"
            ax.bar(x + (i - (len(models) - 1) / 2) * w, vals, w, label=label)
    axes[0].axhline(95, color="k", ls="--", lw=0.8)
    lows = [100 * r["known_right"] for who in models for r in res["judged"][who].values() if "known_right" in r]
    axes[0].set_ylim(min([80.0, *lows]), 100)
    axes[0].set_ylabel("known classes right (%)")
    axes[1].axhline(1, color="k", ls="--", lw=0.8)
    axes[1].set_ylabel("unknown kinds missed (%)")
    axes[1].set_xticks(x, [m.replace("lab-heldout", "held-out") for m in caps], rotation=30, ha="right")
    axes[0].legend(title="model", fontsize=8)
    axes[0].set_title(f"one review round on {res['capture']}: judged on captures no model learnt from")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(r: dict[str, Any], key: str, digits: int = 1) -> str:
    return f"{100 * r[key]:.{digits}f}" if key in r else "-"


@click.command("review-round")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("var/experiments/review-round"), show_default=True, help="Where results go.")
@click.option("--capture", default="lab-heldout-d", show_default=True, type=click.Choice(HELDOUT[1:]),
              help="The held-out lab capture whose uncertain windows a person labels (not the first, "
                   "lab-heldout: the promotion gate's reference holds it).")
@click.option("--arms", default=",".join(ARMS), show_default=True,
              help="attacks: the person labels the queue's windows of known classes; all: its benign "
                   "windows too. Comma-separated; one retrain each.")
@click.option("--judge", default=None, help="Manifests in data/openworld judging the models, comma-separated "
                                            "(default: every other held-out capture and ndpi-test).")
@click.option("--epochs", type=int, default=None, help="Challenger epochs (default: the retrainer's).")
@click.option("--members", type=int, default=None, help="Ensemble members per challenger (default: the retrainer's).")
@click.option("--audit", type=click.FloatRange(0, 1), default=None,
              help="Share of confident windows the edge also sends to review (default: the edge's "
                   "EDGELOOP_AUDIT_SAMPLE default, 0.01).")
@click.option("--champion", "champion_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="The detector the round starts from: a bundle directory (default: the "
                                 "shipped bundle).")
def review_round(out_dir: Path, capture: str, arms: str, judge: str | None, epochs: int | None,
                 members: int | None, audit: float | None, champion_dir: Path | None) -> None:
    """One round of the loop on a capture of held-out conditions, judged on the others.

    The shipped detector's (or --champion's) uncertain windows of one held-out lab capture
    are labelled by a person (by the capture's labels), a retrain runs through the promotion gate, and the
    champion and each challenger are judged window by window on captures none of them
    learnt from. About 2 minutes an arm here. Writes review-round.json and a plot
    (review-round.png: known classes right and unknown kinds missed per capture) in --out.
    """
    from rich.console import Console
    from rich.table import Table

    picked = tuple(a.strip() for a in arms.split(",") if a.strip())
    bad = [a for a in picked if a not in ARMS]
    if bad or not picked:
        raise click.BadParameter(f"arms are {', '.join(ARMS)}; got {arms!r}", param_hint="--arms")
    names = tuple(m.strip() for m in judge.split(",") if m.strip()) if judge else None
    for m in names or ():
        if not (MANIFESTS / f"{m}.toml").is_file():
            raise click.BadParameter(f"no manifest data/openworld/{m}.toml", param_hint="--judge")
    err = Console(stderr=True)
    from inference.bundle import Bundle

    champion = Bundle.load(champion_dir) if champion_dir is not None else None
    res = run(out_dir, capture=capture, arms=picked, judge=names, epochs=epochs, members=members, audit=audit,
              champion=champion, say=err.log)
    con = Console()
    for arm, a in res["arms"].items():
        d = a["decision"]
        con.print(f"arm {arm}: {sum(a['labelled'].values())} of {a['queued']} queued windows labelled "
                  f"({a['audited']} of them the audit sample of confident windows); "
                  f"gate {'promoted' if d['promoted'] else 'refused'} ({d['reason']})")
    models = list(res["judged"])
    t = Table(title=f"judged on captures no model learnt from (labelled: {capture}); %, champion / "
                    + " / ".join(models[1:]))
    for col in ("capture", "benign false alerts", "benign deferred", "known right", "unknown missed"):
        t.add_column(col)
    for m in res["judge"]:
        rows = [res["judged"][who].get(m, {}) for who in models]
        t.add_row(m, *("/".join(_pct(r, k, 2 if k in ("false_alerts", "deferred") else 1) for r in rows)
                       for k in ("false_alerts", "deferred", "known_right", "unknown_missed")))
    con.print(t)
    con.print("targets: benign <= 1% false alerts, <= 5% deferred; known >= 95% right; unknown <= 1% missed")
