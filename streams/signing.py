"""Ed25519 signatures on `policies.active` and `models`: who approved an activation, or who
released a model, is who holds the key.

    $ edgeloop keys new alice                       # var/keys/alice.key (0600) and alice.pub
    $ cp var/keys/alice.pub /etc/edgeloop/trusted/  # on every detector and enforcer node
    $ edgeloop policy approve ID --key var/keys/alice.key
    $ edgeloop release BUNDLE --key var/keys/registry.key   # or EDGELOOP_RELEASE_KEY
    EDGELOOP_TRUSTED_KEYS=/etc/edgeloop/trusted edgeloop detect / edgeloop enforce

A key file is JSON: {"name", "key_id", "private"} (0600) or {"name", "key_id", "public"};
`key_id` is the first 16 hex digits of the SHA-256 of the raw public key. A record is
signed over its canonical JSON without the `signer` and `signature` fields, so any change
to it (a policy widened, an expiry moved, the approver renamed) breaks the signature.

With trusted keys configured, a detector and an enforcer apply only activations and
revocations signed by one of them whose `approved_by`/`revoked_by` is that key's name, and a
detector swaps in only model releases whose `released_by` signed them; anything else is
refused with a reason (`unsigned`, `unknown_signer`, `bad_signature`, `wrong_name`),
dead-lettered and counted. Without, they apply unsigned records and say so at start:
signing is opt-in until every approver has a key.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contracts.errors import EdgeloopError, RecordError

log = logging.getLogger("edgeloop.signing")
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class SignatureRefused(RecordError):
    """A record whose signature does not hold; `reason` is a short code (dead letters, metrics)."""


def _raw(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    name: str
    private: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.private.public_key())

    @classmethod
    def generate(cls, name: str) -> "SigningKey":
        if not NAME.match(name):
            raise EdgeloopError(f"a key name is 1-64 letters, digits or _.@-, not {name!r}")
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> "SigningKey":
        try:
            doc = json.loads(Path(path).read_text())
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(doc["private"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EdgeloopError(f"cannot read the signing key {path}: {exc}") from exc
        if Path(path).stat().st_mode & 0o077:
            raise EdgeloopError(f"the signing key {path} is readable by others: chmod 600 it")
        return cls(str(doc["name"]), key)

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write NAME.key (0600) and NAME.pub into `directory`; never overwrites."""
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        directory.mkdir(parents=True, exist_ok=True)
        priv, pub = directory / f"{self.name}.key", directory / f"{self.name}.pub"
        if priv.exists() or pub.exists():
            raise EdgeloopError(f"a key named {self.name!r} already exists in {directory}")
        raw = self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"name": self.name, "key_id": self.key_id, "private": base64.b64encode(raw).decode()}, f)
        pub.write_text(json.dumps({"name": self.name, "key_id": self.key_id,
                                   "public": base64.b64encode(_raw(self.private.public_key())).decode()}))
        return priv, pub

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self.private.sign(payload)).decode()


def canonical(record: Any) -> bytes:
    """The bytes a record's signature covers: its JSON without signer and signature, keys sorted."""
    doc = record.model_dump(mode="json", by_alias=True, exclude={"signer", "signature"})
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_record(record: Any, key: SigningKey) -> Any:
    """The record signed by `key` (pydantic models are frozen: a signed copy)."""
    return record.model_copy(update={"signer": key.key_id, "signature": key.sign(canonical(record))})


class TrustedKeys:
    """The public keys this node accepts, from a directory of *.pub files (none: it accepts
    nothing)."""

    def __init__(self, keys: dict[str, tuple[str, Ed25519PublicKey]]) -> None:
        self.keys = keys

    def describe(self) -> str:
        if not self.keys:
            return "nothing: no trusted keys (EDGELOOP_TRUSTED_KEYS, or data_dir/trusted-keys)"
        return "only records signed by " + ", ".join(sorted(n for n, _ in self.keys.values()))

    @classmethod
    def load(cls, directory: Path) -> "TrustedKeys":
        keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        for p in sorted(Path(directory).glob("*.pub")):
            try:
                doc = json.loads(p.read_text())
                pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(doc["public"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise EdgeloopError(f"cannot read the trusted key {p}: {exc}") from exc
            keys[key_id(pub)] = (str(doc["name"]), pub)
        if not keys:
            raise EdgeloopError(f"no trusted keys (*.pub) in {directory}")
        return cls(keys)

    def verify(self, record: Any) -> str:
        """The signer's name when `record` (an activation, a revocation or a model release) is
        signed by the trusted key of the person it names (approved_by, revoked_by,
        released_by); else SignatureRefused."""
        who, what = _claim(record)
        if not record.signature or not record.signer:
            raise SignatureRefused("unsigned", f"{what}: not signed")
        entry = self.keys.get(record.signer)
        if entry is None:
            raise SignatureRefused("unknown_signer", f"{what}: signed by unknown key {record.signer}")
        name, pub = entry
        try:
            pub.verify(base64.b64decode(record.signature, validate=True), canonical(record))
        except (InvalidSignature, ValueError) as exc:
            raise SignatureRefused("bad_signature", f"{what}: the signature of key {record.signer} "
                                   "does not match the record (altered after signing?)") from exc
        if name != who:
            raise SignatureRefused("wrong_name", f"{what}: signed by {name}, not by {who}")
        return name


def _claim(record: Any) -> tuple[str, str]:
    """(who the record says signed it, what it is, for messages)."""
    for field, ident in (("approved_by", "policy_id"), ("revoked_by", "policy_id"), ("released_by", "version")):
        if hasattr(record, field):
            return str(getattr(record, field)), f"{type(record).__name__} {getattr(record, ident)}"
    raise TypeError(f"{type(record).__name__} names no signer")


def trusted_keys(settings: Any, what: str = "policies.active records") -> TrustedKeys | None:
    """The keys `what` must be signed with: the *.pub files in EDGELOOP_TRUSTED_KEYS, else in
    <data_dir>/trusted-keys.

    Signatures are required by default: with no keys there, the answer is an empty set that
    refuses every record (dead-lettered as unsigned or unknown_signer), and the node keeps
    detecting. None, only with EDGELOOP_ALLOW_UNSIGNED=true and no keys: unsigned records
    apply (a lab)."""
    directory = Path(settings.trusted_keys or Path(settings.data_dir) / "trusted-keys")
    if any(directory.glob("*.pub")):
        keys = TrustedKeys.load(directory)
        log.warning("%s: only those signed by %d trusted keys (%s) are applied", what, len(keys.keys),
                    ", ".join(sorted(n for n, _ in keys.keys.values())))
        return keys
    if settings.allow_unsigned:
        log.warning("no trusted keys and EDGELOOP_ALLOW_UNSIGNED=true: unsigned %s are applied (a lab only)", what)
        return None
    log.error("no trusted keys (no *.pub in %s): every %s is refused until approvers' .pub keys are there "
              "(`edgeloop keys new NAME --trust`); EDGELOOP_ALLOW_UNSIGNED=true applies unsigned ones (a lab only)",
              directory, what)
    return TrustedKeys({})
