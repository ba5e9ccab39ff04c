"""The test GPU node is real: OpenSSH on loopback, a pinned host key, key-only login, and the
stand-in nvidia-smi printing the captured H200 output that the inventory parser reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from infra.nodes.nvidia_smi import QUERY_COMMAND, XML_COMMAND, parse_query_csv, parse_xml
from tests.support.ssh_node import EIGHT_H200, SshNode, running_node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SshNode]:
    with running_node(tmp_path / "node") as started:
        yield started


def _known_hosts(node: SshNode, public_key: str) -> asyncssh.SSHKnownHosts:
    return asyncssh.import_known_hosts(f"[{node.host}]:{node.port} {public_key}\n")


async def _connect(node: SshNode, *, host_key: str | None = None,
                   client_key: Path | None = None) -> asyncssh.SSHClientConnection:  # fmt: skip
    return await asyncssh.connect(
        node.host, node.port, username=node.user,
        client_keys=[str(client_key or node.client_key)],
        known_hosts=_known_hosts(node, host_key or node.host_key_public),
        connect_timeout=10,
    )  # fmt: skip


async def test_inventory_is_read_over_ssh_from_the_stand_in_tool(node: SshNode) -> None:
    async with await _connect(node) as conn:
        csv = await conn.run(QUERY_COMMAND, check=True)
        xml = await conn.run(XML_COMMAND, check=True)
        missing = await conn.run("nvidia-smi --bogus")
    from_csv = parse_query_csv(str(csv.stdout))
    assert [(g.index, g.model, g.memory_mib) for g in from_csv] == [(0, "NVIDIA H200", 143771)]
    assert parse_xml(str(xml.stdout)) == from_csv
    assert missing.exit_status == 2


async def test_a_node_may_lack_the_tool(node: SshNode) -> None:
    node.set_nvidia_smi(None)
    async with await _connect(node) as conn:
        result = await conn.run(QUERY_COMMAND)
    assert result.exit_status == 127  # the shell's "command not found"


async def test_a_wrong_host_key_is_refused(node: SshNode, tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await _connect(node, host_key=other)


async def test_an_unknown_client_key_is_refused(node: SshNode, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    with pytest.raises(asyncssh.PermissionDenied):
        await _connect(node, client_key=stranger)


async def test_an_eight_gpu_node(tmp_path: Path) -> None:
    with running_node(tmp_path / "big", EIGHT_H200) as big:
        async with await _connect(big) as conn:
            result = await conn.run(QUERY_COMMAND, check=True)
    assert [g.index for g in parse_query_csv(str(result.stdout))] == list(range(8))
