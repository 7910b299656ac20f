"""The labelled lab dataset shipped in `data/lab/`: real traffic from the traffic lab.

Flows metered from captures of real tools (nmap, hping3, slowhttptest, hydra) and benign
clients between network namespaces, stored as Parquet with FlowRecord columns plus
`label`. The training and evaluation sets come from separate lab runs (different seeds),
so evaluation measures generalisation to a capture the model never saw.

    >>> p = lab_paths()
    >>> train, test = load_lab("train"), load_lab("eval")
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streams.errors import SourceError

LAB_DIR = Path(__file__).resolve().parents[2] / "data" / "lab"
LAB_CLASSES: tuple[str, ...] = (
    "benign", "syn_scan", "fin_scan", "syn_flood", "slow_http_dos", "ssh_bruteforce")


@dataclass(frozen=True)
class LabPaths:
    train: Path
    eval: Path


def lab_paths(root: str | Path | None = None) -> LabPaths:
    """The training and evaluation Parquet files under root (default: the repo's data/lab)."""
    base = Path(root) if root else LAB_DIR

    def one(split: str) -> Path:
        found = sorted(base.glob(f"*{split}*.parquet"))
        if len(found) != 1:
            raise SourceError(f"expected one *{split}*.parquet in {base}, found "
                              f"{[p.name for p in found] or 'none'} (is the lab dataset there?)")
        return found[0]

    return LabPaths(train=one("train"), eval=one("eval"))


def load_lab(split: Literal["train", "eval"], root: str | Path | None = None) -> Any:
    """The split as a DataFrame (FlowRecord columns + `label`), in capture order."""
    import pandas as pd

    path = getattr(lab_paths(root), split)
    df = pd.read_parquet(path)
    if "label" not in df.columns:
        raise SourceError(f"{path}: no `label` column")
    return df
