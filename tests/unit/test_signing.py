"""Signed activations: only records a trusted key signed, under its own name, are applied."""
from __future__ import annotations

import asyncio
import os

import pytest

from contracts.errors import EdgeloopError
from contracts.policy_model import Policy
from streams.active_policies import PolicyActivation, PolicyRevocation, PolicyWatcher, encode_active
from streams.signing import SignatureRefused, SigningKey, TrustedKeys, sign_record

SHA = "a" * 64


def activation(pid: str, who: str = "alice", block: str = "10.9.0.66") -> PolicyActivation:
    return PolicyActivation(policy_id=pid, policy=Policy(block_sources=[block]), approved_by=who,
                            approved_ms=10**12, expires_ms=10**12 + 3_600_000, code_sha256=SHA, proposal_sha256=SHA,
                            provenance="library:block_source")


@pytest.fixture
def keys(tmp_path):
    alice, bob, eve = SigningKey.generate("alice"), SigningKey.generate("bob"), SigningKey.generate("eve")
    trusted = tmp_path / "trusted"
    for k in (alice, bob):
        _, pub = k.save(tmp_path / "keys")
        trusted.mkdir(exist_ok=True)
        (trusted / pub.name).write_text(pub.read_text())
    return alice, bob, eve, TrustedKeys.load(trusted)


def test_a_signed_record_verifies_and_every_change_or_forgery_is_refused_with_its_reason(keys) -> None:
    alice, bob, eve, trusted = keys
    good = sign_record(activation("p1"), alice)
    assert trusted.verify(good) == "alice"
    cases = {
        "unsigned": activation("p2"),
        "bad_signature": good.model_copy(update={"policy": Policy(block_sources=["10.0.0.0/8"])}),  # widened
        "unknown_signer": sign_record(activation("p3"), eve),
        "wrong_name": sign_record(activation("p4", who="alice"), bob),  # bob signing as alice
    }
    for reason, rec in cases.items():
        with pytest.raises(SignatureRefused) as err:
            trusted.verify(rec)
        assert err.value.reason == reason
    moved = good.model_copy(update={"expires_ms": good.expires_ms + 10**9})
    with pytest.raises(SignatureRefused, match="altered"):
        trusted.verify(moved)
    rev = sign_record(PolicyRevocation(policy_id="p1", revoked_by="bob", revoked_ms=1), bob)
    assert trusted.verify(rev) == "bob"
    with pytest.raises(SignatureRefused, match="not by alice"):  # bob's key, alice's name on the revocation
        trusted.verify(sign_record(PolicyRevocation(policy_id="p1", revoked_by="alice", revoked_ms=1), bob))


def test_key_files_private_0600_never_overwritten_and_an_open_private_key_is_refused(tmp_path) -> None:
    k = SigningKey.generate("carol")
    priv, pub = k.save(tmp_path)
    assert oct(priv.stat().st_mode & 0o777) == "0o600" and "private" not in pub.read_text()
    assert SigningKey.load(priv).key_id == k.key_id
    with pytest.raises(EdgeloopError, match="already exists"):
        k.save(tmp_path)
    os.chmod(priv, 0o644)
    with pytest.raises(EdgeloopError, match="readable by others"):
        SigningKey.load(priv)
    with pytest.raises(EdgeloopError, match="no trusted keys"):
        TrustedKeys.load(tmp_path / "empty")
    with pytest.raises(EdgeloopError, match="key name"):
        SigningKey.generate("bad name; rm -rf")


def test_a_detector_with_trusted_keys_applies_only_signed_records(keys) -> None:
    alice, _, eve, trusted = keys
    refused = []
    w = PolicyWatcher("unused:9092", "policies.active", lambda o: None, trusted=trusted,
                      on_refused=lambda raw, exc: refused.append(exc.reason))
    now = int(__import__("time").time() * 1000)
    fresh = lambda pid: activation(pid).model_copy(update={"approved_ms": now, "expires_ms": now + 3_600_000})  # noqa: E731
    results = [asyncio.run(w.handle(encode_active(r))) for r in
               (fresh("forged"), sign_record(fresh("eve"), eve), sign_record(fresh("ok"), alice))]
    assert results == [False, False, True]
    assert refused == ["unsigned", "unknown_signer"] and [r.policy_id for r in w.state.current()] == ["ok"]
    # an unsigned revocation cannot take a signed policy down either
    assert asyncio.run(w.handle(encode_active(PolicyRevocation(policy_id="ok", revoked_by="x", revoked_ms=now)))) \
        is False
    assert [r.policy_id for r in w.state.current()] == ["ok"]


def test_an_enforcer_with_trusted_keys_refuses_counts_and_raises_for_the_dead_letter_topic(keys) -> None:
    from prometheus_client import CollectorRegistry

    from streams.enforce import Enforcer, Guard
    from streams.metrics import EnforcerMetrics
    from streams.nftables import Nft

    alice, _, _, trusted = keys
    m = EnforcerMetrics(CollectorRegistry())
    enf = Enforcer(Nft(), Guard.build(), metrics=m, trusted=trusted, clock=lambda: 10**12 + 1)
    assert enf.handle(sign_record(activation("ok"), alice)) is True
    with pytest.raises(SignatureRefused):
        enf.handle(activation("forged"))
    assert "forged" in enf.refused and "ok" not in enf.refused
    assert m.registry.get_sample_value("edgeloop_enforcer_policies_refused_total", {"reason": "unsigned"}) == 1


def test_signatures_are_required_by_default(tmp_path, monkeypatch) -> None:
    """No trusted keys anywhere: every record is refused, signed or not, unless the lab switch
    is set; keys in data_dir/trusted-keys are found without EDGELOOP_TRUSTED_KEYS."""
    from streams.settings import load_settings
    from streams.signing import trusted_keys

    for k in ("EDGELOOP_TRUSTED_KEYS", "EDGELOOP_ALLOW_UNSIGNED"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("EDGELOOP_DATA_DIR", str(tmp_path))
    alice = SigningKey.generate("alice")
    unsigned = activation("p-default")
    refusing = trusted_keys(load_settings())
    assert refusing is not None
    for rec, reason in ((unsigned, "unsigned"), (sign_record(unsigned, alice), "unknown_signer")):
        with pytest.raises(SignatureRefused) as e:
            refusing.verify(rec)
        assert e.value.reason == reason
    assert trusted_keys(load_settings(allow_unsigned=True)) is None
    alice.save(tmp_path / "keys")
    (tmp_path / "trusted-keys").mkdir()
    (tmp_path / "trusted-keys" / "alice.pub").write_bytes((tmp_path / "keys" / "alice.pub").read_bytes())
    for s in (load_settings(), load_settings(allow_unsigned=True)):  # keys present: the switch changes nothing
        keys = trusted_keys(s)
        assert keys is not None and keys.verify(sign_record(unsigned, alice)) == "alice"
        with pytest.raises(SignatureRefused):
            keys.verify(unsigned)
