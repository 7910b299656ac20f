"""`edgeloop experiment augment` and `edgeloop experiment scarce`: the augmentation
experiments from the command line.

    edgeloop experiment augment                       # lab data, LLM if EDGELOOP_LLM_BASE_URL is set
    edgeloop experiment augment --offline --repeats 1 --sizes 5,10
    edgeloop experiment scarce                        # scarce data, judged away from home

Defaults: `data/lab/*train*.parquet` and `*eval*.parquet` (`inference.datasets.lab`),
window K/T/key from the settings, output in `var/experiments/augment/`.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import click
import pandas as pd


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sizes(_: click.Context, __: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers") from exc
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"{value!r}: sizes must be positive")
    return sizes


@click.command("augment")
@click.option("--train", "train_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training flows (Parquet, FlowRecord columns + label). Default: the lab's.")
@click.option("--eval", "eval_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Evaluation flows, a separate capture. Default: the lab's.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder. Default: <data_dir>/experiments/augment.")
@click.option("--sizes", default="5,10,20,50", callback=_sizes, show_default=True,
              help="Real windows per attack class.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 100))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Self-evolution rounds per class.")
@click.option("--synth-windows", type=click.IntRange(1, 10_000), default=None,
              help="Synthetic windows per class per batch. Default: max(10, 2 x size).")
@click.option("--benign-windows", default=200, show_default=True, type=click.IntRange(1))
@click.option("--offline", is_flag=True,
              help="Use the statistical generator even if an LLM is configured.")
@click.option("--seed", default=0, show_default=True)
def augment(train_path: Path | None, eval_path: Path | None, out_dir: Path | None,
            sizes: tuple[int, ...], repeats: int, rounds: int, synth_windows: int | None,
            benign_windows: int, offline: bool, seed: int) -> None:
    """Macro-F1 vs real windows per attack class: none, SMOTE, synthesis with self-evolution."""
    from llm_agents.experiments.augment import AugmentConfig, run_experiment
    from streams.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = load_settings()
    if train_path is None or eval_path is None:
        from inference.datasets.lab import lab_paths
        lab = lab_paths()
        train_path, eval_path = train_path or lab.train, eval_path or lab.eval
    client, model = None, "stat:kde"
    if not offline and not settings.offline:
        from llm_agents.client import LLMClient
        client = LLMClient.from_settings(settings)
        model = f"llm:{settings.llm_model or '(server default)'}"
    cfg = AugmentConfig(sizes=sizes, repeats=repeats, rounds=rounds, synth_windows=synth_windows,
                        benign_windows=benign_windows, k=settings.window_k,
                        seconds=settings.window_seconds, key=settings.window_key, seed=seed)
    out = out_dir or Path(settings.data_dir) / "experiments" / "augment"
    data = {name: {"path": str(path), "sha256": _sha256(path)}
            for name, path in (("train", train_path), ("eval", eval_path))}
    res = run_experiment(pd.read_parquet(train_path), pd.read_parquet(eval_path), out,
                         client=client, cfg=cfg, model=model, data=data)
    click.echo(Path(res.paths["table_md"]).read_text(encoding="utf-8"))
    for name, path in res.paths.items():
        click.echo(f"{name}: {path}")


def _names(choices: tuple[str, ...]) -> Any:
    def check(_: click.Context, __: click.Parameter, value: str) -> tuple[str, ...]:
        names = tuple(v.strip() for v in value.split(",") if v.strip())
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise click.BadParameter(f"{value!r}: expected a comma-separated subset of {', '.join(choices)}")
        return names
    return check


@click.command("scarce")
@click.option("--train", "train_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The one capture to draw real windows from. Default: the lab's train.parquet.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder. Default: <data_dir>/experiments/scarce.")
@click.option("--per-class", default=20, show_default=True, type=click.IntRange(2, 10_000),
              help="Real windows per class (benign included) in each draw.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1, 100),
              help="Draws of the real windows; figures are mean and 95% t-interval over them.")
@click.option("--arms", default="real,smote,kde,llm,oracle", show_default=True,
              callback=_names(("real", "smote", "kde", "llm", "oracle")),
              help="llm needs EDGELOOP_LLM_BASE_URL (e.g. `edgeloop llm serve`); without one it is left out.")
@click.option("--groups", default="lab-conditions,lab-heldout,lab-heldout-b,ndpi-test", show_default=True,
              callback=_names(("lab-conditions", "lab-heldout", "lab-heldout-b", "ndpi-test")),
              help="Open-world manifests (data/openworld/<name>.toml) to judge every detector on.")
@click.option("--synth-windows", default=40, show_default=True, type=click.IntRange(1, 10_000),
              help="Windows each generator adds per attack class.")
@click.option("--llm-windows", default=4, show_default=True, type=click.IntRange(1, 10_000),
              help="The llm arm's windows per attack class per round (a small local model: ~35 s a request).")
@click.option("--llm-rounds", default=1, show_default=True, type=click.IntRange(1, 20))
@click.option("--ungated", is_flag=True, help="Keep every physically valid llm/oracle batch, not only those "
              "that raise the gate's F1 (the gate has 5 real windows per class).")
@click.option("--epochs", default=40, show_default=True, type=click.IntRange(1, 1000))
@click.option("--seed", default=0, show_default=True)
def scarce(train_path: Path | None, out_dir: Path | None, per_class: int, repeats: int, arms: tuple[str, ...],
           groups: tuple[str, ...], synth_windows: int, llm_windows: int, llm_rounds: int, ungated: bool,
           epochs: int, seed: int) -> None:
    """Augmentation where data is scarce and foreign: at most --per-class real windows of each
    class from one lab capture; real only, SMOTE, KDE, the LLM synthesiser and a real-data
    oracle (the upper bound) each train a detector, judged on other link conditions, held-out
    tools and foreign captures (false alerts, deferrals, known right, unknown missed, macro-F1)."""
    from llm_agents.experiments.scarce import ScarceConfig, run
    from streams.settings import load_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    settings = load_settings()
    if train_path is None:
        from inference.datasets.lab import lab_paths
        train_path = lab_paths().train
    client, model = None, ""
    if "llm" in arms:
        if settings.offline:
            click.echo("no LLM endpoint (EDGELOOP_LLM_BASE_URL unset): the llm arm is left out", err=True)
            arms = tuple(a for a in arms if a != "llm")
        else:
            from llm_agents.client import LLMClient
            client = LLMClient.from_settings(settings)
            model = f"llm:{settings.llm_model or '(server default)'} at {settings.llm_base_url}"
    cfg = ScarceConfig(per_class=per_class, repeats=repeats, arms=arms, groups=groups, synth_windows=synth_windows,
                       llm_windows=llm_windows, llm_rounds=llm_rounds, gated=not ungated, epochs=epochs, k=settings.window_k, seconds=settings.window_seconds, seed=seed)
    out = out_dir or Path(settings.data_dir) / "experiments" / "scarce"
    res = run(train_path, out, cfg, client=client, model=model, say=lambda m: click.echo(m, err=True))
    click.echo(Path(res.paths["table"]).read_text(encoding="utf-8"))
    for name, path in res.paths.items():
        click.echo(f"{name}: {path}")
