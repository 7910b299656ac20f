"""How every Kafka client of this process connects: PLAINTEXT, TLS, SASL, or SASL over TLS.

One setting for the whole process, read with the rest of the settings (`load_settings`
calls `configure`): kafka-python clients (producers, admin, the sensors and CLIs),
aiokafka clients (the agent, the topic followers) and faust (the edge worker) all take
their options from here, so none of them can be left talking plaintext:

    EDGELOOP_KAFKA_SECURITY_PROTOCOL   PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    EDGELOOP_KAFKA_SASL_MECHANISM      PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    EDGELOOP_KAFKA_SASL_USERNAME / _PASSWORD  (the password is a SecretStr, never logged)
    EDGELOOP_KAFKA_SSL_CAFILE          the CA that signed the brokers' certificates
    EDGELOOP_KAFKA_SSL_CERTFILE / _KEYFILE    a client certificate, where brokers ask for one

    >>> kafka_python_options()         # {} for PLAINTEXT
    >>> KafkaProducer(bootstrap_servers=b, **kafka_python_options())
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from contracts.errors import ConfigError

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: Protocol = "PLAINTEXT"
    mechanism: Mechanism | None = None
    username: str = ""
    password: SecretStr = SecretStr("")
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @classmethod
    def from_settings(cls, s: Any) -> "KafkaSecurity":
        sec = cls(protocol=s.kafka_security_protocol, mechanism=s.kafka_sasl_mechanism,
                  username=s.kafka_sasl_username, password=s.kafka_sasl_password, cafile=s.kafka_ssl_cafile,
                  certfile=s.kafka_ssl_certfile, keyfile=s.kafka_ssl_keyfile)
        sec.check()
        return sec

    def check(self) -> None:
        """A configuration error names the setting (at start, never at the first connection)."""
        key = "EDGELOOP_KAFKA_SECURITY_PROTOCOL"
        if self.sasl and not (self.mechanism and self.username and self.password.get_secret_value()):
            raise ConfigError(key, self.protocol, "needs EDGELOOP_KAFKA_SASL_MECHANISM, _SASL_USERNAME and "
                                                  "_SASL_PASSWORD")
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("EDGELOOP_KAFKA_SSL_CERTFILE", self.certfile, "goes with EDGELOOP_KAFKA_SSL_KEYFILE")
        for name, p in (("CAFILE", self.cafile), ("CERTFILE", self.certfile), ("KEYFILE", self.keyfile)):
            if p is not None and not Path(p).is_file():
                raise ConfigError(f"EDGELOOP_KAFKA_SSL_{name}", str(p), "no such file")
        if (self.cafile or self.certfile) and not self.tls:
            raise ConfigError(key, self.protocol, "EDGELOOP_KAFKA_SSL_* is set but this protocol does not use "
                                                  "TLS (SSL or SASL_SSL)")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying client context (the CA file, else the system's), or None without TLS."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.cafile) if self.cafile else None)
        if self.certfile:
            ctx.load_cert_chain(str(self.certfile), str(self.keyfile))
        return ctx

    def kafka_python(self) -> dict[str, Any]:
        if self.protocol == "PLAINTEXT":
            return {}
        out: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            out["ssl_context"] = self.ssl_context()
        if self.sasl:
            out.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                       sasl_plain_password=self.password.get_secret_value())
        return out

    def aiokafka(self) -> dict[str, Any]:
        # aiokafka takes the same keyword names as kafka-python for all of these.
        return self.kafka_python()

    def faust_credentials(self) -> Any:
        """faust's broker_credentials: SSL or SASL (with the TLS context for SASL_SSL), or None."""
        import faust

        if self.sasl:
            return faust.SASLCredentials(username=self.username, password=self.password.get_secret_value(),
                                         ssl_context=self.ssl_context(), mechanism=self.mechanism)
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None

    def describe(self) -> str:
        parts = [self.protocol]
        if self.sasl:
            parts.append(f"{self.mechanism} as {self.username}")
        if self.tls:
            parts.append(f"CA {self.cafile or 'system'}" + (", client certificate" if self.certfile else ""))
        return ", ".join(parts)


_current = KafkaSecurity()


def configure(sec: KafkaSecurity) -> None:
    """Set how this process's Kafka clients connect (load_settings does it)."""
    global _current
    _current = sec


def current() -> KafkaSecurity:
    return _current


def kafka_python_options() -> dict[str, Any]:
    """Keyword arguments for a kafka-python KafkaProducer/KafkaConsumer/KafkaAdminClient."""
    return _current.kafka_python()


def aiokafka_options() -> dict[str, Any]:
    """Keyword arguments for an AIOKafkaProducer/AIOKafkaConsumer."""
    return _current.aiokafka()
