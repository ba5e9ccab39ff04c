"""Checking the SSH keys an admin gives when registering a node: the public half of a private
key, a host key's fingerprint, and refusals that never echo what was pasted."""

from __future__ import annotations

import asyncssh
import pytest

from domain.errors import InvalidInput
from domain.fleet.nodes import NodeErrorCode
from infra.nodes.keys import AsyncsshKeyCodec

CODEC = AsyncsshKeyCodec()

# Throwaway keys made for this test with ssh-keygen -N 'test passphrase'.
ENCRYPTED_OPENSSH = """\
-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABCD41bBXu
00oEEViPA1zKxaAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIA7NglEiFnRcLCA4
4gH/En2kH9M3LO3ihTv4x4ei6ritAAAAkDGRaTSBHnIQF0edhgzRWSv8NyDOsAlqpnoo64
iNLBJ2+C2jIE+JeZgVH1BnZgzr/QpGjumQ7G06HLzJb68yXB9a4b/3japrhFejj4hYEn7g
VTFSzosgGgn4FIwnU3Y1FZG1Fg7oLC0eQ2e7pk2YN1lcFnw3xBFAuQvT6q04UpS3ZgNbep
RWWCA7gByvUHTrDw==
-----END OPENSSH PRIVATE KEY-----
"""
ENCRYPTED_PEM = """\
-----BEGIN EC PRIVATE KEY-----
Proc-Type: 4,ENCRYPTED
DEK-Info: AES-128-CBC,BBE9C225D68D2C048AC52781104BE5F5

Mdv08cYPTjl1RNPkipAo54+oMrT4xMOoIh9RxyaVl31sUuJWFhgGrwRpATus/TiB
3ML5oAo6muFRMVYdFHsTYA6Tpv+NJ3oG8Mr7sP03pzUvjmLtQ7+VtBWgNf86WvN5
yUPIxMLK+sHsEaSwCMApPfMdkxk3kVl5DwLYS7U1Eo8=
-----END EC PRIVATE KEY-----
"""


def _code(exc: InvalidInput) -> tuple[str, str | None]:
    (problem,) = exc.problems
    return problem.code, problem.field


@pytest.mark.parametrize("kind", ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"])
def test_the_public_half_of_a_private_key(kind: str) -> None:
    key = asyncssh.generate_private_key(kind, comment="admin@laptop")
    for private in (key.export_private_key("openssh"), key.export_private_key("pkcs8-pem")):
        public = CODEC.private_key_public_half(private.decode())
        assert public == " ".join(key.export_public_key().decode().split()[:2])
        assert "admin@laptop" not in public


@pytest.mark.parametrize("pasted", [
    ENCRYPTED_OPENSSH, ENCRYPTED_PEM, "", "garbage", ENCRYPTED_OPENSSH[:120],
    asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode(),
    "x" * 200_000,
])  # fmt: skip
def test_what_is_not_an_unencrypted_private_key_is_refused_unechoed(pasted: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        CODEC.private_key_public_half(pasted)
    assert _code(refused.value) == (NodeErrorCode.INVALID_PRIVATE_KEY, "privateKey")
    message = str(refused.value)
    assert (pasted.strip()[:40] not in message) if pasted.strip() else True
    # Nothing of asyncssh's (whose message may quote the input) rides along in a traceback.
    assert refused.value.__cause__ is None
    assert refused.value.__context__ is None or refused.value.__suppress_context__


def test_a_host_key_fingerprint_is_what_ssh_keygen_prints() -> None:
    # The public half of ENCRYPTED_OPENSSH, and what `ssh-keygen -lf` printed for it.
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA7NglEiFnRcLCA44gH/En2kH9M3LO3ihTv4x4ei6rit"
    expected = "SHA256:JTajf//AA5bKBf/JXcFLETcewZELQ8D8BmAxNKeppUU"
    assert CODEC.fingerprint(line) == expected
    assert CODEC.fingerprint(f"  {line} root@node-7\n") == expected


@pytest.mark.parametrize("pasted", [
    "", "ssh-ed25519", "ssh-ed25519 not-base64!", "ssh-ed25519 AAAA",
    asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode(),
    asyncssh.generate_private_key("ssh-ed25519").generate_user_certificate(
        asyncssh.generate_private_key("ssh-ed25519"), "id").export_certificate().decode(),
])  # fmt: skip
def test_what_is_not_a_public_key_line_is_refused(pasted: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        CODEC.fingerprint(pasted)
    assert _code(refused.value) == (NodeErrorCode.INVALID_HOST_KEY, "hostKey")
