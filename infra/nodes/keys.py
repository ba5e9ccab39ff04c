"""SSH key checks for node registration, on asyncssh (`domain.ports.SshKeyCodec`).

Errors never carry the key or asyncssh's own message about it: an admin pasting a private key
into the wrong field must not find it echoed in a response, a log line or an audit row.
"""

from __future__ import annotations

import re

import asyncssh

from domain.errors import InvalidInput, Problem
from domain.fleet.nodes import NodeErrorCode

_MAX_KEY_CHARS = 64 * 1024  # a 16384-bit RSA key is about 13 KB; refuse anything far larger
# One OpenSSH public key line; asyncssh alone would also take a private key (and derive its
# public half), which must not pass for a host key.
_PUBLIC_LINE = re.compile(r"[A-Za-z0-9@._-]+ [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?")
_KEY_ERRORS = (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError, TypeError)


class AsyncsshKeyCodec:
    def private_key_public_half(self, private_key: str) -> str:
        refused = InvalidInput(Problem(
            NodeErrorCode.INVALID_PRIVATE_KEY,
            "That is not an unencrypted SSH private key (OpenSSH or PEM); remove any passphrase "
            "first.", "privateKey",
        ))  # fmt: skip
        if not private_key.strip() or len(private_key) > _MAX_KEY_CHARS:
            raise refused
        try:
            key = asyncssh.import_private_key(private_key)  # no passphrase: encrypted is refused
            public = key.export_public_key("openssh").decode("ascii")
        except _KEY_ERRORS:
            raise refused from None
        return " ".join(public.split()[:2])  # "type base64", the comment dropped

    def fingerprint(self, public_key: str) -> str:
        refused = InvalidInput(Problem(
            NodeErrorCode.INVALID_HOST_KEY,
            "The host key must be an OpenSSH public key line such as 'ssh-ed25519 AAAA...'.",
            "hostKey",
        ))  # fmt: skip
        if len(public_key) > _MAX_KEY_CHARS or not _PUBLIC_LINE.fullmatch(public_key.strip()):
            raise refused
        try:
            return asyncssh.import_public_key(public_key).get_fingerprint("sha256")
        except _KEY_ERRORS:
            raise refused from None
