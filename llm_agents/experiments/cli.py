"""`edgeloop experiment augment`: the augmentation experiment from the command line.

The lead wires the `augment` command object into the `edgeloop experiment` group:

    edgeloop experiment augment                       # lab data, LLM if EDGELOOP_LLM_BASE_URL is set
    edgeloop experiment augment --offline --repeats 1 --sizes 5,10

Defaults: `data/lab/*train*.parquet` and `*eval*.parquet` (`inference.datasets.lab`),
window K/T/key from the settings, output in `var/experiments/augment/`.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

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
