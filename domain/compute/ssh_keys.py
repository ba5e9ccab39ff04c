"""Users' SSH public keys: the entity and the rules a pasted key must pass.

A key is stored as "type base64" only. The comment is dropped and authorized_keys options
(`command=`, `from=`) are refused, so nothing a user typed besides the key itself ever reaches
a node's authorized_keys.

Refusals never quote the input: someone who pastes a private key by mistake must not find it
echoed in a response, a log line or an audit row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.errors import InvalidInput, Problem, ProblemCollector

MAX_NAME = 64
MAX_KEYS = 50  # per user; a person with more keys than this is better served by a CA
MAX_PUBLIC_KEY_CHARS = 16 * 1024  # a 16384-bit RSA line is about 2.8 KB, comment aside
# RSA below 2048 bits is refused. 2048 is NIST's floor (SP 800-57, acceptable through 2030) and
# was ssh-keygen's default until 2019, so many people's only key is one; 3072 would turn them
# away for a margin that matters less than their using a key at all. 16384 is OpenSSH's ceiling.
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384

# DSA (ssh-dss) is gone from OpenSSH; certificates are issued by our own CA, not uploaded.
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_CERTIFICATE_SUFFIX = "-cert-v01@openssh.com"
_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,63}$")
_BLOB = re.compile(r"^[A-Za-z0-9+/]+={0,3}$")
# What private keys look like when pasted: PEM/OpenSSH armour, PuTTY files, and the body of an
# OpenSSH private key without its armour (base64 of "openssh-key-v1"). Matched exactly, so a
# comment that merely mentions a private key does not trip them.
_PRIVATE_MARKERS = ("PRIVATE KEY-----", "PuTTY-User-Key-File-", "b3BlbnNzaC1rZXktdjE")
FIELD = "publicKey"


class SshKeyErrorCode(StrEnum):
    INVALID_PUBLIC_KEY = "INVALID_PUBLIC_KEY"
    PRIVATE_KEY_PASTED = "PRIVATE_KEY_PASTED"
    UNSUPPORTED_KEY_TYPE = "UNSUPPORTED_KEY_TYPE"
    UNSUPPORTED_KEY_SIZE = "UNSUPPORTED_KEY_SIZE"
    INVALID_NAME = "INVALID_NAME"
    DUPLICATE_KEY = "DUPLICATE_KEY"
    NAME_TAKEN = "NAME_TAKEN"
    TOO_MANY_KEYS = "TOO_MANY_KEYS"
    NOT_FOUND = "NOT_FOUND"
    INVALID_ID = "INVALID_ID"


@dataclass(frozen=True, slots=True)
class ParsedPublicKey:
    """What the codec read from a key line: its type, the canonical "type base64" line, the
    SHA-256 fingerprint as ssh-keygen prints it, and its size in bits."""

    key_type: str
    openssh_line: str
    fingerprint: str
    bits: int


@dataclass(frozen=True, slots=True)
class NewSshKey:
    """A validated key to store."""

    name: str
    public_key: str
    fingerprint: str
    key_type: str
    bits: int


@dataclass(frozen=True, slots=True)
class SshKey:
    id: int
    user_id: int
    name: str
    public_key: str  # "type base64", no comment
    fingerprint: str  # "SHA256:..."
    key_type: str
    bits: int
    created_at: datetime

    def audit_view(self) -> dict[str, object]:
        # The fingerprint names the key; the key itself adds nothing to the record.
        return {"name": self.name, "fingerprint": self.fingerprint, "keyType": self.key_type,
                "bits": self.bits, "userId": self.user_id}  # fmt: skip


def _refuse(code: SshKeyErrorCode, message: str) -> InvalidInput:
    return InvalidInput(Problem(code, message, FIELD))


_PASTE_ONE = (
    "Paste one OpenSSH public key line, such as the contents of ~/.ssh/id_ed25519.pub "
    "('ssh-ed25519 AAAA... comment')."
)


def screen_public_key(text: str) -> str:
    """The "type base64" part of a pasted key line, after the checks that need no parsing;
    raises `InvalidInput` (field publicKey). The codec parses what this returns."""
    pasted = text.strip()
    if any(marker in pasted for marker in _PRIVATE_MARKERS):  # first, however long it is
        raise _refuse(
            SshKeyErrorCode.PRIVATE_KEY_PASTED,
            "That is a private key, which must never leave your machine; it was not stored. "
            "Paste the public key instead (the .pub file, e.g. ~/.ssh/id_ed25519.pub).",
        )
    if not pasted or len(text) > MAX_PUBLIC_KEY_CHARS:
        raise _refuse(SshKeyErrorCode.INVALID_PUBLIC_KEY, _PASTE_ONE)
    if "\n" in pasted or "\r" in pasted:
        raise _refuse(
            SshKeyErrorCode.INVALID_PUBLIC_KEY,
            "Paste exactly one key, on one line; add each key separately.",
        )
    parts = pasted.split(maxsplit=2)
    if len(parts) < 2 or not _TYPE.match(parts[0]) or not _BLOB.match(parts[1]):
        raise _refuse(SshKeyErrorCode.INVALID_PUBLIC_KEY, _PASTE_ONE)
    key_type = parts[0]
    if key_type.endswith(_CERTIFICATE_SUFFIX):
        raise _refuse(
            SshKeyErrorCode.UNSUPPORTED_KEY_TYPE,
            "That is an SSH certificate; add the public key it was issued for instead.",
        )
    if key_type not in KEY_TYPES:
        raise _refuse(
            SshKeyErrorCode.UNSUPPORTED_KEY_TYPE,
            f"Unsupported key type; use one of: {', '.join(KEY_TYPES)}.",
        )
    return f"{key_type} {parts[1]}"


def check_parsed(parsed: ParsedPublicKey, declared_type: str) -> None:
    """The rules that need the parsed key: its type is the declared one, and RSA is big enough."""
    if parsed.key_type != declared_type or parsed.key_type not in KEY_TYPES:
        raise _refuse(SshKeyErrorCode.INVALID_PUBLIC_KEY, _PASTE_ONE)
    if parsed.key_type == "ssh-rsa" and not MIN_RSA_BITS <= parsed.bits <= MAX_RSA_BITS:
        raise _refuse(
            SshKeyErrorCode.UNSUPPORTED_KEY_SIZE,
            f"RSA keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits; this one has "
            f"{parsed.bits}. Better still, make an Ed25519 key: ssh-keygen -t ed25519.",
        )


def check_name(name: str, problems: ProblemCollector) -> str:
    clean = name.strip()
    if not clean or len(clean) > MAX_NAME or not clean.isprintable():
        problems.add(
            SshKeyErrorCode.INVALID_NAME,
            f"Give the key a name of 1 to {MAX_NAME} printable characters.",
            "name",
        )
    return clean


def duplicate_key() -> Problem:
    return Problem(SshKeyErrorCode.DUPLICATE_KEY, "You have already added this key.", FIELD)


def name_taken() -> Problem:
    return Problem(SshKeyErrorCode.NAME_TAKEN, "You already have a key with this name.", "name")


def clashes(existing: Sequence[SshKey], new: NewSshKey) -> list[Problem]:
    """What stops `new` joining its owner's `existing` keys: the same key twice, the same name
    twice (case aside), or one key too many. Empty when it may be added."""
    found = []
    if any(key.fingerprint == new.fingerprint for key in existing):
        found.append(duplicate_key())
    if any(key.name.lower() == new.name.lower() for key in existing):
        found.append(name_taken())
    if not found and len(existing) >= MAX_KEYS:
        found.append(Problem(SshKeyErrorCode.TOO_MANY_KEYS,
                             f"You have {MAX_KEYS} keys, the most allowed; remove one first.",
                             FIELD))  # fmt: skip
    return found
