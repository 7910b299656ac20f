"""The model registry: content-addressed bundle directories plus a `current` pointer.

    <data_dir>/registry/
        <version>/            one bundle each (see inference.bundle), never modified
        current.json          {"version": ..., "since_ms": ...}; replaced atomically
        history.jsonl         every promotion and rollback, appended

    >>> reg = Registry(settings.data_dir / "registry")
    >>> b = reg.add(bundle_dir)            # copies the bundle in under its version
    >>> reg.promote(b.version, reason="beats champion")
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from contracts.errors import ModelError
from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle


class Registry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, version: str) -> Path:
        return self.root / version

    def add(self, bundle_dir: str | Path) -> Bundle:
        """Verify a bundle and copy it in under its content version (idempotent)."""
        src = Bundle.load(bundle_dir)
        src.verify()
        dest = self.path(src.version)
        if not dest.exists():
            tmp = self.root / f".{src.version}.{os.getpid()}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src.path, tmp)
            os.replace(tmp, dest)
        return Bundle.load(dest)

    def get(self, version: str) -> Bundle:
        p = self.path(version)
        if not p.is_dir():
            raise ModelError(f"version {version} is not in the registry at {self.root}")
        return Bundle.load(p)

    def versions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def current_version(self) -> str | None:
        f = self.root / "current.json"
        return json.loads(f.read_text())["version"] if f.is_file() else None

    def current(self) -> Bundle | None:
        v = self.current_version()
        return self.get(v) if v else None

    def promote(self, version: str, reason: str = "") -> Bundle:
        b = self.get(version)
        b.verify()
        now = int(time.time() * 1000)
        tmp = self.root / f".current.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"version": version, "since_ms": now}))
        os.replace(tmp, self.root / "current.json")
        with open(self.root / "history.jsonl", "a") as fh:
            fh.write(json.dumps({"version": version, "at_ms": now, "reason": reason}) + "\n")
        return b

    def history(self) -> list[dict]:
        f = self.root / "history.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []


def resolve_bundle(model: str, registry_root: str | Path) -> Bundle:
    """The bundle a process should start with: an explicit path or version, else the
    registry's current one, else the default bundle shipped with the package."""
    if model:
        p = Path(model)
        if p.is_dir():
            return Bundle.load(p)
        return Registry(registry_root).get(model)
    reg_root = Path(registry_root)
    if (reg_root / "current.json").is_file():
        cur = Registry(reg_root).current()
        if cur is not None:
            return cur
    if (DEFAULT_BUNDLE_DIR / "bundle.json").is_file():
        return Bundle.load(DEFAULT_BUNDLE_DIR)
    raise ModelError("no model: set EDGELOOP_MODEL, promote one into the registry, "
                     "or train the default with `edgeloop train`")
