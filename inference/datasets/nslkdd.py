"""NSL-KDD (KDDTrain+.txt, KDDTest+.txt) as FlowRecord rows plus `label`.

The files have no header: 41 connection features, the attack name and (in the "+"
files) a difficulty score. NSL-KDD has no addresses, timestamps or packet counts, so:

- Each row gets its own synthetic source (`nslkdd-<row>`): the rows are a shuffled
  sample, so grouping neighbours into a window would invent context. Every window then
  holds one connection (per-flow detection; K=1 is the natural choice). The stable ids
  keep windowing and window ids working unchanged.
- first_seen_ms is the row number times `step_ms`; last_seen_ms adds the duration.
- Packets are estimated from the TCP connection state (`flag`) and the byte counts
  (one packet per started 1460 bytes of payload, plus handshake/teardown packets per
  state: S0 is a lone SYN, REJ a SYN answered by RST, SF a full connection, ...). Bytes
  add 40 (TCP) or 28 (UDP/ICMP) header bytes per packet. Packet-size spread is unknown:
  min = mean = max, stddev 0.
- The service name gives the destination port (http -> 80, private/other -> 0).
- Attack names map to the usual five families (benign, dos, probe, r2l, u2r) with
  `families=True`, else to their snake-case names.

    >>> df = load_nslkdd("KDDTrain+.txt")
    >>> train_bundle(df, k=1)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contracts.errors import SourceError
from inference.datasets.common import finish, numeric, snake

FEATURES: tuple[str, ...] = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land",
    "wrong_fragment", "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised",
    "root_shell", "su_attempted", "num_root", "num_file_creations", "num_shells",
    "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login", "count",
    "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate",
    "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate", "dst_host_count",
    "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
)
COLUMNS = (*FEATURES, "label", "difficulty")

FAMILIES: dict[str, str] = {"normal": "benign"}
for _family, _names in {
    "dos": "back land neptune pod smurf teardrop apache2 udpstorm processtable mailbomb",
    "probe": "satan ipsweep nmap portsweep mscan saint",
    "r2l": ("guess_passwd ftp_write imap phf multihop warezmaster warezclient spy xlock "
            "xsnoop snmpguess snmpgetattack httptunnel sendmail named worm"),
    "u2r": "buffer_overflow loadmodule rootkit perl sqlattack xterm ps",
}.items():
    FAMILIES.update({name: _family for name in _names.split()})

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1}
SERVICE_PORTS: dict[str, int] = {
    "aol": 5190, "auth": 113, "bgp": 179, "courier": 530, "csnet_ns": 105, "ctf": 84,
    "daytime": 13, "discard": 9, "domain": 53, "domain_u": 53, "echo": 7, "efs": 520,
    "exec": 512, "finger": 79, "ftp": 21, "ftp_data": 20, "gopher": 70, "hostnames": 101,
    "http": 80, "http_2784": 2784, "http_443": 443, "http_8001": 8001, "imap4": 143,
    "IRC": 6667, "iso_tsap": 102, "klogin": 543, "kshell": 544, "ldap": 389, "link": 245,
    "login": 513, "mtp": 57, "name": 42, "netbios_dgm": 138, "netbios_ns": 137,
    "netbios_ssn": 139, "netstat": 15, "nnsp": 433, "nntp": 119, "ntp_u": 123, "pop_2": 109,
    "pop_3": 110, "printer": 515, "remote_job": 71, "rje": 77, "shell": 514, "smtp": 25,
    "sql_net": 150, "ssh": 22, "sunrpc": 111, "supdup": 95, "systat": 11, "telnet": 23,
    "tftp_u": 69, "time": 37, "uucp": 540, "uucp_path": 117, "vmnet": 175, "whois": 43,
    "X11": 6000, "Z39_50": 210,
}
# Per TCP state (Bro/Zeek conn_state names): (fwd, bwd) control packets and flag counts
# (syn, fin, rst, fwd_syn, bwd_syn, bwd_rst) besides the data packets.
_STATES: dict[str, tuple[int, int, int, int, int, int, int, int]] = {
    "SF": (2, 2, 2, 2, 0, 1, 1, 0), "S0": (1, 0, 1, 0, 0, 1, 0, 0),
    "REJ": (1, 1, 1, 0, 1, 1, 0, 1), "RSTO": (2, 1, 2, 0, 1, 1, 1, 0),
    "RSTR": (2, 2, 2, 0, 1, 1, 1, 1), "RSTOS0": (2, 0, 1, 0, 1, 1, 0, 0),
    "RSTRH": (0, 2, 1, 0, 1, 0, 1, 1), "SH": (2, 0, 1, 1, 0, 1, 0, 0),
    "SHR": (0, 2, 1, 1, 0, 0, 1, 0), "S1": (2, 1, 2, 0, 0, 1, 1, 0),
    "S2": (2, 1, 2, 1, 0, 1, 1, 0), "S3": (2, 2, 2, 1, 0, 1, 1, 0), "OTH": (0, 0, 0, 0, 0, 0, 0, 0),
}
MSS = 1460


def map_label(label: Any, families: bool = True) -> str:
    name = str(label).strip().rstrip(".")
    return FAMILIES.get(name, snake(name)) if families else ("benign" if name == "normal" else snake(name))


def read_nslkdd(path: str | Path, nrows: int | None = None) -> pd.DataFrame:
    """The raw file with named columns (42 or 43 columns: difficulty is optional)."""
    try:
        raw = pd.read_csv(path, header=None, nrows=nrows)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot read NSL-KDD file: {exc}") from exc
    if raw.shape[1] not in (42, 43):
        raise SourceError(f"{path}: NSL-KDD rows have 42 or 43 columns, got {raw.shape[1]}")
    raw.columns = list(COLUMNS[:raw.shape[1]])
    return raw


def load_nslkdd(path: str | Path, nrows: int | None = None, families: bool = True,
                step_ms: int = 1000, start_ms: int = 1_000_000_000_000) -> pd.DataFrame:
    """FlowRecord columns plus `label` from an NSL-KDD file."""
    return adapt_nslkdd(read_nslkdd(path, nrows), families, step_ms, start_ms)


def adapt_nslkdd(raw: pd.DataFrame, families: bool = True, step_ms: int = 1000,
                 start_ms: int = 1_000_000_000_000) -> pd.DataFrame:
    raw = raw.reset_index(drop=True)
    n = len(raw)
    proto = raw["protocol_type"].astype(str).str.lower().map(PROTOCOLS).fillna(0).to_numpy(np.int64)
    tcp = proto == 6
    src_b, dst_b = numeric(raw["src_bytes"]), numeric(raw["dst_bytes"])
    data_f, data_b = np.ceil(src_b / MSS), np.ceil(dst_b / MSS)
    st = np.array([_STATES.get(str(f), _STATES["OTH"]) for f in raw["flag"]], dtype=np.int64)
    st[~tcp] = 0
    fwd = np.where(tcp, st[:, 0] + data_f, np.maximum(data_f, 1))
    bwd = np.where(tcp, st[:, 1] + data_b, data_b)
    header = np.where(tcp, 40, 28)  # IPv4 + TCP, or IPv4 + UDP/ICMP headers
    duration = numeric(raw["duration"], 1000.0)
    packets = np.maximum(fwd + bwd, 1)
    piat = np.where(packets > 1, duration / np.maximum(packets - 1, 1), 0.0)
    first = start_ms + np.arange(n, dtype=np.int64) * step_ms
    row = np.arange(n).astype(str)
    cols: dict[str, Any] = {
        "flow_id": np.char.add("nslkdd-", row), "sensor": "nslkdd",
        "first_seen_ms": first, "last_seen_ms": first + np.round(duration).astype(np.int64),
        "src_ip": np.char.add("nslkdd-", row), "dst_ip": "nslkdd-dst",
        "dst_port": raw["service"].astype(str).map(SERVICE_PORTS).fillna(0).to_numpy(np.int64),
        "protocol": proto, "duration_ms": duration,
        "src2dst_packets": fwd, "dst2src_packets": bwd,
        "src2dst_bytes": src_b + fwd * header, "dst2src_bytes": dst_b + bwd * header,
        "mean_piat_ms": piat, "max_piat_ms": piat,
        "syn_packets": st[:, 2], "fin_packets": st[:, 3], "rst_packets": st[:, 4],
        "ack_packets": np.where(tcp & (bwd > 0), packets - 1, 0),
        "psh_packets": np.where(tcp, data_f + data_b, 0), "urg_packets": numeric(raw["urgent"]),
        "src2dst_syn_packets": st[:, 5], "dst2src_syn_packets": st[:, 6],
        "dst2src_rst_packets": st[:, 7],
        "label": [map_label(v, families) for v in raw["label"]],
    }
    df = finish(cols, n)
    df["min_ps"] = df["max_ps"] = df["mean_ps"]
    return df
