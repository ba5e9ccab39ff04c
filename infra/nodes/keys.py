"""SSH key checks for node registration and users' public keys, on asyncssh
(`domain.ports.SshKeyCodec`).

Errors never carry the key or asyncssh's own message about it: an admin pasting a private key
into the wrong field must not find it echoed in a response, a log line or an audit row.
"""

from __future__ import annotations

import re

import asyncssh
from cryptography.hazmat.primitives.asymmetric import rsa

from domain.compute.ssh_keys import FIELD, ParsedPublicKey, SshKeyErrorCode
from domain.errors import InvalidInput, Problem
from domain.fleet.nodes import NodeErrorCode

_MAX_KEY_CHARS = 64 * 1024  # a 16384-bit RSA key is about 13 KB; refuse anything far larger
# One OpenSSH public key line; asyncssh alone would also take a private key (and derive its
# public half), which must not pass for a host key.
_PUBLIC_LINE = re.compile(r"[A-Za-z0-9@._-]+ [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?")
# A user's key, once screened by the domain: exactly "type base64", nothing around it.
_TYPE_AND_BLOB = re.compile(r"[A-Za-z0-9@._-]+ [A-Za-z0-9+/]+={0,3}")
# Sizes fixed by the key type; RSA's is read from its modulus.
_FIXED_BITS = {
    "ssh-ed25519": 256,
    "ecdsa-sha2-nistp256": 256,
    "ecdsa-sha2-nistp384": 384,
    "ecdsa-sha2-nistp521": 521,
    "sk-ssh-ed25519@openssh.com": 256,
    "sk-ecdsa-sha2-nistp256@openssh.com": 256,
}
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

    def parse_public_key(self, line: str) -> ParsedPublicKey:
        refused = InvalidInput(Problem(
            SshKeyErrorCode.INVALID_PUBLIC_KEY,
            "That is not a valid OpenSSH public key; paste the whole line of your .pub file.",
            FIELD,
        ))  # fmt: skip
        # The full match keeps private keys out: asyncssh would read one and derive its half.
        if len(line) > _MAX_KEY_CHARS or not _TYPE_AND_BLOB.fullmatch(line):
            raise refused
        try:
            key = asyncssh.import_public_key(line)
            key_type = key.get_algorithm()
            pyca = key.pyca_key
            rsa_bits = pyca.key_size if isinstance(pyca, rsa.RSAPublicKey) else 0
            bits = _FIXED_BITS.get(key_type, rsa_bits)
            canonical = key.export_public_key("openssh").decode("ascii").split()
            fingerprint = key.get_fingerprint("sha256")
        except (*_KEY_ERRORS, AttributeError):
            raise refused from None
        # Exactly what ssh-keygen would write: the type the line names (not every key class
        # checks it) and no bytes beyond the key, so what we store is what the user pasted.
        openssh_line = " ".join(canonical[:2])
        if openssh_line != line or key_type != canonical[0]:
            raise refused
        return ParsedPublicKey(key_type, openssh_line, fingerprint, bits)
