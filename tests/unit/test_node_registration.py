"""Registration input: every problem reported at once, each with its field."""

from __future__ import annotations

import pytest

from domain.errors import InvalidInput
from domain.fleet.nodes import NodeAuth, NodeErrorCode
from domain.fleet.registration import NodeSpec

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----"


def spec(**overrides: object) -> NodeSpec:
    values: dict[str, object] = dict(name="gpu-1", host="10.0.0.7", port=22, ssh_user="root",
                                     private_key=KEY, use_ca=False, host_key=HOST_KEY,
                                     region="eu-west", labels={"rack": "r12"})  # fmt: skip
    values.update(overrides)
    return NodeSpec.create(**values)  # type: ignore[arg-type]


def test_a_good_registration_is_normalised() -> None:
    made = spec(host="GPU-1.Example.com", host_key=HOST_KEY + " root@gpu-1")
    assert made.host == "gpu-1.example.com" and made.host_key == HOST_KEY
    assert made.auth is NodeAuth.KEY and made.private_key is not None
    assert "PRIVATE" not in repr(made)  # a traceback never prints the key


def test_every_problem_is_reported_with_its_field() -> None:
    with pytest.raises(InvalidInput) as bad:
        spec(name="GPU 1", host="-bad-", port=0, ssh_user="Root;rm", host_key="ssh-ed25519 !!",
             region="EU", labels={"Bad Key": "x"})  # fmt: skip
    found = {(p.code, p.field) for p in bad.value.problems}
    assert found == {
        (NodeErrorCode.INVALID_NAME, "name"), (NodeErrorCode.INVALID_HOST, "host"),
        (NodeErrorCode.INVALID_PORT, "port"), (NodeErrorCode.INVALID_SSH_USER, "sshUser"),
        (NodeErrorCode.INVALID_HOST_KEY, "hostKey"), (NodeErrorCode.INVALID_REGION, "region"),
        (NodeErrorCode.INVALID_LABELS, "labels"),
    }  # fmt: skip


@pytest.mark.parametrize(("key", "use_ca"), [(None, False), (KEY, True)])
def test_exactly_one_credential(key: str | None, use_ca: bool) -> None:
    with pytest.raises(InvalidInput) as bad:
        spec(private_key=key, use_ca=use_ca)
    assert [p.code for p in bad.value.problems] == [NodeErrorCode.CREDENTIAL_REQUIRED]


def test_ca_login_and_no_host_key_is_trust_on_first_use() -> None:
    made = spec(private_key=None, use_ca=True, host_key=None, host="2001:db8::7")
    assert made.auth is NodeAuth.CA and made.host_key is None and made.private_key is None
