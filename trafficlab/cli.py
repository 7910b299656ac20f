"""`edgeloop lab ...`: the traffic lab from the command line (root needed for the lab itself).

    edgeloop lab scenarios                    # what can run
    edgeloop lab check                        # tools installed? namespaces possible?
    edgeloop lab generate --seed 1 --out data/lab --name train
    edgeloop lab up --hold 300                # a lab to poke at by hand, torn down after
    edgeloop lab down                         # remove labs left by crashed runs
    edgeloop lab meter capture.pcap --labels capture.labels.json --out flows.parquet
"""
from __future__ import annotations

import random
import shutil
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from contracts.errors import LabError
from trafficlab.conditions import MODES

console = Console(stderr=True, log_path=False)


@click.group(help="Traffic lab: private network namespaces with a victim (web, SSH, DNS/DHCP, FTP, "
                  "SMB, MQTT, iperf3), servers (DNS, NTP, SNMP, memcached), benign clients and "
                  "attackers, used to generate labelled flow datasets. Building a lab needs root; "
                  "traffic never leaves the lab's namespaces (10.77.0.0/16, no routes out).")
def lab() -> None:
    pass


@lab.command(help="List the attack scenarios (classes), their variants (tool and settings, "
                  "tagged train or heldout), the label set and the held-out kinds.")
def scenarios() -> None:
    from trafficlab.scenarios import HELDOUT_KINDS, LABELS, variants_table
    table = Table("scenario (= label)", "variant", "split", "tool", "what it does")
    for v in variants_table():
        name = v["scenario"] + (" (held-out kind)" if v["held_out_kind"] else "")
        table.add_row(name, v["variant"], v["split"], v["tool"], v["summary"])
    Console().print(table)
    Console().print(f"label set: {', '.join(LABELS)} (benign runs throughout every generation)")
    Console().print(f"held-out kinds (kept out of training; --scenarios known leaves them out): "
                    f"{', '.join(HELDOUT_KINDS)}")


@lab.command(help="Check that the lab can run here: root, network namespaces, and every tool "
                  "(install them with scripts/setup-lab.sh). Exits 1 if something is missing.")
def check() -> None:
    from trafficlab import tools
    from trafficlab.scenarios import SCENARIOS
    from trafficlab.topology import can_create_namespaces
    from trafficlab.services import require_pam_deny
    ok, why = can_create_namespaces()
    gone = tools.missing(*SCENARIOS)
    try:
        require_pam_deny()
        pam = ""
    except LabError as exc:
        pam = str(exc)
    console.print(f"network namespaces: {'ok' if ok else why}")
    console.print(f"tools: {'all present' if not gone else 'missing ' + ', '.join(gone)}")
    console.print(f"vsftpd PAM guard: {pam or 'ok'}")
    if not ok or gone or pam:
        raise SystemExit(1)


@lab.command(help="Run the lab once and write a labelled flow dataset: <name>.parquet (FlowRecord "
                  "columns plus label), <name>.labels.json (attack spans: the labelling ground "
                  "truth), <name>.datasheet.json/.md (counts per class, feature summaries, every "
                  "run's parameters, tool versions, seed) and <name>.pcap. Benign clients run "
                  "throughout; the scenarios run one at a time, each bounded in packets and "
                  "time. Same seed, same plan; different seeds sweep different parameters.")
@click.option("--seed", type=int, required=True, help="Seed for addresses, client profiles and "
              "every scenario parameter.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("var/lab"), show_default=True, help="Directory to write into.")
@click.option("--name", default=None, help="File name stem [default: lab-s<seed>].")
@click.option("--scenarios", "scenario_names", default="all", show_default=True,
              help="Scenarios to run: all, known (all but the held-out kinds), heldout-kinds, or "
              "a comma-separated list (see `edgeloop lab scenarios`).")
@click.option("--variants", default="train", show_default=True,
              help="Which variants run: train, heldout, all, or a comma-separated list of "
              "scenario/variant names (e.g. syn_flood/hping3_syn_spoofed).")
@click.option("--conditions", type=click.Choice(MODES), default="none",
              show_default=True, help="Link conditions: none; train (per-host delay, jitter, loss, "
              "rate and a per-lab MTU drawn from the seed, outside the held-out region); train-slow (every "
              "host from the training region's slow corner: 120-300 ms, 0.5-5% loss, MTU 1400-1420); heldout "
              "(the evaluation-only profile: long delay, high loss, low rate, MTU 1280).")
@click.option("--scale", "--duration-scale", "scale", type=click.FloatRange(0.01, 20.0),
              default=1.0, show_default=True, help="Duration scale: each attack class gets "
              "about 2000 x SCALE flows, and run time grows with it.")
@click.option("--runs", "runs_per_class", type=click.IntRange(1, 8), default=None,
              help="Runs per attack class [default: 2-4, drawn from the seed]; --runs 1 makes "
              "one run carry all of a class's flows (e.g. one spoofed flood of 20,000+ sources).")
@click.option("--clients", type=click.IntRange(1, 20), default=6, show_default=True,
              help="Number of benign client hosts.")
@click.option("--servers", "n_servers", type=click.IntRange(0, 4), default=2, show_default=True,
              help="Number of lab servers (DNS, NTP, SNMP, memcached; the reflectors).")
@click.option("--attackers", "n_attackers", type=click.IntRange(1, 4), default=1, show_default=True,
              help="Number of attacker hosts (each scenario runs from one, drawn from the seed).")
@click.option("--idle-timeout", type=click.IntRange(1, 600), default=5, show_default=True,
              help="NFStream idle timeout, seconds.")
@click.option("--active-timeout", type=click.IntRange(1, 3600), default=30, show_default=True,
              help="NFStream active timeout, seconds.")
@click.option("--snaplen", type=click.IntRange(68, 65535), default=384, show_default=True,
              help="Capture snap length (sizes in flows are wire sizes regardless).")
@click.option("--benign-only", "benign_only_s", type=click.FloatRange(0, 600), default=None,
              help="Seconds of benign-only traffic before the first attack [default: 20 x SCALE].")
@click.option("--lan/--no-lan", "lan_chatter", default=True, show_default=True,
              help="LAN housekeeping (mDNS, SSDP, DHCP, IPv6 ND) on every non-attacker host.")
@click.option("--pcap/--no-pcap", "keep_pcap", default=True, show_default=True,
              help="Also write the capture as <name>.pcap.")
@click.option("--pcap-max-mb", type=click.FloatRange(0.5, None), default=None,
              help="Trim the written pcap to this size, keeping whole flows (see trafficlab.trim).")
def generate(seed: int, out_dir: Path, name: str | None, scenario_names: str, variants: str,
             conditions: str, scale: float, runs_per_class: int | None, clients: int,
             n_servers: int, n_attackers: int,
             idle_timeout: int, active_timeout: int, snaplen: int, benign_only_s: float | None,
             lan_chatter: bool, keep_pcap: bool, pcap_max_mb: float | None) -> None:
    from trafficlab.generate import GenerateOptions, generate as run_generate
    opts = GenerateOptions(seed=seed, out_dir=out_dir, name=name or f"lab-s{seed}",
                           scenarios=scenario_names, variants=variants, conditions=conditions,
                           scale=scale, runs_per_class=runs_per_class, n_clients=clients,
                           n_servers=n_servers, n_attackers=n_attackers,
                           idle_timeout=idle_timeout, active_timeout=active_timeout,
                           snaplen=snaplen, benign_only_s=benign_only_s, lan_chatter=lan_chatter,
                           keep_pcap=keep_pcap,
                           pcap_max_bytes=int(pcap_max_mb * 1e6) if pcap_max_mb else None)
    t0 = time.monotonic()
    try:
        with console.status("generating lab traffic") as status:
            def say(msg: str) -> None:
                console.log(msg)
                status.update(f"[{time.monotonic() - t0:5.0f}s] {msg[:80]}")
            result = run_generate(opts, say)
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table("class", "flows", title=f"{opts.name}: {result.flows} flows")
    for label, n in result.datasheet["counts"].items():
        table.add_row(label, str(n))
    console.print(table)
    timing = Table("scenario", "seconds", title="generation time per scenario")
    for sc, sec in result.scenario_seconds.items():
        timing.add_row(sc, f"{sec:.1f}")
    console.print(timing)
    console.print(f"lab {result.lab_seconds:.1f}s, metering {result.meter_seconds:.2f}s "
                  f"({result.flows_per_s:.0f} flows/s); wrote "
                  + ", ".join(str(p) for p in result.paths.values()))


@lab.command(help="Build the lab and its services and keep it up for manual exploration (for "
                  "example `ip netns exec <attacker ns> curl http://<victim>/`), until Ctrl-C or "
                  "--hold seconds pass; then tear it down completely.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for addresses.")
@click.option("--hold", type=click.IntRange(1, 3600), default=300, show_default=True,
              help="Seconds to keep the lab up.")
@click.option("--benign/--no-benign", default=False, show_default=True,
              help="Also run the benign clients while the lab is up.")
@click.option("--keep-logs", is_flag=True, help="Keep the run directory (daemon logs, configs).")
def up(seed: int, hold: int, benign: bool, keep_logs: bool) -> None:
    from trafficlab import tools
    from trafficlab.generate import client_profiles, start_benign
    from trafficlab.procs import Procs, terminate_raises
    from trafficlab.servers import Servers
    from trafficlab.services import Services
    from trafficlab.topology import Topology, cleanup_stale
    try:
        tools.require()
        cleanup_stale()
        rng = random.Random(seed)
        topo = Topology.plan(rng, 3)
        work = Path(tempfile.mkdtemp(prefix="el-lab-"))
        procs = Procs(work)
        with terminate_raises():
            try:
                topo.build()
                services = Services(topo, procs, work, rng)
                services.start()
                Servers(topo, procs, work, rng).start(time.time() + hold + 5)
                if benign:
                    start_benign(topo, procs, services, client_profiles(rng, topo),
                                 time.time() + hold)
                table = Table("host", "namespace", "address")
                for h in topo.hosts.values():
                    table.add_row(h.role, h.ns, h.addr)
                console.print(table)
                console.print(f"victim services up (logs in {work}); holding {hold}s, "
                              "Ctrl-C to stop")
                time.sleep(hold)
            except KeyboardInterrupt:
                console.print("stopping")
            finally:
                procs.stop_all()
                topo.teardown()
                if not keep_logs:
                    shutil.rmtree(work, ignore_errors=True)
                console.print("lab torn down" + (f"; logs kept in {work}" if keep_logs else ""))
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc


@lab.command(help="Remove lab namespaces (el-<pid>-*) left behind by runs that died, killing "
                  "what still runs inside them. With --all, also remove labs that are in use.")
@click.option("--all", "force", is_flag=True, help="Remove every lab, even ones in use.")
def down(force: bool) -> None:
    from trafficlab.topology import cleanup_stale
    removed = cleanup_stale(force=force)
    console.print(f"removed {len(removed)} namespaces" + (f": {', '.join(removed)}" if removed else ""))


@lab.command(help="Re-apply the current label rules to generated datasets (their Parquet and "
                  "labels.json), updating the datasheets, without running the lab again.")
@click.argument("names", nargs=-1, required=True)
@click.option("--dir", "out_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=Path("data/lab"), show_default=True, help="Directory holding the datasets.")
def relabel(names: tuple[str, ...], out_dir: Path) -> None:
    from trafficlab.relabel import relabel as run_relabel
    try:
        for name in names:
            counts = run_relabel(out_dir, name)
            console.print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc


@lab.command(help="Meter a pcap with NFStream into a Parquet file of FlowRecord columns; with "
                  "--labels (a <name>.labels.json from generate), label the flows as well.")
@click.argument("pcap", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Parquet file to write.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Spans file to label the flows with.")
@click.option("--sensor", default=None, help="Sensor name in flow ids [default: from the "
              "labels file, else 'pcap'].")
@click.option("--idle-timeout", type=click.IntRange(1, 600), default=None,
              help="NFStream idle timeout [default: from the labels file, else 5].")
@click.option("--active-timeout", type=click.IntRange(1, 3600), default=None,
              help="NFStream active timeout [default: from the labels file, else 30].")
def meter(pcap: Path, out: Path, labels: Path | None, sensor: str | None,
          idle_timeout: int | None, active_timeout: int | None) -> None:
    import json

    from trafficlab.labelling import apply_labels, load_spans
    from inference.flow_meter import meter_pcap
    doc = json.loads(labels.read_text()) if labels else {}
    t0 = time.monotonic()
    try:
        df = meter_pcap(pcap, sensor or doc.get("sensor", "pcap"),
                        idle_timeout=idle_timeout or doc.get("idle_timeout", 5),
                        active_timeout=active_timeout or doc.get("active_timeout", 30))
        if labels:
            apply_labels(df, load_spans(labels))
    except Exception as exc:  # SourceError, LabError: report, do not trace
        raise click.ClickException(str(exc)) from exc
    seconds = time.monotonic() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out, index=False, compression="zstd")
    console.print(f"{len(df)} flows in {seconds:.2f}s ({len(df) / max(seconds, 1e-9):.0f} flows/s) "
                  f"-> {out}")
    if labels:
        console.print(df["label"].value_counts().to_string())


if __name__ == "__main__":
    lab()
