"""`edgeloop experiment open-world`: does detection hold up outside the lab, for every seed?

For each training seed: train on the default training set (inference.datasets.training),
score the lab's own evaluation capture (macro-F1 over both views), and judge the bundle on
every open-world manifest (evaluation.openworld): benign false alerts and deferrals, known
classes hit, unknown kinds missed. One table puts the seeds side by side with the
targets, so a figure that holds for one seed only shows; a JSON file keeps everything and
a plot shows each figure's spread over the seeds.

    edgeloop experiment open-world --seeds 0,1,2
    edgeloop experiment open-world --seeds 0 --manifest data/openworld/ndpi-test.toml
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import click


SEEDS_SCHEMA = "edgeloop.openworld_seeds/1"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_MANIFESTS = (REPO / "data" / "openworld" / "ndpi-test.toml",
                     REPO / "data" / "openworld" / "lab-heldout.toml",
                     REPO / "data" / "openworld" / "lab-heldout-b.toml",
                     REPO / "data" / "openworld" / "lab-heldout-c.toml",
                     REPO / "data" / "openworld" / "lab-heldout-d.toml",
                     REPO / "data" / "openworld" / "lab-heldout-e.toml",
                     REPO / "data" / "openworld" / "lab-heldout-f.toml",
                     REPO / "data" / "openworld" / "lab-heldout-g.toml",
                     REPO / "data" / "openworld" / "lab-heldout-h.toml",
                     REPO / "data" / "openworld" / "lab-heldout-i.toml",
                     REPO / "data" / "openworld" / "lab-heldout-j.toml")
# (kind, verdict, op, target) per figure, as in inference.openworld_report's targets.
TARGETS = {("benign", "false_alert"): ("<=", 0.01), ("benign", "deferred"): ("<=", 0.05),
           ("known", "ok"): (">=", 0.95), ("unknown", "miss"): ("<=", 0.01)}
LAB_F1_TARGET = 0.98


def judged_lab_eval(bundle: Any) -> Any:
    """The lab evaluation capture's windows, judged as the open world judges a labelled lab
    capture: benign windows, and each attack in the windows keyed by its principal (the
    attacker's source windows; the victim's destination windows for spoofed and reflected
    attacks); the rest is collateral (inference.openworld_verdicts.judge_windows)."""
    from inference.datasets.training import lab_eval_flows, lab_eval_judging
    from inference.openworld_verdicts import judge_windows
    from streams.score import score_frame

    flows = lab_eval_flows()
    w = score_frame(flows, bundle).windows
    return judge_windows(w, expect=None, scope="labels", class_names=bundle.class_names,
                         benign=bundle.meta.benign_class, **lab_eval_judging(flows, bundle.meta.benign_class))


def lab_macro_f1(bundle: Any) -> dict[str, float]:
    """Macro-F1 (predicted class, confident or not) on the lab evaluation capture: over the
    judged windows ("all", and per view), and over every window ("every_window")."""
    from inference.scores import confusion_matrix, macro_f1

    j = judged_lab_eval(bundle)
    index = {c: i for i, c in enumerate(bundle.class_names)}

    def f1(g: Any) -> float:
        g = g[g["label"].isin(index)]
        return macro_f1(confusion_matrix(g["label"].map(index).to_numpy(), g["predicted"].map(index).to_numpy(),
                                         len(index)))
    judged = j[j["scoped"]]
    out = {"all": f1(judged), "every_window": f1(j)}
    out.update({str(v): f1(g) for v, g in judged.groupby("view")})
    return out


def figures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (manifest group, view all): benign rates, and per label the known/unknown rates."""
    rows = []
    for group, g in report["groups"].items():
        for kind, block in g.get("views", {}).get("all", {}).items():
            labels = block["labels"] if kind != "benign" else {"benign": {"windows": block["windows"]["counts"]}}
            for label, v in labels.items():
                counts = v["windows"]
                total = sum(counts.values())
                for (k, verdict), (op, target) in TARGETS.items():
                    if k == kind and total:
                        rows.append({"group": group, "kind": kind, "label": label, "verdict": verdict,
                                     "windows": total, "value": counts.get(verdict, 0) / total,
                                     "op": op, "target": target})
    return rows


def _same_recipe(bundle: Any, cfg: Any, path: Path) -> None:
    """ModelError when a bundle to be reused was trained with settings other than `cfg`
    (epochs aside, which the command sets). A setting newer than the bundle counts at its
    default: the bundle was made without it."""
    from dataclasses import MISSING, fields

    from contracts.errors import ModelError

    was = json.loads(json.dumps(bundle.meta.training.get("config", {})))
    now = json.loads(json.dumps(asdict(cfg)))
    default = json.loads(json.dumps({f.name: f.default for f in fields(cfg) if f.default is not MISSING}))
    was = {k: was.get(k, default.get(k)) for k in now}
    diff = sorted(k for k in now if k != "epochs" and was[k] != now[k])
    if diff:
        raise ModelError(f"{path} was trained with other settings ("
                         + ", ".join(f"{k} {was[k]!r} there, {now[k]!r} now" for k in diff)
                         + "): judge it with the settings it was made with, or use another --out")


def with_settings(cfg: Any, settings: Sequence[str]) -> Any:
    """`cfg` with each FIELD=VALUE applied (VALUE read as JSON, else as a string; a list
    becomes a tuple where the field holds one); click.BadParameter naming what is wrong."""
    from dataclasses import fields

    known = {f.name: f for f in fields(cfg)}
    changes: dict[str, Any] = {}
    for item in settings:
        name, sep, text = item.partition("=")
        if not sep or name not in known:
            raise click.BadParameter(f"{item!r}: FIELD=VALUE with FIELD one of {', '.join(sorted(known))}",
                                     param_hint="--set")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        current = getattr(cfg, name)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        ok = (current is None or value is None or isinstance(value, type(current))
              or (isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool)))
        if not ok:
            raise click.BadParameter(f"{item!r}: {name} holds {type(current).__name__}, not "
                                     f"{type(value).__name__}", param_hint="--set")
        changes[name] = float(value) if isinstance(current, float) and isinstance(value, int) else value
    return replace(cfg, **changes) if changes else cfg


def run(seeds: Sequence[int], manifests: Sequence[Path], out_dir: Path, *, epochs: int | None = None,
        say: Callable[[str], None] = lambda m: None, config: Any = None) -> dict[str, Any]:
    """Train and judge one bundle per seed with `config` (default: the recipe, RECIPE);
    write out_dir/openworld-seeds.json (+ .png). A seed-N/ bundle already in out_dir is
    reused, unless it was trained with other settings (ModelError naming them)."""
    from evaluation.openworld import evaluate_open_world
    from inference.bundle import Bundle
    from inference.datasets.training import training_flows
    from inference.train import RECIPE, train_bundle

    cfg = config or RECIPE
    out_dir.mkdir(parents=True, exist_ok=True)
    flows = None
    per_seed = []
    for seed in seeds:
        t0 = time.perf_counter()
        path = out_dir / f"seed-{seed}"
        if (path / "bundle.json").is_file():
            bundle = Bundle.load(path)
            _same_recipe(bundle, cfg, path)
            say(f"seed {seed}: reusing {path}")
        else:
            flows = training_flows() if flows is None else flows
            bundle = train_bundle(flows, views=["src", "dst"], seed=seed, epochs=epochs, progress=False,
                                  out_dir=path, dataset="default training set", config=cfg)
        rec = {"seed": seed, "version": bundle.version, "train_seconds": bundle.meta.metrics.get("train_seconds"),
               "lab_macro_f1": lab_macro_f1(bundle), "figures": [], "reports": {}}
        for m in manifests:
            rep = evaluate_open_world(m, bundle, out_dir=path / "reports", plots=False, progress=False)
            rec["reports"][m.stem] = rep["files"]["json"]
            rec["shape_settings"] = rep["bundle"]["shape_settings"]
            rec["figures"] += [{"manifest": m.stem, **f} for f in figures(rep)]
            rec.setdefault("failures", {})[m.stem] = rep["failures"]
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        say(f"seed {seed}: {bundle.version}, lab macro-F1 {rec['lab_macro_f1']['all']:.4f}, {rec['seconds']} s")
        per_seed.append(rec)
    result = {"schema": SEEDS_SCHEMA, "seeds": list(seeds), "per_seed": per_seed,
              "config": json.loads(json.dumps(asdict(cfg))),
              "manifests": [str(m) for m in manifests], "lab_f1_target": LAB_F1_TARGET,
              "table": table_rows(per_seed)}
    (out_dir / "openworld-seeds.json").write_text(json.dumps(result, indent=2, default=float))
    result["plot"] = str(plot(result, out_dir / "openworld-seeds.png"))
    return result


def table_rows(per_seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per figure: the value for each seed, the worst, and whether all seeds meet it."""
    keyed: dict[tuple, dict[str, Any]] = {}
    for rec in per_seed:
        for f in rec["figures"]:
            k = (f["manifest"], f["group"], f["kind"], f["label"], f["verdict"])
            row = keyed.setdefault(k, {"manifest": k[0], "group": k[1], "kind": k[2], "label": k[3],
                                       "verdict": k[4], "op": f["op"], "target": f["target"],
                                       "windows": f["windows"], "values": {}})
            row["values"][rec["seed"]] = f["value"]
    for row in keyed.values():
        vals = list(row["values"].values())
        row["worst"] = max(vals) if row["op"] == "<=" else min(vals)
        row["met"] = all((v <= row["target"]) if row["op"] == "<=" else (v >= row["target"]) for v in vals)
    rows = list(keyed.values())
    rows.insert(0, {"manifest": "lab-eval", "group": "lab evaluation capture", "kind": "known", "label": "macro-F1",
                    "verdict": "macro_f1", "op": ">=", "target": LAB_F1_TARGET, "windows": None,
                    "values": {r["seed"]: r["lab_macro_f1"]["all"] for r in per_seed},
                    "worst": min(r["lab_macro_f1"]["all"] for r in per_seed),
                    "met": all(r["lab_macro_f1"]["all"] >= LAB_F1_TARGET for r in per_seed)})
    return rows


def plot(result: dict[str, Any], path: Path) -> Path:
    """Each figure against its target: one marker per seed, the target as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["table"]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        vals = list(r["values"].values())
        ax.scatter(vals, [i] * len(vals), color="tab:green" if r["met"] else "tab:red", s=22, zorder=3)
        ax.plot([r["target"]] * 2, [i - 0.35, i + 0.35], color="black", lw=1.5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['group']}: {r['label']} {r['verdict']} ({r['op']} {r['target']:g})" for r in rows],
                       fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("share of windows (dots: seeds; bar: target; red: a seed misses it)")
    ax.set_title(f"open world, seeds {', '.join(map(str, result['seeds']))}")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _seeds(_: Any, __: Any, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: comma-separated integers, e.g. 0,1,2") from exc


def per_manifest(result: dict[str, Any]) -> dict[str, dict[tuple[str, str], dict[int, float]]]:
    """Per manifest and (kind, verdict), each seed's rate over all its labels, weighted by
    windows (benign false alerts; known classes ok; unknown kinds missed), and per unknown
    kind ("unknown:<label>", "miss") each seed's own rate."""
    out: dict[str, dict[tuple[str, str], dict[int, float]]] = {}
    for rec in result["per_seed"]:
        sums: dict[tuple[str, str, str], list[float]] = {}
        for f in rec["figures"]:
            acc = sums.setdefault((f["manifest"], f["kind"], f["verdict"]), [0.0, 0.0])
            acc[0] += f["windows"] * f["value"]
            acc[1] += f["windows"]
            if f["kind"] == "unknown":
                out.setdefault(f["manifest"], {}).setdefault((f"unknown:{f['label']}", f["verdict"]), {})[
                    rec["seed"]] = f["value"]
        for (m, kind, verdict), (num, den) in sums.items():
            if den:
                out.setdefault(m, {}).setdefault((kind, verdict), {})[rec["seed"]] = num / den
    return out


def _load_seeds(path: Path) -> dict[str, Any]:
    """An `experiment open-world` result, or an error naming the file and what it holds."""
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise click.ClickException(f"{path}: not JSON ({exc}); compare takes the openworld-seeds.json "
                                   "that `experiment open-world` writes in its --out") from exc
    if not isinstance(doc, dict) or doc.get("schema", SEEDS_SCHEMA) != SEEDS_SCHEMA or "per_seed" not in doc:
        what = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise click.ClickException(f"{path}: not an `experiment open-world` result (schema {what!r}, "
                                   f"not {SEEDS_SCHEMA!r}); compare takes the openworld-seeds.json "
                                   "it writes in its --out")
    return doc


def compare_runs(candidate: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Two `experiment open-world` results side by side, on the manifests both judged: per
    figure each side's seed range and median, and whether the candidate's median is worse;
    then what the issue's targets say of each side over all captures."""
    import statistics

    a, b = per_manifest(candidate), per_manifest(baseline)
    rows = []
    for m in sorted(set(a) & set(b)):
        for key in sorted(set(a[m]) & set(b[m])):
            kind, verdict = key
            op, target = TARGETS[(kind.split(":")[0], verdict)]
            ca, ba = list(a[m][key].values()), list(b[m][key].values())
            med_c, med_b = statistics.median(ca), statistics.median(ba)
            rows.append({"manifest": m, "figure": kind, "verdict": verdict, "op": op, "target": target,
                         "candidate": [min(ca), med_c, max(ca)], "baseline": [min(ba), med_b, max(ba)],
                         "worse": (med_c > med_b + 1e-12) if op == "<=" else (med_c < med_b - 1e-12)})

    def summary(side: dict[str, dict[tuple[str, str], dict[int, float]]]) -> dict[str, Any]:
        common = sorted(set(a) & set(b))
        known = [statistics.median(side[m][("known", "ok")].values()) for m in common if ("known", "ok") in side[m]]
        unknown = [max(side[m][("unknown", "miss")].values()) for m in common if ("unknown", "miss") in side[m]]
        fa = [max(side[m][("benign", "false_alert")].values()) for m in common if ("benign", "false_alert") in side[m]]
        return {"known_ok_mean_of_medians": statistics.mean(known) if known else None,
                "captures_known_median_met": sum(v >= TARGETS[("known", "ok")][1] for v in known),
                "captures_unknown_every_seed_met": sum(v <= TARGETS[("unknown", "miss")][1] for v in unknown),
                "captures": {"known": len(known), "unknown": len(unknown)},
                "benign_false_alerts_worst": max(fa) if fa else None}

    common = set(a) & set(b)
    f1 = {name: [r["lab_macro_f1"]["all"] for r in res["per_seed"]] for name, res in
          (("candidate", candidate), ("baseline", baseline))}
    return {"rows": rows,
            "candidate": {**summary(a), "lab_macro_f1": [min(f1["candidate"]), max(f1["candidate"])],
                          "unknown_missed_pooled": pooled_unknown_missed(candidate, common)},
            "baseline": {**summary(b), "lab_macro_f1": [min(f1["baseline"]), max(f1["baseline"])],
                         "unknown_missed_pooled": pooled_unknown_missed(baseline, common)}}


def pooled_unknown_missed(result: dict[str, Any], manifests: set[str]) -> dict[str, Any]:
    """Unknown-kind windows missed, pooled over the manifests, per seed, with the worst seed's
    Wilson 95% interval: one capture's 200-odd windows cannot show 1% either way (0 of 267
    still allows 1.4%), a dozen captures can."""
    from inference.openworld_report import meets, settled, wilson

    per_seed = {}
    for rec in result["per_seed"]:
        k = n = 0
        for f in rec["figures"]:
            if f["manifest"] in manifests and f["kind"] == "unknown" and f["verdict"] == "miss":
                k += round(f["windows"] * f["value"])
                n += f["windows"]
        per_seed[rec["seed"]] = (k, n)
    judged = {s: kn for s, kn in per_seed.items() if kn[1]}
    if not judged:
        return {"per_seed": {}, "worst": None}
    seed, (k, n) = max(judged.items(), key=lambda kv: kv[1][0] / kv[1][1])
    interval = wilson(k, n)
    op, target = TARGETS[("unknown", "miss")]
    met = meets(op, target, k / n)
    return {"per_seed": {str(s): {"missed": k_, "windows": n_} for s, (k_, n_) in judged.items()},
            "worst": {"seed": seed, "missed": k, "windows": n, "rate": k / n, "interval": list(interval),
                      "met": met, "settled": settled(op, target, interval)}}


def _pooled_cell(p: dict[str, Any]) -> str:
    w = p.get("worst")
    if not w:
        return "-"
    lo, hi = w["interval"]
    return (f"{w['rate']:.2%} ({w['missed']:,} of {w['windows']:,}, seed {w['seed']}; {lo:.2%}-{hi:.2%}"
            f"{'' if w['settled'] else ', unsettled'})")


@click.command("compare")
@click.argument("candidate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--all-rows", is_flag=True, help="Every figure, not only those whose median moved.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the comparison here.")
def compare(candidate: Path, baseline: Path, all_rows: bool, json_out: Path | None) -> None:
    """Compare two `experiment open-world` runs (their openworld-seeds.json): a recipe change
    against the recipe before, seed range by seed range.

    Per manifest both judged: benign false alerts and deferrals, known classes right,
    unknown kinds missed (pooled and each kind's own), each side's lowest, median and
    highest seed, and whether the candidate's median is worse. Then, over all captures,
    what the issue's targets say of each side.

    edgeloop experiment compare var/exp/new/openworld-seeds.json var/exp/old/openworld-seeds.json
    """
    from rich.console import Console
    from rich.table import Table

    runs = [_load_seeds(candidate), _load_seeds(baseline)]
    try:
        res = compare_runs(*runs)
    except (KeyError, TypeError, ValueError) as exc:
        raise click.ClickException(f"not two `experiment open-world` results: {exc!r}") from exc
    t = Table(title=f"{candidate} against {baseline} (lowest / median / highest seed)")
    for col in ("manifest", "figure", "verdict", "baseline", "candidate", "target", "median"):
        t.add_column(col)

    def rng(v: list[float]) -> str:
        return " / ".join(f"{x:.2%}" for x in v)
    for r in res["rows"]:
        moved = abs(r["candidate"][1] - r["baseline"][1]) > 1e-12
        if all_rows or moved:
            t.add_row(r["manifest"], r["figure"], r["verdict"], rng(r["baseline"]), rng(r["candidate"]),
                      f"{r['op']} {r['target']:g}", "[red]worse[/]" if r["worse"] else ("better" if moved else "same"))
    console = Console()
    console.print(t)
    s = Table(title="over all captures both judged")
    for col in ("", "baseline", "candidate"):
        s.add_column(col)
    b, c = res["baseline"], res["candidate"]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2%}"
    s.add_row("known classes right, mean of the per-capture medians",
              pct(b["known_ok_mean_of_medians"]), pct(c["known_ok_mean_of_medians"]))
    s.add_row(f"captures whose median meets known >= 95% (of {c['captures']['known']})",
              str(b["captures_known_median_met"]), str(c["captures_known_median_met"]))
    s.add_row(f"captures with unknown missed <= 1% on every seed (of {c['captures']['unknown']})",
              str(b["captures_unknown_every_seed_met"]), str(c["captures_unknown_every_seed_met"]))
    s.add_row("benign false alerts, worst capture and seed", pct(b["benign_false_alerts_worst"]),
              pct(c["benign_false_alerts_worst"]))
    s.add_row("unknown kinds missed, pooled over the captures, worst seed (95% interval)",
              _pooled_cell(b["unknown_missed_pooled"]), _pooled_cell(c["unknown_missed_pooled"]))
    s.add_row("lab macro-F1, lowest-highest seed", "-".join(f"{x:.4f}" for x in b["lab_macro_f1"]),
              "-".join(f"{x:.4f}" for x in c["lab_macro_f1"]))
    console.print(s)
    if json_out is not None:
        json_out.write_text(json.dumps(res, indent=2, default=float))


@click.command("open-world")
@click.option("--seeds", default="0,1,2", show_default=True, callback=_seeds, help="Training seeds.")
@click.option("--manifest", "manifests", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Open-world manifests (repeatable; default: the nDPI test half and the ten lab "
                   "held-out captures).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("var/experiments/openworld"), show_default=True,
              help="Bundles (seed-N/, reused when present), reports, JSON and plot.")
@click.option("--epochs", type=int, default=None, help="Maximum epochs per training.")
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE",
              help="Train with one setting of the recipe changed (inference.train.TrainConfig; "
                   "repeatable; VALUE as JSON, e.g. --set member_gate=0.005): a candidate recipe.")
def open_world(seeds: tuple[int, ...], manifests: tuple[Path, ...], out_dir: Path, epochs: int | None,
               settings: tuple[str, ...]) -> None:
    """Train one detector per seed on the default training set and judge each outside the lab.

    Prints every open-world figure (benign false alerts and deferrals, known classes
    hit, unknown kinds missed) and the lab's own macro-F1, one column per seed, beside
    its target; writes openworld-seeds.json and openworld-seeds.png in --out.
    """
    from rich.console import Console
    from rich.table import Table

    from contracts.errors import EdgeloopError

    err = Console(stderr=True)
    try:
        from inference.train import RECIPE

        cfg = with_settings(RECIPE, settings)
        res = run(seeds, manifests or [m for m in DEFAULT_MANIFESTS if m.is_file()], out_dir,
                  epochs=epochs, say=err.log, config=cfg)
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    t = Table(title=f"open world over seeds {', '.join(map(str, seeds))}")
    for col in ("group", "label", "verdict", "windows", *(f"seed {s}" for s in seeds), "target", "all met"):
        t.add_column(col)
    for r in res["table"]:
        t.add_row(r["group"], r["label"], r["verdict"], "" if r["windows"] is None else f"{r['windows']:,}",
                  *(f"{r['values'].get(s, float('nan')):.2%}" if r["verdict"] != "macro_f1"
                    else f"{r['values'].get(s, float('nan')):.4f}" for s in seeds),
                  f"{r['op']} {r['target']:g}", "yes" if r["met"] else "[red]no[/]")
    Console().print(t)
    pooled = pooled_unknown_missed(res, {Path(m).stem for m in res["manifests"]})
    if pooled["worst"]:
        seeds_txt = ", ".join(f"seed {s} {v['missed']:,} of {v['windows']:,}" for s, v in pooled["per_seed"].items())
        Console().print(f"unknown kinds missed, pooled over the captures: {seeds_txt}; worst "
                        + _pooled_cell(pooled))
    err.print(f"wrote {out_dir / 'openworld-seeds.json'} and {res['plot']}")
