"""The asyncssh adapter of `NodeOperations`: allocation accounts on nodes, over one pooled
connection per node.

The pool keeps a node's connection while it is in use and `idle_seconds` after, so a burst of
provisioning logs in once (one CA certificate, one sshd handshake) instead of per command. A
connection found closed, or whose target changed (address, login user or pinned host key), is
replaced; one that dies under a command is redialled and the command run once more, which is
safe because every script is an "ensure". A semaphore per node bounds the commands running on
it at once: sshd allows 10 sessions per connection (MaxSessions), and a node's package tools
serialise on /etc/passwd's lock anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncssh

from domain.compute.accounts import AccountSpec, AccountState
from domain.fleet.nodes import ReasonCode
from domain.fleet.remote import FenceRefused, NodeCommandFailed, NodeTarget
from infra.nodes.account_commands import (
    accounts_command,
    check_prefix,
    ensure_account_command,
    parse_accounts,
    remove_account_command,
)
from infra.nodes.commands import FENCE_EXIT
from infra.nodes.layout import GROUP_NAME, NodeLayout
from infra.nodes.ssh import SSH_ERRORS, Output, SshDialer, clip, lost, run_command

MAX_SESSIONS = 10  # OpenSSH's default MaxSessions: channels one connection may have open
_OUTPUT_LIMIT = 64 * 1024  # the account scripts print nothing on success
_LISTING_LIMIT = 4 * 1024 * 1024  # `accounts`: a line per platform user and GPU group
_Key = tuple[str, int, str, str | None]
_FAILED = ReasonCode.COMMAND_FAILED


class _Node:
    """One node's slot in the pool."""

    def __init__(self, limit: int) -> None:
        self.slots = asyncio.Semaphore(limit)
        self.dialing = asyncio.Lock()  # one handshake at a time; the others then share it
        self.conn: asyncssh.SSHClientConnection | None = None
        self.key: _Key | None = None
        self.users = 0  # callers waiting for or holding a slot
        self.idle: asyncio.TimerHandle | None = None


def _key(target: NodeTarget) -> _Key:
    return target.host, target.port, target.user, target.host_key


class SshNodeOperations:
    """`domain.ports.NodeOperations` on asyncssh. `aclose()` closes the pool."""

    def __init__(self, dialer: SshDialer, layout: NodeLayout, platform_group: str,
                 user_prefix: str, per_node_limit: int = 4, idle_seconds: float = 60,
                 command_timeout: float = 120, keepalive_seconds: float = 15) -> None:  # fmt: skip
        if not 1 <= per_node_limit <= MAX_SESSIONS:
            raise ValueError(f"per_node_limit must be 1 to {MAX_SESSIONS} (sshd's MaxSessions)")
        if not GROUP_NAME.fullmatch(platform_group):
            raise ValueError(f"{platform_group!r} is not a Linux group name")
        self._dialer = dialer
        self._layout = layout
        self._platform_group = platform_group
        self._prefix = check_prefix(user_prefix)
        self._limit = per_node_limit
        self._idle_seconds = idle_seconds
        self._timeout = command_timeout
        self._keepalive = keepalive_seconds
        self._nodes: dict[int, _Node] = {}

    async def ensure_account(self, target: NodeTarget, account: AccountSpec, fence: int) -> None:
        command = ensure_account_command(account, fence, prefix=self._prefix,
                                         platform_group=self._platform_group,
                                         layout=self._layout, sudo=_sudo(target))  # fmt: skip
        await self._checked(target, command, f"ensuring account {account.username}")

    async def remove_account(self, target: NodeTarget, username: str, fence: int, *,
                             keep_home: bool) -> None:  # fmt: skip
        command = remove_account_command(username, fence, prefix=self._prefix,
                                         keep_home=keep_home, layout=self._layout,
                                         sudo=_sudo(target))  # fmt: skip
        await self._checked(target, command, f"removing account {username}")

    async def accounts(self, target: NodeTarget) -> Sequence[AccountState]:
        command = accounts_command(self._prefix, self._layout)
        output = await self._checked(target, command, "listing accounts", _LISTING_LIMIT)
        return parse_accounts(output, self._prefix, self._layout)

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        conns = [conn for node in nodes if (conn := _forget(node)) is not None]
        for conn in conns:
            conn.close()
        with contextlib.suppress(TimeoutError):  # a peer gone silent does not hold us up
            async with asyncio.timeout(5):
                await asyncio.gather(*(conn.wait_closed() for conn in conns))

    async def _checked(self, target: NodeTarget, command: str, what: str,
                       limit: int = _OUTPUT_LIMIT) -> str:  # fmt: skip
        node = self._nodes.setdefault(target.node_id, _Node(self._limit))
        node.users += 1
        if node.idle is not None:
            node.idle.cancel()
            node.idle = None
        try:
            async with node.slots:
                output = await self._run(node, target, command, what, limit)
        finally:
            node.users -= 1
            if node.users == 0:
                node.idle = asyncio.get_running_loop().call_later(
                    self._idle_seconds, self._expire, target.node_id, node
                )
        if output.status == FENCE_EXIT and not output.overflow:
            raise FenceRefused(clip(f"{what} refused ({output.failure()})"), _FAILED)
        if output.status != 0 or output.overflow:
            raise NodeCommandFailed(clip(f"{what} failed ({output.failure()})"),
                                    _FAILED)  # fmt: skip
        return output.stdout

    async def _run(self, node: _Node, target: NodeTarget, command: str, what: str,
                   limit: int) -> Output:  # fmt: skip
        where = f"{target.host}:{target.port}"
        for attempt in (1, 2):
            conn, reused = await self._connection(node, target)
            try:
                return await run_command(conn, command, what=what, limit=limit,
                                         code=_FAILED, timeout=self._timeout)  # fmt: skip
            except SSH_ERRORS as exc:
                if node.conn is conn:
                    _forget(node)
                conn.close()
                if not reused or attempt == 2:
                    raise lost(where, exc) from None
                # The pooled connection died while idle: once more, on a fresh one.
        raise AssertionError("unreachable")

    async def _connection(self, node: _Node, target: NodeTarget
                          ) -> tuple[asyncssh.SSHClientConnection, bool]:  # fmt: skip
        """The node's connection, and whether it was made before this call."""
        async with node.dialing:
            conn = node.conn
            if conn is not None and not conn.is_closed() and node.key == _key(target):
                return conn, True
            if conn is not None:
                conn.close()  # the node moved, or its pin changed: not that one any more
            node.conn = None
            conn, _ = await self._dialer.connect(target, keepalive=self._keepalive)
            node.conn, node.key = conn, _key(target)
            return conn, False

    def _expire(self, node_id: int, node: _Node) -> None:
        if node.users:
            return
        if self._nodes.get(node_id) is node:
            del self._nodes[node_id]
        conn = _forget(node)  # also one dialled by a command that outlived `aclose`
        if conn is not None:
            conn.close()


def _forget(node: _Node) -> asyncssh.SSHClientConnection | None:
    if node.idle is not None:
        node.idle.cancel()
        node.idle = None
    conn, node.conn, node.key = node.conn, None, None
    return conn


def _sudo(target: NodeTarget) -> bool:
    return target.user != "root"  # account changes need root; sudo must not prompt
