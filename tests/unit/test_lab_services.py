"""The lab's admin password reaches htpasswd whatever its first character."""
from __future__ import annotations

import subprocess

import pytest

from trafficlab.services import apr1_hash


def _with_salt(password: str, salt: str) -> str:
    return subprocess.run(["openssl", "passwd", "-apr1", "-salt", salt, "-stdin"], input=password + "\n",
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("password", ["-pra49fOoQFij5N5AvQ9NglV", "--help", "plain_token-x"])
def test_a_token_that_starts_with_a_dash_is_hashed_as_a_password(password):
    # token_urlsafe once gave "-pra49…", which openssl took for an option (CI failed in the lab).
    hashed = apr1_hash(password)
    assert hashed.startswith("$apr1$")
    salt = hashed.split("$")[2]
    assert _with_salt(password, salt) == hashed
    assert _with_salt(password + "x", salt) != hashed
