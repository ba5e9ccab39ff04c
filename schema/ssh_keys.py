"""SSH key types: a user's public keys, the input to add one, and the area's error.

Only public keys exist here: no type has a field for a private key, and the platform never
hands one out (a pasted private key is refused, unstored and unechoed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from domain.compute.ssh_keys import SshKey as DomainSshKey
from domain.compute.ssh_keys import SshKeyErrorCode as DomainSshKeyErrorCode
from schema.errors import Error
from schema.relay import Connection, Node, to_global_id

SshKeyErrorCode = strawberry.enum(
    DomainSshKeyErrorCode, description="Why an SSH key request was refused."
)


@strawberry.type(description="An SSH public key for logging in to your machines.")
class SshKey(Node):
    name: str
    fingerprint: str = strawberry.field(description="SHA-256, as `ssh-keygen -l` prints it.")
    key_type: str = strawberry.field(description="e.g. ssh-ed25519, ecdsa-sha2-nistp256.")
    bits: int
    public_key: str = strawberry.field(description='The key as "type base64", without its comment.')
    created_at: datetime

    @classmethod
    def from_domain(cls, key: DomainSshKey) -> SshKey:
        return cls(id=to_global_id("SshKey", key.id), name=key.name, fingerprint=key.fingerprint,
                   key_type=key.key_type, bits=key.bits, public_key=key.public_key,
                   created_at=key.created_at)  # fmt: skip


SshKeyConnection = Connection[SshKey]


@strawberry.type(description="One problem with an SSH key request.")
class SshKeyProblem:
    code: SshKeyErrorCode  # type: ignore[valid-type]
    message: str
    field: str | None


@strawberry.type(description="An SSH key request was refused; `problems` lists every reason.")
class SshKeyError(Error):
    code: SshKeyErrorCode  # type: ignore[valid-type]
    problems: list[SshKeyProblem]


@strawberry.input
class AddSshKeyInput:
    name: str = strawberry.field(description="1 to 64 characters, unique among your keys.")
    public_key: str = strawberry.field(
        description="One OpenSSH public key line, as in ~/.ssh/id_ed25519.pub. Ed25519, ECDSA, "
        "FIDO (sk-) and RSA of at least 2048 bits are accepted."
    )


@strawberry.type
class SshKeyPayload:
    ssh_key: SshKey


SshKeyResult = Annotated[SshKeyPayload | SshKeyError, strawberry.union("SshKeyResult")]
