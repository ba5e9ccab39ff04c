"""The asyncssh adapter of `NodeConnector`: one SSH connection per bootstrap or probe.

Dialing (host-key pinning, key or CA login, error mapping) lives in `infra/nodes/ssh.py`, shared
with the pooled node operations. Without a pin the presented key is reported
(`session.host_key`): trust on first use, and the service pins it.

Commands run with a deadline and bounded output. A command that overruns its deadline fails
with the reason code of the check that ran it (NVIDIA_SMI_FAILED, PREPARE_FAILED, else
COMMAND_FAILED), not UNREACHABLE: the node answered, and a hung nvidia-smi is a GPU symptom.
A connection lost mid-session is `NodeUnreachable`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncssh

from domain.fleet.inventory import GpuInfo, InventoryError
from domain.fleet.nodes import NodeFacts, ReasonCode
from domain.fleet.remote import (
    FenceRefused,
    NodeCommandFailed,
    NodePrep,
    NodeTarget,
    OsInfo,
    Prepared,
)
from domain.ports import CertificateAuthority
from infra.nodes.commands import (
    DRIVER_RELOAD_NEEDED,
    FENCE_EXIT,
    OS_COMMAND,
    facts_command,
    parse_facts,
    parse_os,
    prepare_command,
    shell,
)
from infra.nodes.isolation import isolation_failure, isolation_problems, isolation_script
from infra.nodes.layout import NodeLayout
from infra.nodes.nvidia_smi import (
    MAX_REPORT,
    QUERY_COMMAND,
    XML_COMMAND,
    parse_query_csv,
    parse_xml,
)
from infra.nodes.ssh import SSH_ERRORS, Output, SshDialer, clip, lost, run_command

OUTPUT_LIMIT = 64 * 1024  # os, facts and prepare print a few hundred bytes

_R = ReasonCode


class SshNodeConnector:
    def __init__(self, ca: CertificateAuthority | None, layout: NodeLayout,
                 connect_timeout: float = 10, command_timeout: float = 60) -> None:  # fmt: skip
        self.dialer = SshDialer(ca, connect_timeout)  # shared with the node operations
        self._layout = layout
        self._command_timeout = command_timeout

    @asynccontextmanager
    async def session(self, target: NodeTarget) -> AsyncIterator[SshNodeSession]:
        conn, host_key = await self.dialer.connect(target)
        try:
            yield SshNodeSession(conn, target, host_key, self._layout, self._command_timeout)
        finally:
            conn.close()
            with contextlib.suppress(TimeoutError):  # a peer gone silent does not hold us up
                async with asyncio.timeout(5):
                    await conn.wait_closed()


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
            why_query = clip(str(exc), 200)
        # Some drivers name the query fields differently; the XML report has them all.
        report = await self._run(XML_COMMAND, "nvidia-smi", MAX_REPORT, _R.NVIDIA_SMI_FAILED)
        try:
            if report.status == 0 and not report.overflow:
                return parse_xml(report.stdout)
            why_xml = report.failure()
        except InventoryError as exc:
            why_xml = clip(str(exc), 200)
        raise NodeCommandFailed(clip(f"nvidia-smi failed. Query: {why_query}. "
                                     f"XML report: {why_xml}."), _R.NVIDIA_SMI_FAILED)  # fmt: skip

    async def prepare(self, prep: NodePrep) -> Prepared:
        command = prepare_command(prep, self._layout, sudo=self._sudo)
        output = await self._run(command, "preparing the node", OUTPUT_LIMIT, _R.PREPARE_FAILED)
        if output.status == FENCE_EXIT and not output.overflow:
            raise FenceRefused(clip(f"preparing the node refused ({output.failure()})"))
        if output.status != 0 or output.overflow:
            raise NodeCommandFailed(
                clip(f"preparing the node failed ({output.failure()})"), _R.PREPARE_FAILED
            )
        return Prepared(driver_reload_needed=DRIVER_RELOAD_NEEDED in output.stdout.splitlines())

    async def check_isolation(self, gpu_indices: Sequence[int]) -> None:
        command = shell(isolation_script(gpu_indices, self._layout), sudo=self._sudo)
        output = await self._checked(command, "the GPU isolation check", _R.COMMAND_FAILED)
        problems = isolation_problems(output, gpu_indices, self._layout)
        if problems:
            raise isolation_failure(problems)

    async def _checked(self, command: str, what: str, code: ReasonCode) -> str:
        output = await self._run(command, what, OUTPUT_LIMIT, code)
        if output.status != 0 or output.overflow:
            raise NodeCommandFailed(clip(f"{what} failed ({output.failure()})"), code)
        return output.stdout

    async def _run(self, command: str, what: str, limit: int, code: ReasonCode) -> Output:
        """Run with the session's deadline, reading at most `limit` bytes of stdout."""
        try:
            return await run_command(self._conn, command, what=what, limit=limit, code=code,
                                     timeout=self._timeout)  # fmt: skip
        except SSH_ERRORS as exc:
            raise lost(self._where, exc) from None
