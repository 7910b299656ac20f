"""`edgeloop keys`: make and list the Ed25519 keys that sign policy activations."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from contracts.errors import EdgeloopError
from streams.terminal import safe

console = Console(stderr=True)


def _dir(directory: Path | None) -> Path:
    if directory is not None:
        return directory
    from streams.settings import load_settings

    return Path(load_settings().data_dir) / "keys"


@click.group()
def keys() -> None:
    """Signing keys: an approver's key signs activations; nodes trust the .pub files.

    Copy NAME.pub into the directory EDGELOOP_TRUSTED_KEYS names on every detector and
    enforcer node; keep NAME.key (0600) with the approver only."""


def _trusted_dir() -> Path:
    from streams.settings import load_settings

    s = load_settings()
    return Path(s.trusted_keys) if s.trusted_keys else Path(s.data_dir) / "trusted-keys"


@keys.command()
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where to write NAME.key and NAME.pub (default data_dir/keys).")
@click.option("--trust", is_flag=True,
              help="Also trust it on this host: copy NAME.pub into EDGELOOP_TRUSTED_KEYS (default "
                   "data_dir/trusted-keys), where this host's detectors and enforcer look.")
def new(name: str, directory: Path | None, trust: bool) -> None:
    """Make a key pair for NAME (the approver's identity in every record it signs).

    Detectors and enforcers require signatures by default: copy NAME.pub into the
    trusted-keys directory of every node (or --trust for this host)."""
    import shutil

    from streams.signing import SigningKey

    try:
        key = SigningKey.generate(name)
        priv, pub = key.save(_dir(directory))
        where = "copy it to each node's trusted-keys directory"
        if trust:
            d = _trusted_dir()
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pub, d / pub.name)
            where = f"trusted here ({d / pub.name}); copy it to other nodes"
    except (EdgeloopError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"key {key.key_id} for {safe(name)}: private {priv} (0600, keep it), public {pub} ({where})")


@keys.command(name="list")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="A key directory (default data_dir/keys; also a trusted-keys directory).")
def list_keys(directory: Path | None) -> None:
    """The keys in a directory: name, key id, private or public only."""
    d = _dir(directory)
    t = Table(title=f"keys in {d}")
    for col in ("name", "key id", "kind", "file"):
        t.add_column(col)
    n = 0
    for p in sorted(d.glob("*.key")) + sorted(d.glob("*.pub")):
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            t.add_row("?", "?", "unreadable", safe(f"{p.name}: {exc}"))
            continue
        t.add_row(safe(doc.get("name", "?")), safe(doc.get("key_id", "?")),
                  "private" if "private" in doc else "public", safe(p.name))
        n += 1
    Console().print(t)
    if not n:
        console.print(f"no keys in {d}: `edgeloop keys new NAME` makes one")
