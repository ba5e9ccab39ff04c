"""The asyncssh adapter of `NodeConnector`: one SSH connection per bootstrap or probe.

Host keys: a pinned key is the only one accepted. When the node presents another, the key it
presented is caught on that same handshake (asyncssh asks the client object about an unknown
key before refusing it), so `HostKeyMismatch` names the impostor's key without a second
connection that might meet a different machine. Without a pin the key is accepted and reported
(`session.host_key`): trust on first use, and the service pins it.

Commands run with a deadline and bounded output. A command that overruns its deadline fails
with the reason code of the check that ran it (NVIDIA_SMI_FAILED, PREPARE_FAILED, else
COMMAND_FAILED), not UNREACHABLE: the node answered, and a hung nvidia-smi is a GPU symptom.
A connection lost mid-session is `NodeUnreachable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncssh
from asyncssh.public_key import get_default_public_key_algs

from domain.errors import InvalidInput, NotFound
from domain.fleet.ca import CertificateRequest
from domain.fleet.inventory import GpuInfo, InventoryError
from domain.fleet.nodes import NodeFacts, ReasonCode
from domain.fleet.remote import (
    HostKeyMismatch,
    KeyLogin,
    NodeAuthRefused,
    NodeCommandFailed,
    NodeFailure,
    NodePrep,
    NodeTarget,
    NodeUnreachable,
    OsInfo,
)
from domain.ports import CertificateAuthority
from infra.nodes.commands import OS_COMMAND, facts_command, parse_facts, parse_os, prepare_command
from infra.nodes.layout import NodeLayout
from infra.nodes.nvidia_smi import (
    MAX_REPORT,
    QUERY_COMMAND,
    XML_COMMAND,
    parse_query_csv,
    parse_xml,
)

# Long enough to log in with, short enough to be useless if it leaked; sshd checks it at login.
CERT_VALIDITY = timedelta(minutes=2)
OUTPUT_LIMIT = 64 * 1024  # os, facts and prepare print a few hundred bytes
_STDERR_TAIL = 4096
_MESSAGE_LIMIT = 300
_SSH_ERRORS = (asyncssh.DisconnectError, asyncssh.ChannelOpenError, OSError)

_R = ReasonCode


def openssh_line(key: asyncssh.SSHKey) -> str:
    """ "type base64", without a comment."""
    return " ".join(key.export_public_key("openssh").decode("ascii").split()[:2])


def _clip(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    """One line of printable text at most `limit` long: safe in an event or an admin's view."""
    flat = " ".join(re.sub(r"[^\x20-\x7e]", " ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _tail(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    flat = _clip(text, 10 * limit)
    return flat if len(flat) <= limit else "..." + flat[-(limit - 3) :]


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.DisconnectError):
        return _clip(exc.reason) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return _clip(exc.strerror)
    return _clip(str(exc)) or type(exc).__name__


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
        except Exception as exc:  # raised again by `_connect`, not lost inside asyncssh
            self.failure = exc
            return None


@dataclass(frozen=True)
class _Output:
    status: int | None  # None: no exit status (killed by a signal)
    stdout: str
    stderr: str  # the last _STDERR_TAIL bytes
    overflow: bool  # stdout passed the limit and was cut off

    def failure(self) -> str:
        if self.overflow:
            return "printed more than any report would"
        said = _tail(self.stderr.strip() or self.stdout.strip(), 200)
        status = "killed" if self.status is None else f"exit {self.status}"
        return f"{status}: {said}" if said else status


class SshNodeConnector:
    def __init__(self, ca: CertificateAuthority | None, layout: NodeLayout,
                 connect_timeout: float = 10, command_timeout: float = 60) -> None:  # fmt: skip
        self._ca = ca
        self._layout = layout
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout

    @asynccontextmanager
    async def session(self, target: NodeTarget) -> AsyncIterator[SshNodeSession]:
        conn, host_key = await self._connect(target)
        try:
            yield SshNodeSession(conn, target, host_key, self._layout, self._command_timeout)
        finally:
            conn.close()
            with contextlib.suppress(TimeoutError):  # a peer gone silent does not hold us up
                async with asyncio.timeout(5):
                    await conn.wait_closed()

    async def _connect(self, target: NodeTarget) -> tuple[asyncssh.SSHClientConnection, str]:
        where = f"{target.host}:{target.port}"
        client = _Client(self._credential(target))
        known_hosts, algs = _host_keys(target.host_key)
        try:
            conn = await asyncssh.connect(
                target.host, target.port, username=target.user, known_hosts=known_hosts,
                server_host_key_algs=algs, client_factory=lambda: client,
                connect_timeout=self._connect_timeout, preferred_auth="publickey",
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
                                  f"{self._connect_timeout:g}s") from None  # fmt: skip
        except _SSH_ERRORS as exc:
            raise NodeUnreachable(f"{where}: {_why(exc)}") from None
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
        key_id = login.key_id

        async def certified() -> list[object]:
            key = asyncssh.generate_private_key("ssh-ed25519")  # for this session only
            try:
                request = CertificateRequest.starting(datetime.now(UTC), [target.user], key_id,
                                                      CERT_VALIDITY)  # fmt: skip
                line = await ca.issue(key.export_public_key().decode("ascii"), request)
            except (InvalidInput, NotFound) as exc:
                raise NodeAuthRefused(f"No certificate to log in with: {_clip(str(exc))}") from None
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


class SshNodeSession:
    """One open connection (`domain.ports.NodeSession`)."""

    def __init__(self, conn: asyncssh.SSHClientConnection, target: NodeTarget, host_key: str,
                 layout: NodeLayout, timeout: float) -> None:  # fmt: skip
        self._conn = conn
        self._where = f"{target.host}:{target.port}"
        self._sudo = target.user != "root"  # prepare needs root; sudo must not prompt
        self._host_key = host_key
        self._layout = layout
        self._timeout = timeout

    @property
    def host_key(self) -> str:
        return self._host_key

    async def os_info(self) -> OsInfo:
        return parse_os(await self._checked(OS_COMMAND, "the OS probe", _R.COMMAND_FAILED))

    async def facts(self, os: OsInfo) -> NodeFacts:
        output = await self._checked(facts_command(self._layout), "the facts probe",
                                     _R.COMMAND_FAILED)  # fmt: skip
        return parse_facts(output, os)

    async def gpus(self) -> list[GpuInfo]:
        query = await self._run(QUERY_COMMAND, "nvidia-smi", MAX_REPORT, _R.NVIDIA_SMI_FAILED)
        if query.status == 127:  # the shell's "command not found"
            raise NodeCommandFailed("nvidia-smi is not installed (or not on the login's PATH).",
                                    _R.NVIDIA_SMI_MISSING)  # fmt: skip
        try:
            if query.status == 0 and not query.overflow:
                return parse_query_csv(query.stdout)
            why_query = query.failure()
        except InventoryError as exc:
            why_query = _clip(str(exc), 200)
        # Some drivers name the query fields differently; the XML report has them all.
        report = await self._run(XML_COMMAND, "nvidia-smi", MAX_REPORT, _R.NVIDIA_SMI_FAILED)
        try:
            if report.status == 0 and not report.overflow:
                return parse_xml(report.stdout)
            why_xml = report.failure()
        except InventoryError as exc:
            why_xml = _clip(str(exc), 200)
        raise NodeCommandFailed(_clip(f"nvidia-smi failed. Query: {why_query}. "
                                      f"XML report: {why_xml}."), _R.NVIDIA_SMI_FAILED)  # fmt: skip

    async def prepare(self, prep: NodePrep) -> None:
        command = prepare_command(prep, self._layout, sudo=self._sudo)
        await self._checked(command, "preparing the node", _R.PREPARE_FAILED)

    async def _checked(self, command: str, what: str, code: ReasonCode) -> str:
        output = await self._run(command, what, OUTPUT_LIMIT, code)
        if output.status != 0 or output.overflow:
            raise NodeCommandFailed(_clip(f"{what} failed ({output.failure()})"), code)
        return output.stdout

    async def _run(self, command: str, what: str, limit: int, code: ReasonCode) -> _Output:
        """Run with the session's deadline, reading at most `limit` bytes of stdout."""
        proc: asyncssh.SSHClientProcess[bytes] | None = None
        try:
            async with asyncio.timeout(self._timeout):
                proc = await self._conn.create_process(command, stdin=asyncssh.DEVNULL,
                                                       encoding=None)  # fmt: skip
                (stdout, overflow), stderr = await asyncio.gather(
                    _read_head(proc, limit), _read_tail(proc.stderr, _STDERR_TAIL)
                )
                await proc.wait_closed()
        except TimeoutError:
            if proc is not None:
                proc.kill()  # best effort: sshd passes it on, except to root logins (no privsep)
            raise NodeCommandFailed(f"{what} timed out after {self._timeout:g}s", code) from None
        except _SSH_ERRORS as exc:
            raise self._lost(exc) from None
        finally:
            if proc is not None:
                proc.close()
        status = proc.exit_status if proc.exit_signal is None else None
        return _Output(status, stdout.decode("utf-8", "replace"),
                       stderr.decode("utf-8", "replace"), overflow)  # fmt: skip

    def _lost(self, exc: BaseException) -> NodeUnreachable:
        return NodeUnreachable(f"{self._where}: the SSH session was lost ({_why(exc)})")


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


async def _read_tail(reader: asyncssh.SSHReader[bytes], keep: int) -> bytes:
    tail = b""
    while chunk := await reader.read(65536):
        tail = (tail + chunk)[-keep:]
    return tail
