"""One short lab run over slow, lossy links (the held-out condition profile), with the new
label rules: a spoofed-source flood (labelled by victim), DNS reflection (labelled by the
victim-reflector pair) and a sweep into dark addresses (labelled by attacker).

It checks that the conditions were really applied (round trips visible in the flows,
frames lost on the emulated links, the small MTU respected) and that the flows got the
right labels. Needs root and network namespaces, like the other lab e2e tests.
"""
from __future__ import annotations

import ipaddress
import json

import pandas as pd
import pytest

from trafficlab import tools
from trafficlab.topology import LAB_NET

pytestmark = pytest.mark.e2e
VARIANTS = ("syn_flood/hping3_syn,syn_flood/hping3_syn_spoofed,reflection/dns_any,"
            "host_sweep/nmap_sn_icmp")


@pytest.fixture(scope="module")
def slow_lab(tmp_path_factory: pytest.TempPathFactory):
    from trafficlab.generate import GenerateOptions, generate
    from trafficlab.topology import can_create_namespaces
    ok, why = can_create_namespaces()
    if not ok:
        pytest.skip(f"traffic lab skipped: network namespaces cannot be created here ({why})")
    gone = tools.missing("syn_flood", "reflection", "host_sweep")
    if gone:
        pytest.fail(f"lab tools missing: {', '.join(gone)}; run scripts/setup-lab.sh")
    out = tmp_path_factory.mktemp("lab-slow")
    opts = GenerateOptions(seed=21, out_dir=out, name="slow", scenarios="syn_flood,reflection,host_sweep",
                           variants=VARIANTS, conditions="heldout", scale=0.08, n_clients=2,
                           warmup_s=2.0, benign_only_s=4, gap_s=1.0, keep_pcap=False)
    result = generate(opts)
    return pd.read_parquet(result.paths["parquet"]), json.loads(result.paths["datasheet_json"].read_text())


def test_conditions_were_applied(slow_lab) -> None:
    df, sheet = slow_lab
    cond = sheet["conditions"]
    assert cond["mode"] == "heldout" and cond["mtu"] == 1280
    hosts = {"vic", "att", "c1", "c2", "r1", "r2"}
    assert set(cond["links"]) == hosts
    counters = sheet["link_counters"]
    assert {k.split(":")[0] for k in counters} == {f"p-{h}" for h in hosts}
    assert sum(c["lost"] for c in counters.values()) > 0            # loss happened
    # The delay each direction gave its frames, apart from queueing: half the link's round
    # trip. Jitter averages out over a busy direction's many bursts (one run: -3 to +8 ms on
    # the directions with 1,000 frames or more; up to +14 ms on quiet ones, not judged).
    off = {}
    for name, c in counters.items():
        want = cond["links"][name.split(":")[0][2:]]["delay_ms"] / 2
        if c["delay_ms_mean"] is None:                      # no frame admitted that way
            continue
        off[name] = round(c["delay_ms_mean"] - want, 1)
        assert c["out"] < 1000 or abs(off[name]) <= 0.25 * want, (name, c, want)
    print(f"\nmean delay given minus half the link's round trip, per direction (ms): {off}")
    # Round trips, as the switch sees them: a SYN-flood flow is the SYN, then the victim's
    # answer after the victim's downlink and uplink (a RST from a closed port ends it there),
    # then, for an open port, the attacker's RST after the attacker's downlink and uplink.
    vic, att = cond["links"]["vic"]["delay_ms"], cond["links"]["att"]["delay_ms"]
    flood = df[(df["label"] == "syn_flood") & (df["src_ip"] == sheet["topology"]["attacker"])]
    answered = flood[flood["packets"] == 2]
    full = flood[flood["packets"] >= 3]
    print(f"\nheld-out conditions: {len(flood)} flood flows from the attacker, {len(answered)} answered "
          f"(median {answered['duration_ms'].median():.0f} ms, range {answered['duration_ms'].min():.0f}-"
          f"{answered['duration_ms'].max():.0f}), {len(full)} with the attacker's RST; victim link {vic} ms, "
          f"attacker link {att} ms; lost {sum(c['lost'] for c in counters.values())} packets")
    # Enough answered flows for a median. Usually 55 of 63 flood flows are answered; one full
    # run (2026-12-06) saw 9, cause not found (the held-out link is rate-limited and lossy):
    # a failure names every link's counters, to tell drops on the victim's link from others.
    assert len(answered) + len(full) >= 8, (len(flood), len(answered), len(full),
                                            flood["packets"].value_counts().to_dict(), counters)
    # The flood lasts about 15 ms, well inside the jitter's 50 ms time constant
    # (trafficlab.linkemu.JITTER_TAU_S), so its flows share one jitter draw per direction: the
    # median is one sample of delay + N(0, up^2 + down^2), plus queueing (never less). A bound
    # of 0.8 x delay failed 2 of 3 full runs (medians 168 and 181 ms on a 229.7 ms link with
    # 29.2 ms of jitter each way: 1.5 sigma), so the bound is 3 sigma under the delay: a link
    # without the emulator shows about 1 ms. This bound alone cannot tell delay from the
    # queue behind the victim's 2-6 Mbit/s uplink (with the delay zeroed, a run measured
    # 432 ms): the counters above do. The emulator's arithmetic is pinned in
    # tests/unit/test_lab_conditions.py.
    def floor(*roles: str) -> float:
        sigma = sum(2 * cond["links"][r]["jitter_ms"] ** 2 for r in roles) ** 0.5
        return sum(cond["links"][r]["delay_ms"] for r in roles) - 3 * sigma
    if len(answered):
        assert answered["duration_ms"].median() >= floor("vic"), (answered["duration_ms"].describe(), vic)
    if len(full):
        assert full["duration_ms"].median() >= floor("vic", "att"), (full["duration_ms"].describe(), vic, att)
    assert df["max_ps"].max() <= 1280 + 14                              # the MTU held


def test_flows_got_the_right_labels_under_the_new_rules(slow_lab) -> None:
    df, sheet = slow_lab
    topo = sheet["topology"]
    victim, attacker = topo["victim"], topo["attacker"]
    servers = {s["addr"] for s in topo["servers"]}
    owned = {victim, attacker, *servers, *(c["addr"] for c in topo["clients"])}
    v4 = df[df["ip_version"] == 4]
    in_lab = v4["src_ip"].map(lambda a: ipaddress.ip_address(a) in LAB_NET or a in ("0.0.0.0",))

    spoofed = v4[~in_lab]                              # only the spoofed flood has such sources
    spoof_runs = [r for r in sheet["runs"] if r["variant"] == "hping3_syn_spoofed"]
    assert spoof_runs and (spoofed["label"] == "syn_flood").all()
    assert (spoofed["dst_ip"] == victim).all()
    # Loss and the 2-6 Mbit/s uplink take their share of a fast flood, not most of it.
    assert len(spoofed) >= 0.5 * sum(r["params"]["count"] for r in spoof_runs)

    pair = v4[(v4["src_ip"].isin(servers) & (v4["dst_ip"] == victim))
              | ((v4["src_ip"] == victim) & v4["dst_ip"].isin(servers))]
    odd = pair[pair["label"] != "reflection"]
    spans = [(r["variant"], r["start_ms"], r["end_ms"]) for r in sheet["runs"] if r["scenario"] == "reflection"]
    # Failed twice in full runs (1 flow of 110-111): the victim's ICMP unreachable to the previous
    # run's reflector, inside the next run off another one (trafficlab.labelling.with_tails).
    assert len(pair) > 0 and odd.empty, (
        f"{len(odd)} of {len(pair)} victim-server flows not labelled reflection:\n"
        f"{odd[['src_ip', 'dst_ip', 'src_port', 'dst_port', 'protocol', 'first_seen_ms', 'last_seen_ms', 'packets', 'label']].to_string()}"
        f"\nreflection runs: {spans}")
    assert set(df.loc[df["label"] == "reflection", "src_ip"]) | set(
        df.loc[df["label"] == "reflection", "dst_ip"]) <= servers | {victim}
    assert attacker not in set(df.loc[df["label"] == "reflection", "src_ip"])

    sweep = df[df["label"] == "host_sweep"]
    assert len(set(sweep["dst_ip"]) - owned) >= 50                  # dark addresses on the wire
    assert (sweep["src_ip"].eq(attacker) | sweep["dst_ip"].eq(attacker)).all()
    assert sheet["attacker_flows_labelled_benign"] == 0
    benign = df[df["label"] == "benign"]
    assert attacker not in set(benign["src_ip"]) | set(benign["dst_ip"])
    assert (benign["ip_version"] == 6).any()                          # ND/MLD on the slow links too
