"""CIC-IDS2017 and NSL-KDD adapters on few-row files written here in the real layouts."""
from __future__ import annotations

import numpy as np
import pytest

from contracts.errors import SourceError
from inference.datasets.cicids2017 import load_cicids2017, map_label as cic_label
from inference.datasets.common import check_rows
from inference.datasets.nslkdd import COLUMNS, load_nslkdd
from inference.windowing import windows_from_frame

# MachineLearningCSV header exactly as published: stray leading spaces, a duplicated
# " Fwd Header Length", no addresses or timestamps.
CIC_ML_HEADER = (
    " Destination Port, Flow Duration, Total Fwd Packets, Total Backward Packets,"
    "Total Length of Fwd Packets, Total Length of Bwd Packets, Fwd Packet Length Max,"
    " Fwd Packet Length Min, Fwd Packet Length Mean, Fwd Packet Length Std,"
    "Bwd Packet Length Max, Bwd Packet Length Min, Bwd Packet Length Mean,"
    " Bwd Packet Length Std,Flow Bytes/s, Flow Packets/s, Flow IAT Mean, Flow IAT Std,"
    " Flow IAT Max, Flow IAT Min,Fwd IAT Total, Fwd IAT Mean, Fwd IAT Std, Fwd IAT Max,"
    " Fwd IAT Min,Bwd IAT Total, Bwd IAT Mean, Bwd IAT Std, Bwd IAT Max, Bwd IAT Min,"
    "Fwd PSH Flags, Bwd PSH Flags, Fwd URG Flags, Bwd URG Flags, Fwd Header Length,"
    " Bwd Header Length,Fwd Packets/s, Bwd Packets/s, Min Packet Length, Max Packet Length,"
    " Packet Length Mean, Packet Length Std, Packet Length Variance,FIN Flag Count,"
    " SYN Flag Count, RST Flag Count, PSH Flag Count, ACK Flag Count, URG Flag Count,"
    " CWE Flag Count, ECE Flag Count, Down/Up Ratio, Average Packet Size,"
    " Avg Fwd Segment Size, Avg Bwd Segment Size, Fwd Header Length,Fwd Avg Bytes/Bulk,"
    " Fwd Avg Packets/Bulk, Fwd Avg Bulk Rate, Bwd Avg Bytes/Bulk, Bwd Avg Packets/Bulk,"
    "Bwd Avg Bulk Rate,Subflow Fwd Packets, Subflow Fwd Bytes, Subflow Bwd Packets,"
    " Subflow Bwd Bytes,Init_Win_bytes_forward, Init_Win_bytes_backward, act_data_pkt_fwd,"
    " min_seg_size_forward,Active Mean, Active Std, Active Max, Active Min,Idle Mean,"
    " Idle Std, Idle Max, Idle Min, Label")
LABELLED_PREFIX = "Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp,"

# (dst port, duration us, fwd pkts, bwd pkts, fwd len, bwd len, fwd hdr, bwd hdr,
#  min len, max len, mean len, std len, IAT mean, IAT std, IAT max, SYN, ACK, label)
CIC_ROWS = [
    (443, 2_500_000, 10, 12, 1200, 15000, 320, 384, 0, 1460, 707.3, 512.1, 119047, 3e5, 1e6, 0, 1, "BENIGN"),
    (22, 4_000_000, 20, 18, 2200, 3100, 640, 576, 0, 640, 139.5, 120.0, 108108, 2e5, 9e5, 0, 1, "SSH-Patator"),
    (8080, 35, 1, 1, 0, 6, 40, 20, 0, 6, 2.0, 3.46, 35, 0, 35, 1, 0, "PortScan"),
    (80, 98_000_000, 6, 2, 320, 0, 192, 64, 0, 160, 40.0, 65.3, 1.4e7, 2e7, 5e7, 0, 1, "DoS slowloris"),
    (80, 5_600_000, 3, 1, 0, 0, -1, 32, 0, 0, 0.0, 0.0, 1.9e6, 3e6, 5.6e6, 0, 1, "Web Attack \x96 Brute Force"),
]


def _cic_csv(path, labelled: bool) -> None:
    names = [c for c in CIC_ML_HEADER.split(",")]
    lines = [(LABELLED_PREFIX if labelled else "") + CIC_ML_HEADER]
    stripped = [n.strip() for n in names]
    for i, r in enumerate(CIC_ROWS):
        v = dict.fromkeys(range(len(names)), "0")
        put = lambda name, value: v.__setitem__(stripped.index(name), str(value))  # noqa: E731
        for name, value in zip(("Destination Port", "Flow Duration", "Total Fwd Packets",
                                "Total Backward Packets", "Total Length of Fwd Packets",
                                "Total Length of Bwd Packets", "Fwd Header Length",
                                "Bwd Header Length", "Min Packet Length", "Max Packet Length",
                                "Packet Length Mean", "Packet Length Std", "Flow IAT Mean",
                                "Flow IAT Std", "Flow IAT Max", "SYN Flag Count", "ACK Flag Count",
                                "Label"), r):
            put(name, value)
        put("Flow Bytes/s", "Infinity" if i == 2 else "NaN" if i == 3 else "1234.5")
        put("Flow IAT Min", -1)  # CICFlowMeter writes negative IATs now and then
        row = ",".join(v[j] for j in range(len(names)))
        if labelled:
            ts = f"3/7/2017 8:5{i}" if i % 2 else f"03/07/2017 08:55:5{i}"
            row = f"192.168.10.5-104.16.207.165-54865-{r[0]}-6,192.168.10.5,54865,104.16.207.165,{r[0]},6,{ts}," + row
        lines.append(row)
    path.write_bytes("\n".join(lines).encode("latin-1"))


@pytest.mark.parametrize("labelled", [False, True])
def test_cicids2017_rows_become_valid_flow_records(tmp_path, labelled):
    path = tmp_path / "Tuesday-WorkingHours.pcap_ISCX.csv"
    _cic_csv(path, labelled)
    df = load_cicids2017(path)
    assert len(df) == len(CIC_ROWS)
    assert check_rows(df, limit=None) == len(CIC_ROWS)
    assert df["label"].tolist() == ["benign", "ssh_bruteforce", "port_scan", "slow_http_dos",
                                    "web_bruteforce"]
    first = df.iloc[0]
    assert first.duration_ms == pytest.approx(2500.0)  # microseconds -> ms
    assert first.packets == 22 and first.src2dst_packets == 10
    assert first.src2dst_bytes == 1200 + 320 and first.dst2src_bytes == 15000 + 384
    assert first.mean_piat_ms == pytest.approx(119.047)
    assert df.iloc[4].src2dst_bytes == 0  # negative header length clipped, not subtracted
    assert (df.min_ps <= df.mean_ps).all() and (df.mean_ps <= df.max_ps).all()
    windows = windows_from_frame(df, k=2, seconds=10.0)
    assert sum(len(w.flow_ids) for w in windows) == len(df)


def test_cicids2017_uses_addresses_and_day_first_timestamps(tmp_path):
    path = tmp_path / "Monday.csv"
    _cic_csv(path, labelled=True)
    df = load_cicids2017(path)
    assert set(df.src_ip) == {"192.168.10.5"} and df.protocol.eq(6).all()
    day = np.datetime64("2017-07-03", "ms").astype(np.int64)  # 3 July, not 7 March
    assert ((df.first_seen_ms >= day) & (df.first_seen_ms < day + 86_400_000)).all()
    assert df.flow_id.is_unique


def test_cicids2017_without_ips_windows_consecutive_rows(tmp_path):
    path = tmp_path / "ml.csv"
    _cic_csv(path, labelled=False)
    df = load_cicids2017(path)
    assert df.src_ip.nunique() == 1
    assert np.all(np.diff(df.first_seen_ms) > 0)
    assert [len(w.flow_ids) for w in windows_from_frame(df, k=2)] == [2, 2, 1]


def test_cicids2017_label_normalisation():
    assert cic_label("DoS Slowhttptest") == "slow_http_dos"
    assert cic_label("Web Attack – Sql Injection") == "web_sql_injection"
    assert cic_label("Something New") == "something_new"


def test_cicids2017_rejects_other_csv(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SourceError, match="missing columns"):
        load_cicids2017(path)


NSL_ROWS = [  # duration, protocol, service, flag, src bytes, dst bytes, ..., label, difficulty
    (0, "tcp", "ftp_data", "SF", 491, 0, "normal"),
    (0, "udp", "other", "SF", 146, 0, "normal"),
    (0, "tcp", "private", "S0", 0, 0, "neptune"),
    (0, "tcp", "http", "SF", 232, 8153, "normal"),
    (0, "tcp", "private", "REJ", 0, 0, "neptune"),
    (2, "tcp", "ftp", "RSTO", 1, 0, "guess_passwd"),
    (0, "icmp", "eco_i", "SF", 18, 0, "ipsweep"),
    (26, "tcp", "telnet", "SF", 150, 1200, "buffer_overflow"),
    (0, "tcp", "http", "SF", 54540, 8314, "back"),
]


def _nsl_file(path, difficulty: bool = True) -> None:
    lines = []
    for dur, proto, service, flag, src, dst, label in NSL_ROWS:
        rest = ["0"] * (len(COLUMNS) - 2 - 6)
        rest[17] = "123"  # "count", just to look real
        fields = [str(dur), proto, service, flag, str(src), str(dst), *rest, label]
        lines.append(",".join(fields + (["21"] if difficulty else [])))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("difficulty", [True, False])
def test_nslkdd_rows_become_valid_flow_records(tmp_path, difficulty):
    path = tmp_path / "KDDTrain+.txt"
    _nsl_file(path, difficulty)
    df = load_nslkdd(path)
    assert len(df) == len(NSL_ROWS)
    assert check_rows(df, limit=None) == len(NSL_ROWS)
    assert df["label"].tolist() == ["benign", "benign", "dos", "benign", "dos", "r2l", "probe",
                                    "u2r", "dos"]
    s0, rej, http = df.iloc[2], df.iloc[4], df.iloc[3]
    assert (s0.packets, s0.syn_packets, s0.dst2src_packets) == (1, 1, 0)  # a lone SYN
    assert (rej.rst_packets, rej.dst2src_rst_packets) == (1, 1)            # answered by RST
    assert http.dst_port == 80 and http.protocol == 6 and http.dst2src_packets == 2 + 6
    assert df.iloc[6].protocol == 1 and df.iloc[1].protocol == 17
    assert df.iloc[7].duration_ms == 26_000
    assert df.src_ip.is_unique  # one synthetic source per connection: one flow per window
    assert all(len(w.flow_ids) == 1 for w in windows_from_frame(df, k=8))


def test_nslkdd_attack_names_without_families(tmp_path):
    path = tmp_path / "KDDTest+.txt"
    _nsl_file(path)
    df = load_nslkdd(path, families=False)
    assert df["label"].tolist()[:3] == ["benign", "benign", "neptune"]


def test_nslkdd_rejects_wrong_width(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1,2,3\n")
    with pytest.raises(SourceError, match="42 or 43 columns"):
        load_nslkdd(path)
