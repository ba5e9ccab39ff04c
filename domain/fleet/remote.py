"""What the platform asks of a node over SSH, and the ways that can fail.

The SSH adapter (infra/nodes) implements `NodeConnector` from domain/ports.py; these are the
values crossing that port. Failures are exceptions of `NodeFailure`'s family, each mapped by the
services to a node state and event, never to a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from domain.fleet.nodes import ReasonCode


@dataclass(frozen=True, slots=True)
class KeyLogin:
    private_key: bytes  # opened from its sealed secret just for this session

    def __repr__(self) -> str:
        return "KeyLogin(<private key>)"


@dataclass(frozen=True, slots=True)
class CaLogin:
    """Log in with a fresh key pair and a short-lived certificate from the platform CA."""

    key_id: str  # shown in the node's sshd log and in our audit, e.g. "bootstrap:node-7"
    permit_pty: bool = False  # the certificate allows a terminal (the browser terminal's login)


@dataclass(frozen=True, slots=True)
class NodeTarget:
    node_id: int
    host: str
    port: int
    user: str
    login: KeyLogin | CaLogin
    host_key: str | None  # pinned "type base64"; None: accept and report the one presented


@dataclass(frozen=True, slots=True)
class OsInfo:
    system: str  # `uname -s`
    kernel: str  # `uname -r`
    os_id: str  # /etc/os-release ID
    os_version: str  # VERSION_ID


@dataclass(frozen=True, slots=True)
class NodePrep:
    """What bootstrap makes true on a node; every step is an "ensure", safe to repeat."""

    platform_group: str  # the group every allocation user joins
    gpu_indices: Sequence[int]  # /dev/nvidiaN owned by group <gpu_group_prefix>N, mode 0660
    ca_public_keys: Sequence[str]  # written to the node's TrustedUserCAKeys file
    # The node's lease generation (domain/leases.py): the node refuses a prepare older than
    # the newest it has seen for this node id (FenceRefused), so a superseded check cannot
    # undo a newer one. 0 and 0: a prepare outside the platform's checks (tools, benchmarks).
    fence: int = 0
    node_id: int = 0


@dataclass(frozen=True, slots=True)
class Prepared:
    """What preparing left for the operator to do; nothing of it blocks the node."""

    # The NVIDIA driver option was written (or is not yet in effect): it applies when the
    # driver loads again, so reload the nvidia modules or reboot the node.
    driver_reload_needed: bool = False


class NodeFailure(Exception):
    """Talking to the node failed; `code` says how, the message is safe to show an admin."""

    code: ReasonCode = ReasonCode.COMMAND_FAILED

    def __init__(self, message: str, code: ReasonCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NodeUnreachable(NodeFailure):
    """No TCP connection or SSH handshake (refused, timed out, reset, no route)."""

    code = ReasonCode.UNREACHABLE


class NodeAuthRefused(NodeFailure):
    """The node answered but refused our credential."""

    code = ReasonCode.AUTH_REFUSED


class HostKeyMismatch(NodeFailure):
    """The node presented a host key other than the pinned one: maybe an impostor."""

    code = ReasonCode.HOST_KEY_MISMATCH

    def __init__(self, presented: str) -> None:
        super().__init__(f"The node presented host key {presented}, not the pinned one.")
        self.presented = presented


class NodeCommandFailed(NodeFailure):
    """A command ran and failed, or printed what we cannot read; `code` names which check."""


class FenceRefused(NodeCommandFailed):
    """The node refused a command from a superseded worker: it has seen a newer fencing token
    for the account (or, for a prepare, for the node), or the account was torn down. Not a node fault: nothing
    was changed, and the sender's outcome is void."""
