"""The registry of the lab's classes: every attack scenario, its variants, the label set,
and which classes are held out of training.

A scenario is a class (its name is the label). Its variants are the tools and settings
that make it, each tagged `train` or `heldout`; a generation runs only the variants its
`--variants` selects (see `variant_filter`), so a detector trained on training variants
can be evaluated on tools and settings it never saw. HELDOUT_KINDS are whole classes kept
out of training (by default a training generation runs KNOWN classes only), to measure
how unknown attacks are routed (uncertain or alert, not benign).

    >>> [v.name for v in SCENARIOS["syn_scan"].variants]
    ['nmap_sS', 'nmap_sS_top', 'masscan', 'hping3_scan', 'nmap_sT']
    >>> runs = SCENARIOS["syn_scan"].plan(random.Random(1), 2500, target, variant_filter("train"))
    >>> runs[0].argv      # ['nmap', '-sS', ...]; run inside an attacker namespace
"""
from __future__ import annotations

from typing import Callable

from contracts.errors import LabError
from trafficlab.attacks.base import Run, Scenario, Target, Variant, check_run  # noqa: F401
from trafficlab.attacks.bruteforce import FTP_BRUTEFORCE, HTTP_BRUTEFORCE, SSH_BRUTEFORCE
from trafficlab.attacks.floods import ICMP_FLOOD, SYN_FLOOD, UDP_FLOOD
from trafficlab.attacks.reflection import REFLECTION
from trafficlab.attacks.scans import FIN_SCAN, SYN_SCAN, UDP_SCAN
from trafficlab.attacks.slow_http import SLOW_HTTP
from trafficlab.attacks.sweeps import HOST_SWEEP

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    SYN_SCAN, FIN_SCAN, UDP_SCAN, HOST_SWEEP, SYN_FLOOD, UDP_FLOOD, ICMP_FLOOD, REFLECTION,
    SLOW_HTTP, SSH_BRUTEFORCE, FTP_BRUTEFORCE, HTTP_BRUTEFORCE)}
LABELS: tuple[str, ...] = ("benign", *SCENARIOS)
# Classes deliberately kept out of training: a flood of another protocol, a flood with
# almost no flows (ICMP: one flow per source per active timeout) and brute force of a
# service the detector never saw. Each is close enough to a known class to be tempting
# and different enough that calling it that class (or benign) is a real error.
HELDOUT_KINDS: tuple[str, ...] = ("udp_flood", "icmp_flood", "ftp_bruteforce")
KNOWN: tuple[str, ...] = tuple(s for s in SCENARIOS if s not in HELDOUT_KINDS)
TRAIN_LABELS: tuple[str, ...] = ("benign", *KNOWN)
VARIANT_SETS = ("train", "heldout", "all")


def resolve(names: str | list[str] | None) -> list[Scenario]:
    """Scenarios for 'all' (or None), 'known' (all but HELDOUT_KINDS), 'heldout-kinds', or a
    comma-separated list of names."""
    if names is None or names == "all":
        return list(SCENARIOS.values())
    if names == "known":
        return [SCENARIOS[n] for n in KNOWN]
    if names == "heldout-kinds":
        return [SCENARIOS[n] for n in HELDOUT_KINDS]
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in items if n not in SCENARIOS]
    if unknown:
        raise LabError(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)} "
                       "(or all, known, heldout-kinds)")
    return [SCENARIOS[n] for n in items]


def variant_filter(spec: str | None) -> Callable[[str, Variant], bool]:
    """Which variants a generation runs: 'train', 'heldout', 'all', or a comma-separated list
    of scenario/variant names (e.g. 'syn_flood/hping3_syn_spoofed')."""
    spec = spec or "train"
    if spec == "all":
        return lambda scenario, v: True
    if spec in ("train", "heldout"):
        return lambda scenario, v: v.split == spec
    wanted = {w.strip() for w in spec.split(",") if w.strip()}
    for w in wanted:
        scenario, _, variant = w.partition("/")
        if scenario not in SCENARIOS:
            raise LabError(f"--variants {w}: unknown scenario {scenario!r}")
        SCENARIOS[scenario].variant(variant)          # raises for an unknown variant
    return lambda scenario, v: f"{scenario}/{v.name}" in wanted


def variants_table() -> list[dict]:
    """Every variant of every scenario, for `edgeloop lab scenarios` and datasheets."""
    return [{"scenario": s.name, "variant": v.name, "split": v.split, "tool": v.tool,
             "summary": v.summary, "held_out_kind": s.name in HELDOUT_KINDS}
            for s in SCENARIOS.values() for v in s.variants]
