"""asyncssh plumbing shared by the node adapters: dialing a node (host-key pinning, key or CA
login, errors mapped to the `NodeFailure` family) and running one command with a deadline and
bounded output. `connector.py` opens a connection per bootstrap or probe with it; `operations.py`
keeps one pooled connection per node.

Host keys: a pinned key is the only one accepted. When the node presents another, the key it
presented is caught on that same handshake (asyncssh asks the client object about an unknown
key before refusing it), so `HostKeyMismatch` names the impostor's key without a second
connection that might meet a different machine. Without a pin the key is accepted and reported:
trust on first use, and the service pins it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncssh
from asyncssh.public_key import get_default_public_key_algs

from domain.errors import InvalidInput, NotFound
from domain.fleet.ca import CertificateRequest
from domain.fleet.nodes import ReasonCode
from domain.fleet.remote import (
    HostKeyMismatch,
    KeyLogin,
    NodeAuthRefused,
    NodeCommandFailed,
    NodeFailure,
    NodeTarget,
    NodeUnreachable,
)
from domain.ports import CertificateAuthority

# Long enough to log in with, short enough to be useless if it leaked; sshd checks it at login.
CERT_VALIDITY = timedelta(minutes=2)
STDERR_KEEP = 4096  # bytes of stderr kept: its first and last halves
_MESSAGE_LIMIT = 300
_ELLIPSIS = " ... "
SSH_ERRORS = (asyncssh.DisconnectError, asyncssh.ChannelOpenError, OSError)


def openssh_line(key: asyncssh.SSHKey) -> str:
    """ "type base64", without a comment."""
    return " ".join(key.export_public_key("openssh").decode("ascii").split()[:2])


def clip(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    """One line of printable text at most `limit` long: safe in an event or an admin's view.
    A long text keeps its head (which command failed, the first complaint) and its tail (how
    it ended), with an ellipsis in the middle."""
    flat = " ".join(re.sub(r"[^\x20-\x7e]", " ", text).split())
    if len(flat) <= limit:
        return flat
    keep = limit - len(_ELLIPSIS)
    head = (keep + 1) // 2
    return flat[:head] + _ELLIPSIS + flat[len(flat) - (keep - head) :]


def why(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.DisconnectError):
        return clip(exc.reason) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return clip(exc.strerror)
    return clip(str(exc)) or type(exc).__name__


def lost(where: str, exc: BaseException) -> NodeUnreachable:
    return NodeUnreachable(f"{where}: the SSH session was lost ({why(exc)})")


class _Client(asyncssh.SSHClient):
    """Our side of one connection. It hands over the login credential only when the server
    asks for it, which is after the host key was verified: a CA certificate is issued (and
    audited) only for a node that answered as itself, never for an unreachable one."""

    def __init__(self, credential: Callable[[], Awaitable[list[object]]]) -> None:
        self._credential: Callable[[], Awaitable[list[object]]] | None = credential
        self.presented: asyncssh.SSHKey | None = None  # a host key other than the pinned one
        self.failure: Exception | None = None  # getting the credential failed

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:  # fmt: skip
        # Asked only about a key other than the pinned one: remember it, then refuse it.
        self.presented = key
        return False

    async def public_key_auth_requested(self) -> list[object] | None:  # type: ignore[override]
        credential, self._credential = self._credential, None  # one offer; then give up
        if credential is None:
            return None
        try:
            return await credential()
        except Exception as exc:  # raised again by `connect`, not lost inside asyncssh
            self.failure = exc
            return None


class SshDialer:
    """Opens authenticated connections to nodes; `connect` raises only the `NodeFailure`
    family (and the CA's own outage, `ServiceUnavailable`)."""

    def __init__(self, ca: CertificateAuthority | None, connect_timeout: float = 10) -> None:
        self._ca = ca
        self.connect_timeout = connect_timeout

    async def connect(self, target: NodeTarget, *, keepalive: float = 0
                      ) -> tuple[asyncssh.SSHClientConnection, str]:  # fmt: skip
        """The connection and the host key the node presented ("type base64"). `keepalive`
        (seconds, 0: off) lets a long-lived connection notice a peer that went silent."""
        where = f"{target.host}:{target.port}"
        client = _Client(self._credential(target))
        known_hosts, algs = _host_keys(target.host_key)
        try:
            conn = await asyncssh.connect(
                target.host, target.port, username=target.user, known_hosts=known_hosts,
                server_host_key_algs=algs, client_factory=lambda: client,
                connect_timeout=self.connect_timeout, preferred_auth="publickey",
                keepalive_interval=keepalive, keepalive_count_max=3,
                # Only what `client` offers: no default key files, agent, ~/.ssh/config.
                client_keys=None, agent_path=None, config=None,
            )  # fmt: skip
        except asyncssh.HostKeyNotVerifiable:
            if client.presented is not None:
                raise HostKeyMismatch(openssh_line(client.presented)) from None
            raise NodeUnreachable(f"{where}: the host key it presented is unusable") from None
        except asyncssh.PermissionDenied:
            if client.failure is not None:
                raise client.failure from None
            raise NodeAuthRefused(f"{where} refused the login as {target.user}.") from None
        except TimeoutError:
            raise NodeUnreachable(f"{where}: no SSH session within "
                                  f"{self.connect_timeout:g}s") from None  # fmt: skip
        except SSH_ERRORS as exc:
            raise NodeUnreachable(f"{where}: {why(exc)}") from None
        presented = conn.get_server_host_key()
        assert presented is not None  # public key algorithms only: the key exchange signs
        return conn, openssh_line(presented)

    def _credential(self, target: NodeTarget) -> Callable[[], Awaitable[list[object]]]:
        """What to log in with, checked now (before connecting), produced when asked for."""
        login = target.login
        if isinstance(login, KeyLogin):
            try:
                key = asyncssh.import_private_key(login.private_key)
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError):
                raise NodeAuthRefused("The node's stored private key cannot be read (it must be "
                                      "an unencrypted private key).") from None  # fmt: skip

            async def stored() -> list[object]:
                return [key]

            return stored
        ca = self._ca
        if ca is None:
            raise NodeAuthRefused("This node logs in with CA certificates; no CA is configured.")
        key_id, permit_pty = login.key_id, login.permit_pty

        async def certified() -> list[object]:
            key = asyncssh.generate_private_key("ssh-ed25519")  # for this session only
            try:
                request = CertificateRequest.starting(datetime.now(UTC), [target.user], key_id,
                                                      CERT_VALIDITY, permit_pty=permit_pty)  # fmt: skip
                line = await ca.issue(key.export_public_key().decode("ascii"), request)
            except (InvalidInput, NotFound) as exc:
                raise NodeAuthRefused(f"No certificate to log in with: {clip(str(exc))}") from None
            return [(key, asyncssh.import_certificate(line))]

        return certified


def _host_keys(pinned: str | None) -> tuple[object, list[str]]:
    """known_hosts for asyncssh, and the host key algorithms to offer: plain keys only (a host
    certificate is not what we pin), the pinned key's own algorithms first so a node holding
    several keys presents that one, the others after it so an impostor with another key type
    still completes the key exchange and is reported as a mismatch."""
    algs = [a.decode("ascii") for a in get_default_public_key_algs()]
    if pinned is None:
        return None, algs
    try:
        key = asyncssh.import_public_key(pinned)
    except (asyncssh.KeyImportError, ValueError):
        raise NodeFailure("The pinned host key is not an OpenSSH public key.",
                          ReasonCode.HOST_KEY_MISMATCH) from None  # fmt: skip
    own = [a.decode("ascii") for a in key.sig_algorithms]
    return ([key], [], []), own + [a for a in algs if a not in own]


@dataclass(frozen=True)
class Output:
    status: int | None  # None: no exit status (killed by a signal)
    stdout: str
    stderr: str  # the first and last STDERR_KEEP/2 bytes
    overflow: bool  # stdout passed the limit and was cut off

    def failure(self) -> str:
        if self.overflow:
            return "printed more than any report would"
        said = clip(self.stderr.strip() or self.stdout.strip(), 200)
        status = "killed" if self.status is None else f"exit {self.status}"
        return f"{status}: {said}" if said else status


async def run_command(conn: asyncssh.SSHClientConnection, command: str, *, what: str,
                      limit: int, code: ReasonCode, timeout: float) -> Output:  # fmt: skip
    """Run with a deadline, reading at most `limit` bytes of stdout. A command that overruns
    its deadline fails with `code` (the node answered; a hung tool is the tool's symptom), not
    UNREACHABLE; the connection failing raises the asyncssh/OS error for the caller to map."""
    proc: asyncssh.SSHClientProcess[bytes] | None = None
    try:
        async with asyncio.timeout(timeout):
            proc = await conn.create_process(command, stdin=asyncssh.DEVNULL, encoding=None)
            (stdout, overflow), stderr = await asyncio.gather(
                _read_head(proc, limit), _read_ends(proc.stderr, STDERR_KEEP)
            )
            await proc.wait_closed()
    except TimeoutError:
        if proc is not None:
            proc.kill()  # best effort: sshd passes it on, except to root logins (no privsep)
        raise NodeCommandFailed(f"{what} timed out after {timeout:g}s", code) from None
    finally:
        if proc is not None:
            proc.close()
    status = proc.exit_status if proc.exit_signal is None else None
    return Output(status, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"),
                  overflow)  # fmt: skip


async def _read_head(proc: asyncssh.SSHClientProcess[bytes], limit: int) -> tuple[bytes, bool]:
    """stdout up to `limit` bytes; past it, the command is stopped (its output is no report)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await proc.stdout.read(65536):
        size += len(chunk)
        if size > limit:
            proc.close()
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


async def _read_ends(reader: asyncssh.SSHReader[bytes], keep: int) -> bytes:
    """The first and last `keep // 2` bytes: the head says which command failed first, the
    tail how the script ended; what lies between is dropped (" ... " marks the cut)."""
    half = keep // 2
    head = tail = b""
    cut = False
    while chunk := await reader.read(65536):
        room = half - len(head)  # never negative
        head, chunk = head + chunk[:room], chunk[room:]
        if chunk:
            cut = cut or len(tail) + len(chunk) > half
            tail = (tail + chunk)[-half:]
    return head + (b" ... " if cut else b"") + tail
