"""A benign client's page load opens parallel short connections to one server, as a browser
does against a server without HTTP/2 (trafficlab.benign_more.MoreActions._page_load)."""
from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trafficlab.benign import PROFILES, Client
from trafficlab.services import PAGES

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


class _Pages(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive allowed: parallelism must come from curl, not the server
    seen: list[tuple[int, str]] = []
    in_flight = peak = 0
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        cls = type(self)
        with cls.lock:
            cls.seen.append((self.client_address[1], self.path))
            cls.in_flight += 1
            cls.peak = max(cls.peak, cls.in_flight)
        time.sleep(0.2)             # long enough for the transfers to overlap
        with cls.lock:
            cls.in_flight -= 1
        body = b"x" * 1000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a) -> None:
        pass


def _page_load(seed: int) -> list[str]:
    client = Client("10.77.0.10", "browser", random.Random(seed), Path("/nonexistent"), 1.0)
    client.lookups, client.calls = [], []
    argv, env, stdin = client._page_load()
    assert env is None and stdin is None and not client.lookups and not client.calls
    return argv


def test_page_loads_are_part_of_what_browsers_and_offices_do():
    assert PROFILES["browser"][0]["page_load"] > 0
    assert PROFILES["office"][0]["page_load"] > 0


@pytest.mark.parametrize("seed", range(20))
def test_a_page_load_is_bounded_and_only_reaches_the_victim(seed):
    argv = _page_load(seed)
    urls = [a for a in argv if a.startswith(("http://", "https://"))]
    assert 4 <= len(urls) <= 12
    assert len({u.split("/")[2] for u in urls}) == 1          # one server
    assert {u.rsplit("/", 1)[1] for u in urls} <= set(PAGES)
    assert argv[argv.index("--max-time") + 1] == "15"
    assert 2 <= int(argv[argv.index("--parallel-max") + 1]) <= 6
    assert "--http1.1" in argv and "--parallel" in argv
    resolved = [argv[i + 1] for i, a in enumerate(argv) if a == "--resolve"]
    assert resolved and all(r.endswith(":10.77.0.10") for r in resolved)


def test_a_page_load_fetches_every_asset_over_several_connections_at_once():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        seed = next(s for s in range(100) if int((a := _page_load(s))[a.index("--parallel-max") + 1]) >= 3)
        argv = _page_load(seed)
        host = next(a for a in argv if a.startswith(("http://", "https://"))).split("/")[2]
        urls = [i for i, a in enumerate(argv) if a.startswith(("http://", "https://"))]
        for i in urls:   # the same load against this loopback server: plain HTTP on its port
            argv[i] = f"http://{host}:{port}/" + argv[i].rsplit("/", 1)[1]
        for i, a in enumerate(argv):
            if a == "--resolve":
                argv[i + 1] = f"{host}:{port}:127.0.0.1"
        _Pages.seen, _Pages.in_flight, _Pages.peak = [], 0, 0
        subprocess.run(argv, check=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(p for _, p in _Pages.seen) == sorted("/" + argv[i].rsplit("/", 1)[1] for i in urls)
    connections = {c for c, _ in _Pages.seen}
    assert len(connections) >= 2, "one connection: fetched one after another, not as a browser does"
    assert _Pages.peak >= 2, "never two requests at once: not in parallel"
