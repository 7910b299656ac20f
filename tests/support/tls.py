"""Kafka over TLS for tests and benchmarks: a CA and a broker certificate made here with
`cryptography`, and stunnel (Debian's) accepting TLS in front of the embedded broker, which
advertises only the TLS port so every client connection goes through it.

    with TlsBroker(tmp_dir) as tb:     # tb.bootstrap (TLS), tb.plain (behind it), tb.ca, tb.other_ca
        configure(KafkaSecurity(protocol="SSL", cafile=tb.ca))
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from streams.broker import EmbeddedBroker, free_port


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
              issuer_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A CA certificate (issuer None) or a broker certificate for 127.0.0.1 and localhost."""
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject))
         .issuer_name(issuer.subject if issuer else _name(subject)).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1)))
    if issuer is None:
        b = (b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True))
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_ca(d: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert(name, key, None, key)
    path = d / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def stunnel_binary() -> str | None:
    return shutil.which("stunnel4") or shutil.which("stunnel")


class TlsBroker:
    """The embedded broker behind a stunnel TLS front; a context manager."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.broker: EmbeddedBroker | None = None
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "TlsBroker":
        stunnel = stunnel_binary()
        if stunnel is None:
            raise RuntimeError("stunnel is not installed: run `make deploy-tools` (scripts/setup-deploy-tools.sh)")
        d = self.dir
        ca_key, ca, self.ca = make_ca(d, "edgeloop-test-ca")
        _, _, self.other_ca = make_ca(d, "some-other-ca")
        key = ec.generate_private_key(ec.SECP256R1())
        (d / "broker.pem").write_bytes(make_cert("broker", key, ca, ca_key).public_bytes(serialization.Encoding.PEM))
        (d / "broker.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
        back, front = free_port(), free_port()
        self.bootstrap, self.plain = f"127.0.0.1:{front}", f"127.0.0.1:{back}"
        self.broker = EmbeddedBroker(back, log_path=d / "tansu.log", advertised_port=front).start()
        conf = d / "stunnel.conf"
        conf.write_text(f"foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{front}\n"
                        f"connect = 127.0.0.1:{back}\ncert = {d / 'broker.pem'}\nkey = {d / 'broker.key'}\n")
        with open(d / "stunnel.log", "wb") as log:
            self.proc = subprocess.Popen([stunnel, str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.broker is not None:
            self.broker.stop()
