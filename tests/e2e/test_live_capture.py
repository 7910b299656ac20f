"""Live capture: NFStream meters a real interface and the flows reach Kafka.

A veth pair joins the root namespace (10.78.9.1) to a private namespace (10.78.9.2)
running a small HTTP server; a bounded loop of requests crosses it while
`streams.sources.live.capture` meters the host side. Traffic never leaves the pair.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from streams.producer import FlowPublisher

pytestmark = pytest.mark.e2e
NS, HOST_IF, NS_IF = f"el-cap{os.getpid() % 10000}", f"elc{os.getpid() % 10000}h", "eth0"
HOST_IP, NS_IP = "10.78.9.1", "10.78.9.2"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=20)


@pytest.fixture
def veth_pair():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("live capture needs root and iproute2 to create a network namespace")
    try:
        sh("ip", "netns", "add", NS)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.strip()}")
    server = None
    try:
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", "elctmp", "netns", NS)
        sh("ip", "-n", NS, "link", "set", "elctmp", "name", NS_IF)
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        sh("ip", "-n", NS, "addr", "add", f"{NS_IP}/30", "dev", NS_IF)
        sh("ip", "-n", NS, "link", "set", NS_IF, "up")
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        server = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m", "http.server", "8000",
                                   "--bind", NS_IP], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(50):
            try:
                urllib.request.urlopen(f"http://{NS_IP}:8000/", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        yield HOST_IF
    finally:
        if server:
            server.terminate()
            server.wait(5)
        sh("ip", "link", "del", HOST_IF, check=False)
        sh("ip", "netns", "del", NS, check=False)


def test_capture_publishes_metered_flows(broker, topics, topic_reader, veth_pair):
    pytest.importorskip("nfstream")
    from streams.sources.live import capture

    requests_done = []
    stop = threading.Event()

    def traffic() -> None:
        time.sleep(1.0)  # let the capture open the interface
        for _ in range(200):  # bounded: at most 200 requests to the namespace's server, nothing else
            if stop.is_set():
                return
            urllib.request.urlopen(f"http://{NS_IP}:8000/", timeout=2).read()
            requests_done.append(1)
            time.sleep(0.05)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        with FlowPublisher(broker.bootstrap, topics.flows, sensor="live-test") as pub:
            # Stops at 20 flows or 20 s, whichever first; traffic keeps flows expiring until then.
            st = capture(veth_pair, pub, duration_s=20, max_flows=20, idle_timeout=1, active_timeout=5)
    finally:
        stop.set()
        t.join(30)
    assert len(requests_done) >= 20
    values = topic_reader(topics.flows, lambda vs: sum(len(json.loads(v)["records"]) for v in vs) >= st.records)
    flows = [r for v in values for r in json.loads(v)["records"]]
    web = [f for f in flows if f["dst_ip"] == NS_IP and f["dst_port"] == 8000]
    assert st.records == len(flows) >= 10
    assert len(web) >= 10 and all(f["src_ip"] == HOST_IP and f["protocol"] == 6 for f in web)
    assert all(f["packets"] >= 4 and f["bytes"] > 200 for f in web)  # handshake + request + reply
