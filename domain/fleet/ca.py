"""The platform's SSH certificate authority, as the domain sees it.

Nodes trust the CA's public key (sshd's `TrustedUserCAKeys`), so the platform logs in with
short-lived user certificates it signs itself, naming the Linux users they are good for, instead
of sharing an admin password or a long-lived key. The private key is stored only sealed (see
`domain/secrets.py`).

Rotation never locks a node out: the new key signs from the moment it is made, the old one
stays trusted ("previous") until the caller says every node trusts the new one, and only then
may it be retired.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from domain.errors import Conflict, InvalidInput, NotFound, Problem

DEFAULT_VALIDITY = timedelta(minutes=5)
MAX_VALIDITY = timedelta(hours=1)
# Certificates start this long before they are asked for, so a node whose clock runs a little
# behind ours still accepts them. It is not counted against MAX_VALIDITY.
CLOCK_SKEW = timedelta(minutes=1)

# A Linux user name as useradd accepts it by default; a principal is nothing else.
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# "provision:node-7", "terminal:alloc-12:user-3": shown in sshd's log and our audit log.
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._@/-]{0,127}")


class CaErrorCode(StrEnum):
    INVALID_CERTIFICATE_REQUEST = "INVALID_CERTIFICATE_REQUEST"
    CA_EXISTS = "CA_EXISTS"
    CA_NOT_FOUND = "CA_NOT_FOUND"
    CA_KEY_NOT_FOUND = "CA_KEY_NOT_FOUND"
    CA_KEY_CURRENT = "CA_KEY_CURRENT"
    CA_NODES_NOT_UPDATED = "CA_NODES_NOT_UPDATED"


class InvalidCertificateRequest(InvalidInput):
    """A certificate request breaks a rule; every problem is listed, each with its field."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)


def _problem(message: str, field_name: str) -> Problem:
    return Problem(CaErrorCode.INVALID_CERTIFICATE_REQUEST, message, field_name)


def ca_not_found() -> NotFound:
    return NotFound(Problem(CaErrorCode.CA_NOT_FOUND, "No SSH CA yet; create it first."))


@dataclass(frozen=True)
class CertificateRequest:
    """What one user certificate allows: logging in as `principals`, from `valid_after` until
    `valid_before`, optionally only to run `force_command`, with a terminal only if `permit_pty`.
    Forwarding (agent, port, X11) and the user's rc file are never allowed.

    Construction validates, so an invalid request cannot exist; `starting` builds the usual one.
    """

    principals: tuple[str, ...]
    key_id: str
    valid_after: datetime
    valid_before: datetime
    force_command: str | None = None
    permit_pty: bool = False

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        if not self.principals:
            problems.append(_problem("Name at least one user to log in as.", "principals"))
        for name in self.principals:
            if not _USER_NAME.fullmatch(name):
                problems.append(_problem(f"{name!r} is not a Linux user name.", "principals"))
        if len(set(self.principals)) != len(self.principals):
            problems.append(_problem("A user is named twice.", "principals"))
        if not _KEY_ID.fullmatch(self.key_id):
            problems.append(_problem("The key id must be 1-128 characters of letters, digits "
                                     "and : . _ @ / -, such as 'provision:node-7'.", "keyId"))  # fmt: skip
        if self.valid_after.tzinfo is None or self.valid_before.tzinfo is None:
            problems.append(_problem("Validity times must carry a time zone.", "validity"))
        elif self.valid_before <= self.valid_after:
            problems.append(_problem("The certificate must end after it starts.", "validity"))
        elif self.valid_before - self.valid_after > MAX_VALIDITY + CLOCK_SKEW:
            problems.append(_problem(f"A certificate may be valid for at most {MAX_VALIDITY}.",
                                     "validity"))  # fmt: skip
        if self.force_command is not None and not self.force_command.strip():
            problems.append(_problem("A forced command may not be blank.", "forceCommand"))
        if problems:
            raise InvalidCertificateRequest(problems)

    @classmethod
    def starting(
        cls, now: datetime, principals: tuple[str, ...] | list[str], key_id: str,
        valid_for: timedelta = DEFAULT_VALIDITY, *, force_command: str | None = None,
        permit_pty: bool = False,
    ) -> CertificateRequest:  # fmt: skip
        """Valid from `now` (less CLOCK_SKEW) for `valid_for`, at most MAX_VALIDITY."""
        if not timedelta(0) < valid_for <= MAX_VALIDITY:
            raise InvalidCertificateRequest(
                [_problem(f"Validity must be more than 0 and at most {MAX_VALIDITY}.", "validity")]
            )
        return cls(tuple(principals), key_id, now - CLOCK_SKEW, now + valid_for,
                   force_command, permit_pty)  # fmt: skip


class CaKeyStatus(StrEnum):
    CURRENT = "current"  # signs new certificates; trusted
    PREVIOUS = "previous"  # signs nothing; still trusted until every node has the current one
    RETIRED = "retired"  # trusted nowhere any more


@dataclass(frozen=True)
class CaKeys:
    """The CA public keys a node must trust: the current one and the previous ones not yet
    retired. Keys are OpenSSH public key lines ("ssh-ed25519 AAAA...")."""

    current: str
    previous: tuple[str, ...] = field(default=())

    def trusted_keys(self) -> tuple[str, ...]:
        return (self.current, *self.previous)

    def rotate(self, new: str) -> CaKeys:
        """`new` signs from now on; the old current key stays trusted as a previous one."""
        if new in self.trusted_keys():
            raise ValueError("the new CA key is already trusted")
        return CaKeys(new, (self.current, *self.previous))

    def retire(self, old: str, *, lagging: Sequence[str]) -> CaKeys:
        """Stop trusting `old`, a previous key. Only once every node trusts the current key
        (`lagging` names those that do not yet): before that, a node that knows only `old`
        would refuse every certificate we issue."""
        if old == self.current:
            raise Conflict(Problem(CaErrorCode.CA_KEY_CURRENT,
                                   "The current CA key cannot be retired; rotate first.", "key"))  # fmt: skip
        if old not in self.previous:
            raise NotFound(Problem(CaErrorCode.CA_KEY_NOT_FOUND,
                                   "That CA key is not a trusted previous key.", "key"))  # fmt: skip
        if lagging:
            named = ", ".join(lagging[:5]) + (f" and {len(lagging) - 5} more"
                                               if len(lagging) > 5 else "")  # fmt: skip
            raise Conflict(Problem(CaErrorCode.CA_NODES_NOT_UPDATED,
                                   f"Not every node trusts the current CA key yet ({named}); "
                                   "retiring the old one now could lock them out. Their next "
                                   "probe updates them; retire or fix unreachable ones.",
                                   "key"))  # fmt: skip
        return CaKeys(self.current, tuple(k for k in self.previous if k != old))


@dataclass(frozen=True)
class SshCaKey:
    """One stored CA key: its public half, and the sealed secret holding the private half."""

    id: int
    secret_id: int
    public_key: str
    status: CaKeyStatus
    created_at: datetime
    retired_at: datetime | None


def ca_keys_of(stored: list[SshCaKey] | tuple[SshCaKey, ...]) -> CaKeys:
    """The trusted set from stored keys (retired ones are ignored)."""
    current = [k.public_key for k in stored if k.status is CaKeyStatus.CURRENT]
    if not current:
        raise ca_not_found()
    previous = tuple(k.public_key for k in stored if k.status is CaKeyStatus.PREVIOUS)
    return CaKeys(current[0], previous)


@dataclass(frozen=True)
class GeneratedCaKey:
    """A fresh CA key pair from the signer. `private_key` is plaintext key material: seal it at
    once and drop it."""

    public_key: str
    private_key: bytes = field(repr=False)
