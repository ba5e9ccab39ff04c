"""SSH CA rules: what a certificate request may ask for, and how the trusted key set rotates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import Conflict, NotFound
from domain.fleet.ca import (
    CLOCK_SKEW,
    DEFAULT_VALIDITY,
    MAX_VALIDITY,
    CaErrorCode,
    CaKeys,
    CaKeyStatus,
    CertificateRequest,
    InvalidCertificateRequest,
    SshCaKey,
    ca_keys_of,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _fields(exc: InvalidCertificateRequest) -> list[str | None]:
    assert {p.code for p in exc.problems} == {CaErrorCode.INVALID_CERTIFICATE_REQUEST}
    return [p.field for p in exc.problems]


def test_the_usual_request_is_short_and_backdated_for_clock_skew() -> None:
    request = CertificateRequest.starting(NOW, ["gpuadmin"], "provision:node-7")
    assert request.principals == ("gpuadmin",)
    assert request.valid_after == NOW - CLOCK_SKEW
    assert request.valid_before == NOW + DEFAULT_VALIDITY == NOW + timedelta(minutes=5)
    assert request.force_command is None and request.permit_pty is False


def test_an_hour_is_the_longest_validity() -> None:
    request = CertificateRequest.starting(NOW, ["u1"], "terminal:alloc-12:user-3", MAX_VALIDITY,
                                          permit_pty=True)  # fmt: skip
    assert request.valid_before - NOW == timedelta(hours=1)
    with pytest.raises(InvalidCertificateRequest) as too_long:
        CertificateRequest.starting(NOW, ["u1"], "k", MAX_VALIDITY + timedelta(seconds=1))
    assert _fields(too_long.value) == ["validity"]
    with pytest.raises(InvalidCertificateRequest):
        CertificateRequest.starting(NOW, ["u1"], "k", timedelta(0))
    with pytest.raises(InvalidCertificateRequest) as window:  # built by hand, same rule
        CertificateRequest(("u1",), "k", NOW, NOW + timedelta(hours=2))
    assert _fields(window.value) == ["validity"]


def test_a_reversed_or_naive_window_is_refused() -> None:
    with pytest.raises(InvalidCertificateRequest) as reversed_:
        CertificateRequest(("u1",), "k", NOW, NOW - timedelta(minutes=1))
    assert _fields(reversed_.value) == ["validity"]
    with pytest.raises(InvalidCertificateRequest) as empty:
        CertificateRequest(("u1",), "k", NOW, NOW)
    assert _fields(empty.value) == ["validity"]
    with pytest.raises(InvalidCertificateRequest) as naive:
        CertificateRequest(("u1",), "k", datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 5))
    assert _fields(naive.value) == ["validity"]


@pytest.mark.parametrize("principals", [(), ("",), ("root user",), ("Bad",), ("a" * 33,),
                                        ("u1", "u1"), ("-rf",)])  # fmt: skip
def test_principals_are_linux_user_names(principals: tuple[str, ...]) -> None:
    with pytest.raises(InvalidCertificateRequest) as exc:
        CertificateRequest(principals, "k", NOW, NOW + DEFAULT_VALIDITY)
    assert set(_fields(exc.value)) == {"principals"}


@pytest.mark.parametrize("key_id", ["", " provision", "provision node", "x" * 129, "a\nb"])
def test_key_ids_are_short_and_printable(key_id: str) -> None:
    with pytest.raises(InvalidCertificateRequest) as exc:
        CertificateRequest(("u1",), key_id, NOW, NOW + DEFAULT_VALIDITY)
    assert _fields(exc.value) == ["keyId"]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidCertificateRequest) as exc:
        CertificateRequest((), "", NOW, NOW - timedelta(seconds=1), force_command=" ")
    assert _fields(exc.value) == ["principals", "keyId", "validity", "forceCommand"]


def test_rotation_keeps_the_old_key_trusted() -> None:
    keys = CaKeys("ssh-ed25519 A")
    assert keys.trusted_keys() == ("ssh-ed25519 A",)
    rotated = keys.rotate("ssh-ed25519 B")
    assert rotated.current == "ssh-ed25519 B"
    assert rotated.trusted_keys() == ("ssh-ed25519 B", "ssh-ed25519 A")
    again = rotated.rotate("ssh-ed25519 C")
    assert again.trusted_keys() == ("ssh-ed25519 C", "ssh-ed25519 B", "ssh-ed25519 A")
    with pytest.raises(ValueError, match="already trusted"):
        again.rotate("ssh-ed25519 A")


def test_retiring_waits_for_every_node_and_never_takes_the_current_key() -> None:
    keys = CaKeys("ssh-ed25519 A").rotate("ssh-ed25519 B")
    with pytest.raises(Conflict) as pending:
        keys.retire("ssh-ed25519 A", lagging=[f"gpu-{i}" for i in range(7)])
    assert pending.value.problems[0].code == CaErrorCode.CA_NODES_NOT_UPDATED
    assert "gpu-0, gpu-1, gpu-2, gpu-3, gpu-4 and 2 more" in pending.value.problems[0].message
    with pytest.raises(Conflict) as current:
        keys.retire("ssh-ed25519 B", lagging=[])
    assert current.value.problems[0].code == CaErrorCode.CA_KEY_CURRENT
    with pytest.raises(NotFound) as unknown:
        keys.retire("ssh-ed25519 Z", lagging=[])
    assert unknown.value.problems[0].code == CaErrorCode.CA_KEY_NOT_FOUND
    assert keys.retire("ssh-ed25519 A", lagging=[]) == CaKeys("ssh-ed25519 B")


def _stored(key_id: int, public_key: str, status: CaKeyStatus) -> SshCaKey:
    retired_at = NOW if status is CaKeyStatus.RETIRED else None
    return SshCaKey(key_id, key_id, public_key, status, NOW, retired_at)


def test_the_trusted_set_of_stored_keys_leaves_out_retired_ones() -> None:
    stored = [_stored(3, "C", CaKeyStatus.CURRENT), _stored(2, "B", CaKeyStatus.PREVIOUS),
              _stored(1, "A", CaKeyStatus.RETIRED)]  # fmt: skip
    assert ca_keys_of(stored).trusted_keys() == ("C", "B")
    with pytest.raises(NotFound) as none:
        ca_keys_of([_stored(1, "A", CaKeyStatus.RETIRED)])
    assert none.value.problems[0].code == CaErrorCode.CA_NOT_FOUND
