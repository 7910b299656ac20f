"""CIC-IDS2017 CSVs (CICFlowMeter output) as FlowRecord rows plus `label`.

Reads both published layouts: `MachineLearningCSV` (78 features + Label, no addresses
or times) and `GeneratedLabelledFlows`/`TrafficLabelling` (adds Flow ID, Source/Destination
IP and Port, Protocol, Timestamp). Headers carry stray leading spaces (" Flow Duration");
names are matched after stripping.

    >>> df = load_cicids2017("Wednesday-workingHours.pcap_ISCX.csv")
    >>> train_bundle(df, k=8)                   # the same windowing and features as the edge

Approximations (CICFlowMeter measures differently from NFStream):
- Bytes: CICFlowMeter's "Total Length of Fwd/Bwd Packets" counts payload; the forward and
  backward header lengths are added to approach NFStream's IP bytes. Packet-size min/max
  get the mean header size per packet added; the mean is bytes / packets.
- Times are microseconds in CIC and milliseconds here. Without a Timestamp column, flows
  are spaced `step_ms` apart in file order; CIC timestamps have second (some files minute)
  resolution, so the time horizon of a window is coarse.
- Without Source IP (MachineLearningCSV) every flow shares one synthetic source, so a
  window is K consecutive rows of the file. Without Protocol, TCP (6) is assumed.
- Flag counts come from the "* Flag Count" columns, which in CIC-IDS2017 are often 0/1
  per flow rather than counts. Direction-specific SYN/RST counts do not exist (left 0).
- Labels are normalised (see LABELS); those with a lab counterpart take the lab name
  (SSH-Patator -> ssh_bruteforce, slowloris/Slowhttptest -> slow_http_dos).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contracts.errors import SourceError
from inference.datasets.common import finish, numeric, snake

# Keys are labels with everything but letters and digits removed, lower-cased, which also
# absorbs the mangled en dash in "Web Attack \x96 Brute Force" found in some copies.
LABELS: dict[str, str] = {
    "benign": "benign", "portscan": "port_scan", "ddos": "ddos", "doshulk": "dos_hulk",
    "dosgoldeneye": "dos_goldeneye", "dosslowloris": "slow_http_dos",
    "dosslowhttptest": "slow_http_dos", "ftppatator": "ftp_bruteforce",
    "sshpatator": "ssh_bruteforce", "bot": "bot", "webattackbruteforce": "web_bruteforce",
    "webattackxss": "web_xss", "webattacksqlinjection": "web_sql_injection",
    "infiltration": "infiltration", "heartbleed": "heartbleed",
}
REQUIRED = ("Destination Port", "Flow Duration", "Total Fwd Packets", "Total Backward Packets",
            "Total Length of Fwd Packets", "Total Length of Bwd Packets", "Label")


def map_label(label: Any) -> str:
    key = "".join(ch for ch in str(label).lower() if ch.isascii() and ch.isalnum())
    return LABELS.get(key, snake(label))


def read_cicids2017(path: str | Path, nrows: int | None = None) -> pd.DataFrame:
    """The raw CSV with header names stripped of surrounding spaces."""
    try:
        raw = pd.read_csv(path, nrows=nrows, low_memory=False, encoding="latin-1")
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot read CIC-IDS2017 CSV: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def load_cicids2017(path: str | Path, nrows: int | None = None, step_ms: int = 10,
                    start_ms: int = 1_499_000_000_000) -> pd.DataFrame:
    """FlowRecord columns plus `label` from one CIC-IDS2017 CSV file."""
    return adapt_cicids2017(read_cicids2017(path, nrows), step_ms, start_ms, source=str(path))


def adapt_cicids2017(raw: pd.DataFrame, step_ms: int = 10, start_ms: int = 1_499_000_000_000,
                     source: str = "cicids2017") -> pd.DataFrame:
    """Map a CIC-IDS2017 frame (stripped headers) to FlowRecord columns plus `label`."""
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise SourceError(f"{source}: not a CIC-IDS2017 CSV, missing columns {missing}")
    raw = raw.reset_index(drop=True)
    n = len(raw)
    col = lambda name, scale=1.0: numeric(raw[name], scale) if name in raw.columns else np.zeros(n)  # noqa: E731
    fwd, bwd = col("Total Fwd Packets"), col("Total Backward Packets")
    fwd_b = col("Total Length of Fwd Packets") + col("Fwd Header Length")
    bwd_b = col("Total Length of Bwd Packets") + col("Bwd Header Length")
    header_pp = (col("Fwd Header Length") + col("Bwd Header Length")) / np.maximum(fwd + bwd, 1)
    first = _times(raw, n, step_ms, start_ms)
    duration = col("Flow Duration", 1e-3)
    row = np.arange(n).astype(str)
    cols: dict[str, Any] = {
        "flow_id": (raw["Flow ID"].astype(str).str.slice(0, 100) + "#" + row
                    if "Flow ID" in raw.columns else np.char.add("cic-", row)),
        "sensor": "cicids2017",
        "first_seen_ms": first, "last_seen_ms": first + np.round(duration).astype(np.int64),
        "src_ip": raw["Source IP"].astype(str) if "Source IP" in raw.columns else "cic-src",
        "dst_ip": raw["Destination IP"].astype(str) if "Destination IP" in raw.columns else "cic-dst",
        "src_port": col("Source Port"), "dst_port": col("Destination Port"),
        "protocol": col("Protocol") if "Protocol" in raw.columns else 6,
        "duration_ms": duration,
        "src2dst_packets": fwd, "dst2src_packets": bwd,
        "src2dst_bytes": np.round(fwd_b), "dst2src_bytes": np.round(bwd_b),
        "min_ps": col("Min Packet Length") + header_pp, "max_ps": col("Max Packet Length") + header_pp,
        "stddev_ps": col("Packet Length Std"),
        "mean_piat_ms": col("Flow IAT Mean", 1e-3), "stddev_piat_ms": col("Flow IAT Std", 1e-3),
        "max_piat_ms": col("Flow IAT Max", 1e-3),
        "syn_packets": col("SYN Flag Count"), "ack_packets": col("ACK Flag Count"),
        "psh_packets": col("PSH Flag Count"), "rst_packets": col("RST Flag Count"),
        "fin_packets": col("FIN Flag Count"), "urg_packets": col("URG Flag Count"),
        "label": [map_label(v) for v in raw["Label"]],
    }
    return finish(cols, n)


def _times(raw: pd.DataFrame, n: int, step_ms: int, start_ms: int) -> np.ndarray:
    """Epoch ms from the Timestamp column (day first, as CIC writes it), else file order."""
    order = start_ms + np.arange(n, dtype=np.int64) * step_ms
    if "Timestamp" not in raw.columns:
        return order
    ts = pd.to_datetime(raw["Timestamp"], dayfirst=True, format="mixed", errors="coerce")
    ok = ts.notna().to_numpy()
    ms = ts.fillna(pd.Timestamp(0)).dt.as_unit("ms").astype("int64").to_numpy()
    return np.where(ok, ms, order)
