"""`edgeloop train`, `edgeloop evaluate` and `edgeloop models`: the detector's command line.

torch is imported only when `train` runs, so `evaluate` and `models` work on an edge
install. Settings (data directory, window K/T/key) come from EDGELOOP_* as everywhere.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from contracts.errors import EdgeloopError

console = Console(stderr=True)
FORMATS = ("flows", "cicids2017", "nslkdd")
MEMBER_GATE_HELP = ("Train with the member-disagreement gate: a benign call needs every ensemble "
                    "member's p(benign) >= tau, tau set so the gate defers this share of the "
                    "validation windows called benign (e.g. 0.005). Off in the recipe: judged "
                    "and not adopted (docs/openworld.md, rule 15).")


def _settings() -> Any:
    from streams.settings import load_settings

    try:
        return load_settings()
    except EdgeloopError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc


def _load(path: Path, fmt: str, labels: Path | None = None) -> Any:
    from inference.evaluate import load_labelled_flows

    try:
        return load_labelled_flows(path, labels=labels, fmt=fmt)
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("train")
@click.option("--train", "train_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labelled flows to train on (CSV/Parquet with a `label` column, or see "
                   "--format). Default: the default training set (the lab training capture "
                   "plus the nDPI train half as foreign benign; inference.datasets.training).")
@click.option("--val", "val_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Validation flows for early stopping and temperature fitting. "
                   "Default: the latest 20% of each class's training windows.")
@click.option("--eval", "eval_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Evaluate the new bundle on this file afterwards. Default: the shipped "
                   "lab evaluation set when training on the default set.")
@click.option("--no-eval", is_flag=True, help="Skip the evaluation after training.")
@click.option("--no-foreign", is_flag=True, help="Default set without the nDPI foreign benign "
              "half (the lab alone: expect deferrals and false alerts on other networks).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="flows", show_default=True,
              help="Input layout: edgeloop flows, CIC-IDS2017 CSV or NSL-KDD text.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write the bundle to this directory instead of the registry.")
@click.option("--int8", is_flag=True, help="Also quantise statically to int8 (kept only if "
              "validation accuracy stays within 0.5 points of fp32).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed: same seed, same bundle.")
@click.option("--epochs", type=int, default=None, help="Maximum epochs (early stopping may end sooner).")
@click.option("--k", type=int, default=None, help="Flows per window (default: EDGELOOP_WINDOW_K).")
@click.option("--seconds", type=float, default=None, help="Window horizon (default: EDGELOOP_WINDOW_SECONDS).")
@click.option("--views", default=None, help="Window views, e.g. src,dst (default: EDGELOOP_WINDOW_VIEWS).")
@click.option("--exclude-class", "exclude", multiple=True, metavar="NAME",
              help="Drop this class's flows before training (repeatable), e.g. to test "
                   "how an unseen attack is routed to `uncertain`.")
@click.option("--outlier-weight", type=click.FloatRange(0, 10), default=None,
              help="Outlier exposure weight (0: off; default from TrainConfig).")
@click.option("--variants", type=click.IntRange(0, 10), default=None,
              help="Re-rendered copies of each attack run (other pace, round trip, sizes, lost "
                   "answers, probe flags; inference.datasets.variation); 0: off. [default: 3]")
@click.option("--member-gate", type=click.FloatRange(0, 0.5), default=None, metavar="SHARE",
              help=MEMBER_GATE_HELP)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(train_file: Path | None, val_file: Path | None, eval_file: Path | None, no_eval: bool,
          no_foreign: bool, fmt: str, out: Path | None, int8: bool, seed: int, epochs: int | None,
          k: int | None, seconds: float | None, views: str | None, exclude: tuple[str, ...],
          outlier_weight: float | None, variants: int | None, member_gate: float | None,
          quiet: bool) -> None:
    """Train the 1-D CNN detector on labelled flows and write a model bundle.

    Windows are built by the edge's own windowing code (every view, with host history),
    features normalised with statistics stored in the bundle, the model trained with
    outlier exposure (benign windows at attack intensity must not look benign),
    calibrated (temperature) and exported to ONNX (checked against torch). The bundle
    goes into the registry under EDGELOOP_DATA_DIR (not made current: use
    `edgeloop release`), or to --out. Judge it on traffic it never saw with
    `edgeloop evaluate --open-world data/openworld/ndpi-test.toml BUNDLE`.

    \b
    edgeloop train                                  # the default training set
    edgeloop train --int8 --seed 1 --exclude-class slow_http_dos
    edgeloop train --train Tuesday.csv --format cicids2017 --out var/cic-model
    """
    from dataclasses import replace

    from contracts.window import parse_views
    from inference.registry import Registry
    from inference.train import RECIPE, train_bundle  # torch itself is imported when training starts

    s = _settings()
    t_load = time.perf_counter()
    if train_file is None:
        from inference.datasets.lab import lab_paths
        from inference.datasets.training import lab_eval_flows, training_flows

        try:
            train_df, source = training_flows(foreign=not no_foreign), "default training set"
            eval_df = None if eval_file else lab_eval_flows()
        except EdgeloopError as exc:
            raise click.ClickException(str(exc)) from exc
        eval_name, eval_src = "eval", str(lab_paths().eval)
    else:
        train_df, source, eval_df, eval_name, eval_src = _load(train_file, fmt), str(train_file), None, "", ""
    if eval_file:
        eval_df, eval_name, eval_src = _load(eval_file, fmt), Path(eval_file).stem, str(eval_file)
    val_df = _load(val_file, fmt) if val_file else None
    console.print(f"loaded {len(train_df)} flows from {source} in {time.perf_counter() - t_load:.1f} s")
    target = out or Path(tempfile.mkdtemp(prefix="edgeloop-train-"))
    cfg = RECIPE if outlier_weight is None else replace(RECIPE, outlier_weight=outlier_weight)
    cfg = cfg if variants is None else replace(cfg, run_variants=variants)
    cfg = cfg if member_gate is None else replace(cfg, member_gate=member_gate)
    try:
        vs = parse_views(views or s.window_views)
        bundle = train_bundle(train_df, val_df=val_df, k=k or s.window_k, seconds=seconds or s.window_seconds,
                              key=vs[0], views=vs, seed=seed, epochs=epochs,  # type: ignore[arg-type]
                              exclude_classes=exclude, int8=int8, progress=not quiet, out_dir=target,
                              dataset=source, config=cfg)
        if out is None:
            bundle = Registry(s.data_dir / "registry").add(target)
    except (EdgeloopError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    m = bundle.meta
    console.print(f"trained {m.version} in {m.metrics['train_seconds']:.1f} s "
                  f"({m.training['epochs_run']} epochs, best {m.training['best_epoch']}; "
                  f"validation macro-F1 {m.metrics['val_macro_f1']:.4f}, T={m.temperature:.3f}, "
                  f"int8 {'kept' if m.int8 else 'no'}; {m.window.describe()})")
    console.print(f"bundle: {bundle.path}" + ("" if out else f"   (make it current: edgeloop release {bundle.path})"))
    if eval_df is not None and not no_eval:
        judging = None
        if eval_file:
            judging = _lab_judging(eval_df, Path(eval_file), None, m.benign_class)
        else:  # the shipped lab evaluation, its attack runs on hosts of their own as in training
            from inference.datasets.training import lab_eval_judging

            judging = lab_eval_judging(eval_df, m.benign_class)
        _evaluate_and_print(bundle, eval_df, eval_name, eval_src, judging)
        if train_file is None:
            from evaluation.experiment_openworld import lab_macro_f1

            f1 = lab_macro_f1(bundle)
            console.print(f"lab evaluation capture, judged as the open world judges it (each attack in the "
                          f"windows keyed by its attacker or victim): macro-F1 {f1['all']:.4f} "
                          f"(src {f1.get('src', float('nan')):.4f}, dst {f1.get('dst', float('nan')):.4f}); "
                          f"every window: {f1['every_window']:.4f}")
        console.print("outside the lab: edgeloop evaluate --open-world data/openworld/ndpi-test.toml "
                      f"{bundle.path}")


@click.command("evaluate")
@click.argument("model", required=False)
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--open-world", "manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Judge MODEL on the foreign captures this manifest lists (TOML or JSON; see "
                   "docs/openworld.md) by window verdicts, instead of scoring FILE.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labels for a pcap (or to relabel a table): CSV/Parquet with flow_id,label "
                   "or src_ip,start_ms,end_ms,label.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="flows", show_default=True)
@click.option("--name", default=None, help="Report name (default: the file's stem; "
              "openworld-<manifest stem> with --open-world).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Report directory (default: <bundle>/reports).")
@click.option("--no-speed", is_flag=True, help="Skip the fp32/int8 speed measurement.")
@click.option("--no-plots", is_flag=True, help="Skip the PNGs (no matplotlib needed).")
@click.option("--fail-on-targets", is_flag=True, help="With --open-world: exit 1 when a target "
              "is missed (benign <= 1% false alerts and <= 5% deferred; known classes >= 95% ok; "
              "unknown kinds <= 1% missed; by window, over all views).")
@click.option("--windows", "windows_out", type=click.Path(dir_okay=False, path_type=Path),
              help="With --open-world: also write every judged window to this Parquet file.")
@click.option("--int8", is_flag=True, help="With --open-world: score with the bundle's int8 model, as a "
              "detector with EDGELOOP_INT8=1 serves it (also on when EDGELOOP_INT8 is set); the "
              "report names the precision.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(model: str | None, file: Path | None, manifest: Path | None, labels: Path | None,
             fmt: str, name: str | None, out: Path | None, no_speed: bool, no_plots: bool,
             fail_on_targets: bool, windows_out: Path | None, int8: bool, quiet: bool) -> None:
    """Evaluate bundle MODEL on labelled flow FILE, or on foreign captures (--open-world).

    MODEL is a bundle directory, a registry version, `current` or `default` (the bundle
    shipped with edgeloop). FILE is CSV/Parquet with a `label` column, or a pcap with
    --labels. Reports per-class precision/recall/F1, macro-F1, a confusion matrix and a
    reliability diagram (PNG), expected calibration error, fp32 vs int8 accuracy and
    windows/s, and how many windows of labels the model never saw went to `uncertain`.

    With --open-world MANIFEST [MODEL] (MODEL defaults to what the edge would load:
    EDGELOOP_MODEL, else the registry's current bundle, else the shipped default), every
    capture in the manifest is scored by the edge's own engine and each window judged:
    benign windows ok / false_alert / deferred; windows of a known class ok / deferred /
    miss / wrong_class; windows of a kind the model never saw caught_uncertain /
    caught_alert / miss. Prints rates per group by window and by capture, per view,
    beside a fan-out rule (>= 20 distinct dst:port pairs in 5 minutes) and the targets;
    writes JSON and a PNG. Captures that fail to load or meter are counted per reason.
    The shape rules are those the edge applies (EDGELOOP_SHAPE_RULES); the report names them.

    \b
    edgeloop evaluate default data/lab/eval.parquet
    edgeloop evaluate --open-world data/openworld/ndpi-test.toml default
    edgeloop evaluate --open-world data/openworld/ndpi-test.toml --fail-on-targets
    """
    if manifest is not None:
        if file is not None:
            raise click.UsageError("--open-world takes MANIFEST [MODEL], not a FILE too")
        _evaluate_open_world(manifest, model, name, out, no_plots, fail_on_targets, windows_out, quiet,
                             int8 or _settings().int8)
        return
    if int8:
        raise click.UsageError("--int8 goes with --open-world (the report on FILE compares fp32 and int8 itself)")
    if model is None or file is None:
        raise click.UsageError("give MODEL and FILE (or --open-world MANIFEST [MODEL])")
    from inference.evaluate import evaluate_bundle

    bundle = _resolve(model)
    df = _load(file, fmt, labels)
    try:
        report = evaluate_bundle(bundle, df, name=name or file.stem, out_dir=out,
                                 plots=not no_plots, speed=not no_speed, source=str(file),
                                 judging=_lab_judging(df, file, labels, bundle.meta.benign_class))
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    _print_report(report)


def _evaluate_open_world(manifest: Path, model: str | None, name: str | None, out: Path | None,
                         no_plots: bool, fail_on_targets: bool, windows_out: Path | None,
                         quiet: bool, int8: bool = False) -> None:
    from evaluation.openworld import evaluate_open_world
    from inference.openworld_table import print_report
    from inference.registry import resolve_bundle

    if model is None:
        s = _settings()
        try:
            bundle = resolve_bundle(s.model, s.data_dir / "registry")
        except EdgeloopError as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        bundle = _resolve(model)
    try:
        report = evaluate_open_world(manifest, bundle, out_dir=out, name=name, plots=not no_plots,
                                     progress=not quiet, windows_out=windows_out, int8=int8)
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    print_report(report, Console(stderr=True, width=max(console.width, 160)))
    if fail_on_targets and not report["targets_met"]:
        raise SystemExit(1)


def _resolve(model: str) -> Any:
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.registry import Registry, resolve_bundle

    s = _settings()
    root = s.data_dir / "registry"
    try:
        if model == "default":
            return Bundle.load(DEFAULT_BUNDLE_DIR)
        if model == "current":
            cur = Registry(root).current()
            if cur is None:
                raise click.ClickException(f"no current model in {root}")
            return cur
        return resolve_bundle(model, root)
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc


def _evaluate_and_print(bundle: Any, df: Any, name: str, source: str, judging: dict[str, Any] | None) -> None:
    from inference.evaluate import evaluate_bundle

    _print_report(evaluate_bundle(bundle, df, name=name, source=source, judging=judging))


def _lab_judging(df: Any, file: Path, labels: Path | None, benign: str) -> dict[str, Any] | None:
    """How to judge a lab capture's windows (evaluate_bundle's `judging`) when its labels
    document is at hand: --labels naming a `.labels.json`, or one beside FILE; else None."""
    from inference.evaluate import lab_judging

    doc = labels if labels is not None and labels.name.endswith(".labels.json") else file.with_suffix(".labels.json")
    if not doc.is_file():
        return None
    try:
        return lab_judging(df, doc, benign)
    except (OSError, ValueError, KeyError) as exc:
        raise click.ClickException(f"{doc}: cannot read the lab labels to judge windows by: {exc}") from exc


def _print_report(r: dict[str, Any]) -> None:
    t = Table(title=f"{r['dataset']['name']}: {r['windows']} windows, bundle {r['bundle']['version']}")
    for col in ("class", "precision", "recall", "F1", "support", "uncertain"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for c, v in r["per_class"].items():
        t.add_row(c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}",
                  str(v["support"]), str(r["uncertain"]["per_class"].get(c, 0)))
    console.print(t)
    console.print(f"macro-F1 {r['macro_f1']:.4f}  accuracy {r['accuracy']:.4f}  ECE {r['ece']:.4f} "
                  f"(uncalibrated {r['ece_uncalibrated']:.4f})  uncertain {r['uncertain']['rate']:.2%}")
    for c in r["confusions"][:5]:
        console.print(f"  confused: {c['windows']} {c['true']} windows predicted {c['predicted']}")
    if r["int8"].get("available"):
        console.print(f"int8: accuracy {r['int8']['accuracy']:.4f} "
                      f"({-r['int8']['accuracy_delta_points']:+.2f} points vs fp32), "
                      f"agreement {r['int8']['agreement_with_fp32']:.4f}")
    for prec, rows in ((p, r["speed"].get(p)) for p in ("fp32", "int8")):
        if rows:
            console.print(f"{prec} windows/s (1 thread): " + ", ".join(
                f"batch {x['batch']}: {x['windows_per_s']:,.0f} (p50 {x['p50_ms']:.3f} ms, "
                f"p99 {x['p99_ms']:.3f} ms)" for x in rows))
    for label, u in r["unseen"].items():
        console.print(f"unseen label {label}: {u['uncertain']}/{u['windows']} windows to uncertain "
                      f"({u['low_confidence']} low confidence, {u['ood']} OOD); predicted {u['predicted']}")
    j = r.get("judged")
    if j is not None:
        console.print(f"judged windows ({j['windows']:,} of {r['dataset']['windows']:,}; {j['collateral']:,} "
                      f"collateral): macro-F1 {j['macro_f1']:.4f}  accuracy {j['accuracy']:.4f}  ECE "
                      f"{j['ece']:.4f}  uncertain {j['uncertain']['rate']:.2%}  min recall "
                      f"{min(v['recall'] for v in j['per_class'].values() if v['support']):.4f}")
        console.print("  (the figures above count every window of every view, labelled by its flows: a scan "
                      "target's destination window, one flow from the scanner, counts as the scan and is deferred "
                      "by design. Judged windows are benign windows and each attack's windows keyed by its "
                      "principal, as `edgeloop evaluate --open-world` judges a lab capture.)")
    missed = [k for k, v in r["targets"].items() if k != "all_met" and not v["met"]]
    console.print(f"targets (on {r.get('targets_on', 'every window')}): " + ("all met" if not missed else
                  "missed " + ", ".join(f"{k} ({r['targets'][k]['value']:.4f} vs {r['targets'][k]['target']})"
                                        for k in missed)))
    if j is None and len(r["bundle"]["window"].get("views", ["src"])) > 1:
        # A multi-view bundle: say what these windows are, since the judged figure differs.
        console.print("  (every window of every view, labelled by its flows: the windows of a scan's targets and "
                      "of a one-source attack's victim count as that attack. The open-world judge counts an "
                      "attack on its attacker's windows, or its victim's for spoofed and reflected attacks, and "
                      "the rest as collateral: `edgeloop evaluate --open-world MANIFEST`. The lab evaluation "
                      "capture's macro-F1 judged that way, the >= 0.98 target, is what `edgeloop experiment "
                      "open-world` reports per training seed.)")
    console.print(f"report: {r['files']['json']}")


@click.group("models")
def models() -> None:
    """List and inspect the bundles in the model registry (EDGELOOP_DATA_DIR/registry)."""


@models.command("list")
def models_list() -> None:
    """Every registered version, newest first; * marks the current one."""
    from inference.bundle import Bundle
    from inference.registry import Registry

    reg = Registry(_settings().data_dir / "registry")
    cur = reg.current_version()
    bundles = sorted((Bundle.load(reg.path(v)) for v in reg.versions()),
                     key=lambda b: b.meta.created_ms, reverse=True)
    t = Table(title=f"registry {reg.root}")
    for col in ("", "version", "created", "classes", "val macro-F1", "int8"):
        t.add_column(col, no_wrap=col != "classes")
    for b in bundles:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(b.meta.created_ms / 1000))
        f1 = b.meta.metrics.get("val_macro_f1")
        t.add_row("*" if b.version == cur else "", b.version, created, ", ".join(b.class_names),
                  f"{f1:.4f}" if isinstance(f1, float) else "", "yes" if b.meta.int8 else "")
    if not bundles:
        from inference.bundle import DEFAULT_BUNDLE_DIR

        if (DEFAULT_BUNDLE_DIR / "bundle.json").is_file():
            t.caption = (f"empty: detectors without EDGELOOP_MODEL serve the bundle shipped in {DEFAULT_BUNDLE_DIR} "
                         f"({Bundle.load(DEFAULT_BUNDLE_DIR).version}) until `edgeloop release` or a promotion adds one")
        else:
            t.caption = "empty, and no default bundle is shipped: train one with `edgeloop train`"
    console.print(t)


@models.command("show")
@click.argument("model")
def models_show(model: str) -> None:
    """Print a bundle's metadata (MODEL: directory, version, `current` or `default`)."""
    b = _resolve(model)
    click.echo(b.meta.model_dump_json(by_alias=True, indent=2, exclude={"metrics"}))


@click.group("datasets")
def datasets() -> None:
    """Build the datasets edgeloop ships from their sources (the lab's own: `edgeloop lab`)."""


@datasets.command("ndpi")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write flows.parquet and the datasheet (default: data/ndpi in the repo).")
@click.option("--captures", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The nDPI capture folder with MANIFEST.tsv (default: ../shared/captures/ndpi).")
@click.option("--idle-timeout", type=int, default=5, show_default=True, help="NFStream idle timeout, s.")
@click.option("--active-timeout", type=int, default=30, show_default=True, help="NFStream active timeout, s.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def datasets_ndpi(out: Path | None, captures: Path | None, idle_timeout: int, active_timeout: int,
                  quiet: bool) -> None:
    """Meter the nDPI foreign captures (real benign traffic, LGPL-3.0, ntop/nDPI) into flows.

    Every capture file is metered with NFStream; each one yields flows or is recorded
    with the reason it failed. Files are split by a keyed hash of their name into a
    `train` and a `test` half (237 each); the test half is for evaluation only. Writes
    flows.parquet (FlowRecord columns + `file`, `split`; label benign), datasheet.json
    (per-file records: flows, packets, link types, IP versions, caveats, failures) and
    datasheet.md (source, licence and credit). About 30 s for the 474 files.
    """
    from inference.datasets.ndpi import NDPI_DIR, build_ndpi

    try:
        sheet = build_ndpi(out or NDPI_DIR, captures, idle_timeout=idle_timeout,
                           active_timeout=active_timeout, progress=not quiet)
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    for split, v in sheet["splits"].items():
        console.print(f"{split}: {v['files']} files, {v['files_metered']} metered, "
                      f"{v['files_failed']} failed, {v['flows']:,} flows")
    fails = ", ".join(f"{k} {n}" for k, n in sorted(sheet["failures"].items())) or "none"
    console.print(f"metering failures by reason: {fails}")
    console.print(f"wrote {out or NDPI_DIR}/flows.parquet, datasheet.json, datasheet.md "
                  f"in {sheet['metering']['seconds']:.0f} s")
