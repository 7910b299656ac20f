"""The pcap source: NFStream flows mapped onto FlowRecord, quirks smoothed, ids stable.

The pcap is written by the test itself (Ethernet frames built byte by byte), so it needs
no root, no network and no capture tool: an HTTP exchange, DNS, a scan probe answered by
RST, an IPv6 handshake, ICMP echo, a flow with out-of-order timestamps and one 5-tuple
split in two by the idle timeout. The same file checks the lab's span labelling and the
flow-exact trimming of a pcap, which work on these metered flows.
"""
from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("nfstream", reason="pcap metering needs the capture extra (nfstream)")

from contracts.errors import SourceError  # noqa: E402
from contracts.records import FLOW_FIELDS, FlowRecord  # noqa: E402
from inference.flow_meter import iter_pcap_flows, meter_pcap, nfstream_flow_to_record  # noqa: E402
from trafficlab.labelling import Span, apply_labels, load_spans, save_spans  # noqa: E402
from trafficlab.trim import trim_capture  # noqa: E402

T0 = 1_790_000_000.0
SYN, ACK, PSH, RST, FIN = 0x02, 0x10, 0x08, 0x04, 0x01


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _eth(payload: bytes, ethertype: int) -> bytes:
    return b"\x02\0\0\0\0\x01" + b"\x02\0\0\0\0\x02" + struct.pack("!H", ethertype) + payload


def _ipv4(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0,
                      ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return _eth(hdr + l4, 0x0800)


def _ipv6(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64,
                      ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return _eth(hdr + l4, 0x86DD)


def _tcp(sp: int, dp: int, flags: int, payload: bytes = b"", seq: int = 1, ack: int = 0) -> bytes:
    return struct.pack("!HHIIBBHHH", sp, dp, seq, ack, 5 << 4, flags, 64240, 0, 0) + payload


def _udp(sp: int, dp: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sp, dp, 8 + len(payload), 0) + payload


def _write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> None:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ts, frame in packets:
        sec = int(ts)
        out.append(struct.pack("<IIII", sec, int(round((ts - sec) * 1e6)), len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))


HTTP_REQ = (b"GET /index.html HTTP/1.1\r\nHost: www.example.test\r\n"
            b"User-Agent: edge-test/1.0\r\nAccept: */*\r\n\r\n")
DNS_Q = bytes.fromhex("12340100000100000000000003777777076578616d706c650474657374000001"
                      "0001")


def _packets() -> list[tuple[float, bytes]]:
    c, s, a = "10.0.0.1", "10.0.0.2", "10.0.0.9"
    p: list[tuple[float, bytes]] = []
    t = T0
    # 1. HTTP: handshake, request, response, close (8 packets)
    for dt, src, dst, sp, dp, fl, pay in [
        (0.000, c, s, 40000, 80, SYN, b""), (0.001, s, c, 80, 40000, SYN | ACK, b""),
        (0.002, c, s, 40000, 80, ACK, b""), (0.003, c, s, 40000, 80, PSH | ACK, HTTP_REQ),
        (0.010, s, c, 80, 40000, PSH | ACK, b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1200),
        (0.011, c, s, 40000, 80, FIN | ACK, b""), (0.012, s, c, 80, 40000, FIN | ACK, b""),
        (0.013, c, s, 40000, 80, ACK, b"")]:
        p.append((t + dt, _ipv4(src, dst, 6, _tcp(sp, dp, fl, pay))))
    # 2. DNS query and answer
    p.append((t + 0.1, _ipv4(c, "10.0.0.53", 17, _udp(53000, 53, DNS_Q))))
    p.append((t + 0.101, _ipv4("10.0.0.53", c, 17, _udp(53, 53000, DNS_Q[:2] + b"\x81\x80" + DNS_Q[4:]))))
    # 3. a scan probe to a closed port, answered by RST
    p.append((t + 0.2, _ipv4(a, s, 6, _tcp(61000, 8081, SYN))))
    p.append((t + 0.2005, _ipv4(s, a, 6, _tcp(8081, 61000, RST | ACK))))
    # 4. IPv6 handshake
    p.append((t + 0.3, _ipv6("fd00::1", "fd00::2", 6, _tcp(41000, 443, SYN))))
    p.append((t + 0.301, _ipv6("fd00::2", "fd00::1", 6, _tcp(443, 41000, SYN | ACK))))
    # 5. ICMP echo request and reply
    icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"ping"
    p.append((t + 0.4, _ipv4(c, s, 1, icmp)))
    p.append((t + 0.401, _ipv4(s, c, 1, b"\0" + icmp[1:])))
    # 6. out-of-order timestamps inside one flow (clock step on the sensor)
    p.append((t + 0.52, _ipv4(c, s, 17, _udp(50000, 9999, b"a" * 40))))
    p.append((t + 0.50, _ipv4(s, c, 17, _udp(9999, 50000, b"b" * 60))))
    p.append((t + 0.53, _ipv4(c, s, 17, _udp(50000, 9999, b"c" * 20))))
    # 7. one UDP 5-tuple, silent for longer than the idle timeout: two flows
    p.append((t + 0.6, _ipv4(c, s, 17, _udp(50001, 7777, b"first"))))
    p.append((t + 8.6, _ipv4(c, s, 17, _udp(50001, 7777, b"second"))))
    return p


@pytest.fixture(scope="module")
def pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pcap") / "crafted.pcap"
    _write_pcap(path, _packets())
    return path


@pytest.fixture(scope="module")
def flows(pcap: Path):
    return meter_pcap(pcap, sensor="t1", idle_timeout=5, active_timeout=30)


def test_every_metered_row_validates_as_a_flow_record(flows) -> None:
    assert list(flows.columns) == list(FLOW_FIELDS)
    assert len(flows) == 8
    for row in flows.to_dict(orient="records"):
        # Parquet/pandas nulls (label, produced_ms) are absent fields in a record.
        rec = FlowRecord.model_validate({k: v for k, v in row.items() if not pd.isna(v)})
        assert rec.packets >= 1
    assert flows["label"].isna().all()


def test_http_flow_is_mapped_field_by_field(flows) -> None:
    http = flows[(flows.dst_port == 80)].iloc[0]
    assert (http.src_ip, http.dst_ip, http.src_port, http.protocol) == ("10.0.0.1", "10.0.0.2", 40000, 6)
    assert http.packets == 8 and http.src2dst_packets == 5 and http.dst2src_packets == 3
    assert http.bytes == http.src2dst_bytes + http.dst2src_bytes
    assert http.syn_packets == 2 and http.fin_packets == 2 and http.src2dst_syn_packets == 1
    assert http.dst2src_syn_packets == 1 and http.psh_packets == 2
    assert http.min_ps <= http.mean_ps <= http.max_ps
    assert http.duration_ms == pytest.approx(13, abs=1)
    assert http.last_seen_ms - http.first_seen_ms == pytest.approx(13, abs=1)
    assert http.application_name.startswith("HTTP")
    assert http.requested_server_name == "www.example.test"
    assert http.user_agent == "edge-test/1.0"
    assert http.flow_id.startswith("t1-") and http.sensor == "t1"


def test_scan_probe_ipv6_icmp_and_dns(flows) -> None:
    probe = flows[flows.dst_port == 8081].iloc[0]
    assert probe.packets == 2 and probe.rst_packets == 1 and probe.dst2src_rst_packets == 1
    v6 = flows[flows.ip_version == 6].iloc[0]
    assert v6.src_ip == "fd00::1" and v6.dst_port == 443 and v6.packets == 2
    icmp = flows[flows.protocol == 1].iloc[0]
    assert icmp.src_port == 0 and icmp.dst_port == 0 and icmp.packets == 2
    dns = flows[flows.dst_port == 53].iloc[0]
    assert dns.protocol == 17 and dns.application_name.startswith("DNS")


def test_quirks_out_of_order_timestamps_still_validate(flows) -> None:
    ooo = flows[flows.dst_port == 9999].iloc[0]
    assert ooo.mean_piat_ms >= 0 and ooo.max_piat_ms >= 0 and ooo.duration_ms >= 0
    assert ooo.last_seen_ms >= ooo.first_seen_ms


def test_idle_timeout_splits_a_five_tuple_into_two_flows_with_distinct_ids(flows) -> None:
    split = flows[flows.dst_port == 7777]
    assert len(split) == 2 and split.flow_id.nunique() == 2
    assert flows.flow_id.is_unique


def test_flow_ids_are_stable_across_metering_runs(pcap: Path, flows) -> None:
    again = [r["flow_id"] for r in iter_pcap_flows(pcap, sensor="t1", idle_timeout=5)]
    assert sorted(again) == sorted(flows.flow_id)


def test_mapping_smooths_nan_none_and_negative_values() -> None:
    raw = {"id": 3, "src_ip": "10.1.1.1", "dst_ip": "10.1.1.2", "src_port": 1, "dst_port": 2,
           "protocol": 6, "ip_version": 4, "bidirectional_first_seen_ms": 1000,
           "bidirectional_last_seen_ms": 900, "bidirectional_duration_ms": -100,
           "bidirectional_packets": 3, "bidirectional_bytes": 180, "src2dst_packets": 2,
           "src2dst_bytes": 120, "dst2src_packets": 1, "dst2src_bytes": 60,
           "bidirectional_min_ps": 60, "bidirectional_mean_ps": 59.999, "bidirectional_max_ps": 60,
           "bidirectional_stddev_ps": float("nan"), "bidirectional_mean_piat_ms": -5.0,
           "bidirectional_stddev_piat_ms": None, "bidirectional_max_piat_ms": float("inf"),
           "bidirectional_syn_packets": 9, "application_name": None,
           "requested_server_name": float("nan"), "user_agent": "u" * 2000}
    rec = nfstream_flow_to_record(raw, sensor="s")
    assert list(rec) == list(FLOW_FIELDS)
    model = FlowRecord.model_validate({k: v for k, v in rec.items() if v is not None})
    assert model.last_seen_ms == 1000 and model.mean_piat_ms == 0 and model.max_piat_ms == 0
    assert model.syn_packets == 3 and model.user_agent == "u" * 512 and model.application_name == ""


def test_missing_pcap_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        meter_pcap(tmp_path / "nope.pcap")


def test_span_labelling_marks_attacker_flows_inside_the_span_only(flows, tmp_path: Path) -> None:
    probe_start = int((T0 + 0.2) * 1000)
    spans = [Span("syn_scan", "10.0.0.9", probe_start - 50, probe_start + 50, "syn_scan", 0)]
    save_spans(tmp_path / "l.json", spans, seed=1)
    labelled = apply_labels(flows.copy(), load_spans(tmp_path / "l.json"))
    assert labelled["label"].value_counts().to_dict() == {"benign": 7, "syn_scan": 1}
    assert labelled.loc[labelled.dst_port == 8081, "label"].item() == "syn_scan"
    late = [Span("syn_scan", "10.0.0.9", probe_start + 5000, probe_start + 6000)]
    assert set(apply_labels(flows.copy(), late)["label"]) == {"benign"}


def test_trimmed_pcap_replays_to_identical_flows(pcap: Path, flows, tmp_path: Path) -> None:
    probe_start = int((T0 + 0.2) * 1000)
    spans = [Span("syn_scan", "10.0.0.9", probe_start - 10, probe_start + 10)]
    full = apply_labels(flows.copy(), spans)
    out = tmp_path / "trim.pcap"
    info = trim_capture(pcap, out, full, spans, max_bytes=2000, snaplen=64)
    assert out.stat().st_size == info.bytes <= 2000
    replay = apply_labels(meter_pcap(out, sensor="t1", idle_timeout=5), spans)
    assert 0 < len(replay) < len(full) and "syn_scan" in set(replay["label"])
    joined = replay.merge(full, on="flow_id", suffixes=("", "_full"))
    assert len(joined) == len(replay)  # every replayed flow is a row of the full dataset
    for col in ("packets", "bytes", "duration_ms", "mean_ps", "syn_packets", "label"):
        assert (joined[col] == joined[f"{col}_full"]).all(), col
