"""The traffic lab: real tools, private network namespaces, labelled flow datasets.

    topology.py     namespaces, bridge and links (10.77.0.0/16, no route out); dark addresses
    conditions.py   per-host delay, jitter, loss, rate and a per-lab MTU (train / heldout)
    linkemu.py      applies the conditions in userspace (no netem needed)
    services.py     the victim: nginx (h2, auth), sshd, dnsmasq+DHCP, iperf3, vsftpd, smbd, mosquitto
    servers.py      DNS, NTP, SNMP and memcached servers (the reflectors)
    ntpserver.py    the lab's NTP server (monlist included; never sets the clock)
    benign.py       benign clients (benign_more.py: the newer protocols), one per namespace
    lan.py          mDNS, SSDP, DHCP and IPv6 neighbour chatter on every non-attacker host
    scenarios.py    the class registry: scenarios, variants (train/heldout), held-out kinds
    attacks/        the attacks as seeded plans of bounded tool runs, one module per family
    spoof.py        spoofed UDP requests for reflection; slowloris.py: a held-out slowloris
    capture.py      tcpdump on the switch's bridge (every frame once)
    labelling.py    spans (who + time + rule) -> flow labels
    trim.py         cutting a capture to a shippable size, whole flows only
    plan.py         everything drawn from the seed before the lab starts
    generate.py     one lab session end to end -> Parquet + labels + datasheet
    datasheet.py    counts, feature summaries, runs, conditions, tool versions
    cli.py          `edgeloop lab ...`

    >>> from trafficlab import GenerateOptions, generate
    >>> generate(GenerateOptions(seed=1, out_dir=Path("var/lab"), name="train",
    ...                          scenarios="known", variants="train", conditions="train"))

Heavy modules (pandas, NFStream) load on first use, so a benign client process that
imports `trafficlab.benign` stays light.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "GenerateOptions": "trafficlab.plan", "GenerateResult": "trafficlab.generate",
    "generate": "trafficlab.generate", "run_lab": "trafficlab.generate",
    "Span": "trafficlab.labelling", "apply_labels": "trafficlab.labelling",
    "load_spans": "trafficlab.labelling", "save_spans": "trafficlab.labelling",
    "SCENARIOS": "trafficlab.scenarios", "LABELS": "trafficlab.scenarios",
    "HELDOUT_KINDS": "trafficlab.scenarios", "KNOWN": "trafficlab.scenarios",
    "variant_filter": "trafficlab.scenarios", "Conditions": "trafficlab.conditions",
    "draw_conditions": "trafficlab.conditions",
    "Topology": "trafficlab.topology", "cleanup_stale": "trafficlab.topology",
    "can_create_namespaces": "trafficlab.topology", "trim_capture": "trafficlab.trim",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trafficlab' has no attribute {name!r}")
