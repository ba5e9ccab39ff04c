"""An interactive shell with a PTY on a node, for the browser terminal.

It logs in through the fleet's `SshDialer` (host key pinned) as the allocation's own Linux user,
with a fresh key pair and a short-lived certificate from the platform CA that names only that
user and permits a PTY: no admin account, no `sudo -iu`, no stored key.
"""

from __future__ import annotations

import contextlib

import asyncssh

from domain.fleet.remote import NodeTarget
from infra.nodes.ssh import SSH_ERRORS, SshDialer, lost

TERM = "xterm-256color"
_READ = 64 * 1024
_KEEPALIVE = 30.0  # seconds: a node that went silent ends the terminal within ~3 of these


class TerminalSession:
    """One PTY shell: bytes in, bytes out, a size that can change."""

    def __init__(self, conn: asyncssh.SSHClientConnection,
                 process: asyncssh.SSHClientProcess[bytes]) -> None:  # fmt: skip
        self._conn = conn
        self._process = process

    async def read(self) -> bytes:
        """The next output (at most 64 KiB); b"" when the shell has ended or the session was
        lost."""
        try:
            return await self._process.stdout.read(_READ)
        except SSH_ERRORS:
            return b""

    async def write(self, data: bytes) -> None:
        """Send input, waiting while SSH's window is full: a client typing (or pasting) faster
        than the shell reads is slowed down instead of filling this process's memory."""
        self._process.stdin.write(data)
        with contextlib.suppress(*SSH_ERRORS):  # a lost session ends through `read`
            await self._process.stdin.drain()

    def resize(self, cols: int, rows: int) -> None:
        self._process.change_terminal_size(cols, rows)

    async def close(self) -> None:
        self._process.close()
        self._conn.close()
        with contextlib.suppress(*SSH_ERRORS):
            await self._conn.wait_closed()


async def open_terminal(dialer: SshDialer, target: NodeTarget, cols: int,
                        rows: int) -> TerminalSession:  # fmt: skip
    """A login shell as `target.user` with a PTY of `cols` x `rows`; raises the `NodeFailure`
    family when the node cannot be reached or refuses the login."""
    conn, _ = await dialer.connect(target, keepalive=_KEEPALIVE)
    try:
        process = await conn.create_process(term_type=TERM, term_size=(cols, rows),
                                            encoding=None)  # fmt: skip
    except SSH_ERRORS as exc:
        conn.close()
        raise lost(f"{target.host}:{target.port}", exc) from None
    return TerminalSession(conn, process)
