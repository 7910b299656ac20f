"""Kafka security settings: checked at start, and the same options reach kafka-python,
aiokafka and faust (the TLS path runs for real in tests/integration/test_kafka_tls.py)."""
from __future__ import annotations

import inspect
import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr

from contracts.errors import ConfigError
from streams.kafka_security import KafkaSecurity, configure, current, kafka_python_options
from streams.settings import load_settings

SASL_SSL = dict(protocol="SASL_SSL", mechanism="SCRAM-SHA-512", username="edge-7", password=SecretStr("pa55-word"))


@pytest.fixture(autouse=True)
def _restore():
    before = current()
    yield
    configure(before)


def _ca(tmp_path: Path) -> Path:
    """A real CA certificate, so the SSL context loads it."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    p = tmp_path / "ca.pem"
    p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return p


def test_plaintext_adds_nothing_to_any_client():
    sec = KafkaSecurity()
    assert sec.kafka_python() == {} and sec.aiokafka() == {} and sec.faust_credentials() is None


def test_sasl_over_tls_options_carry_mechanism_user_password_and_a_verifying_context(tmp_path):
    sec = KafkaSecurity(**SASL_SSL, cafile=_ca(tmp_path))
    sec.check()
    opts = sec.kafka_python()
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "edge-7" and opts["sasl_plain_password"] == "pa55-word"
    ctx = opts["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert "pa55-word" not in sec.describe() and "pa55-word" not in repr(sec)


def test_every_option_is_a_keyword_the_clients_take(tmp_path):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    opts = KafkaSecurity(**SASL_SSL, cafile=_ca(tmp_path)).kafka_python()
    for cls in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(opts) <= set(cls.DEFAULT_CONFIG), cls
    for cls in (AIOKafkaProducer, AIOKafkaConsumer):
        assert set(opts) <= set(inspect.signature(cls).parameters), cls


def test_faust_gets_the_same_settings_as_the_other_clients(tmp_path):
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    for sec in (KafkaSecurity(**SASL_SSL, cafile=_ca(tmp_path)), KafkaSecurity(protocol="SSL", cafile=_ca(tmp_path)),
                KafkaSecurity(protocol="SASL_PLAINTEXT", mechanism="PLAIN", username="u", password=SecretStr("p"))):
        ours = sec.aiokafka()
        theirs = credentials_to_aiokafka_auth(sec.faust_credentials())
        assert {k: v for k, v in theirs.items() if v is not None and k != "ssl_context"} == \
            {k: v for k, v in ours.items() if k != "ssl_context"}
        assert (theirs.get("ssl_context") is not None) == sec.tls


@pytest.mark.parametrize("kw,key,why", [
    (dict(protocol="SASL_SSL"), "EDGELOOP_KAFKA_SECURITY_PROTOCOL", "SASL_MECHANISM"),
    (dict(protocol="SASL_PLAINTEXT", mechanism="PLAIN", username="u"), "EDGELOOP_KAFKA_SECURITY_PROTOCOL",
     "_SASL_PASSWORD"),
    (dict(protocol="SSL", certfile=Path(__file__)), "EDGELOOP_KAFKA_SSL_CERTFILE", "KEYFILE"),
    (dict(protocol="SSL", cafile=Path("/nonexistent/ca.pem")), "EDGELOOP_KAFKA_SSL_CAFILE", "no such file"),
    (dict(protocol="PLAINTEXT", cafile=Path(__file__)), "EDGELOOP_KAFKA_SECURITY_PROTOCOL", "does not use TLS"),
])
def test_a_bad_combination_names_the_setting(kw, key, why):
    with pytest.raises(ConfigError) as e:
        KafkaSecurity(**kw).check()
    assert e.value.key == key and why in str(e.value)


def test_load_settings_sets_how_the_process_connects(tmp_path, monkeypatch):
    ca = _ca(tmp_path)
    monkeypatch.setenv("EDGELOOP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("EDGELOOP_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("EDGELOOP_KAFKA_SASL_USERNAME", "agent")
    monkeypatch.setenv("EDGELOOP_KAFKA_SASL_PASSWORD", "from-env")
    monkeypatch.setenv("EDGELOOP_KAFKA_SSL_CAFILE", str(ca))
    s = load_settings()
    assert "from-env" not in repr(s)
    opts = kafka_python_options()
    assert opts["sasl_mechanism"] == "SCRAM-SHA-256" and opts["sasl_plain_password"] == "from-env"
    monkeypatch.setenv("EDGELOOP_KAFKA_SASL_PASSWORD", "")
    with pytest.raises(ConfigError):
        load_settings()
