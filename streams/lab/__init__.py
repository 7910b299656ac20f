"""The traffic lab: real tools, private network namespaces, labelled flow datasets.

    topology.py   namespaces, bridge and veths (10.77.0.0/24, no route out); stale cleanup
    services.py   the victim: nginx, sshd, dnsmasq, iperf3 (configs in deploy/lab/)
    benign.py     benign clients, one process per client namespace
    scenarios.py  the attacks, as seeded plans of bounded tool runs
    capture.py    tcpdump on the victim's interface
    labelling.py  spans (attacker + time + scenario) -> flow labels
    trim.py       cutting a capture to a shippable size, whole flows only
    generate.py   one lab session end to end -> Parquet + labels + datasheet
    datasheet.py  counts, feature summaries, runs, tool versions
    cli.py        `edgeloop lab ...`

    >>> from streams.lab import GenerateOptions, generate
    >>> generate(GenerateOptions(seed=1, out_dir=Path("var/lab"), name="train"))

Heavy modules (pandas, NFStream) load on first use, so a benign client process that
imports `streams.lab.benign` stays light.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "GenerateOptions": "streams.lab.generate", "GenerateResult": "streams.lab.generate",
    "generate": "streams.lab.generate", "run_lab": "streams.lab.generate",
    "Span": "streams.lab.labelling", "apply_labels": "streams.lab.labelling",
    "load_spans": "streams.lab.labelling", "save_spans": "streams.lab.labelling",
    "SCENARIOS": "streams.lab.scenarios", "LABELS": "streams.lab.scenarios",
    "Topology": "streams.lab.topology", "cleanup_stale": "streams.lab.topology",
    "can_create_namespaces": "streams.lab.topology", "trim_capture": "streams.lab.trim",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'streams.lab' has no attribute {name!r}")
