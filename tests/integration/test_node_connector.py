"""The asyncssh node adapter against a real OpenSSH sshd on loopback: sessions, host key pinning,
refused logins, nvidia-smi and its fallbacks, node preparation, and CA certificate logins."""

from __future__ import annotations

import grp
import secrets
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.fleet.ca_services import create_ca
from domain.fleet.nodes import ReasonCode
from domain.fleet.remote import (
    CaLogin,
    FenceRefused,
    HostKeyMismatch,
    KeyLogin,
    NodeAuthRefused,
    NodeCommandFailed,
    NodePrep,
    NodeTarget,
    NodeUnreachable,
)
from domain.ports import UnitOfWork
from infra.crypto.envelope import AesGcmCipher
from infra.crypto.local_kms import LocalKms
from infra.nodes.connector import SshNodeConnector
from infra.nodes.layout import NodeLayout
from infra.nodes.nvidia_smi import parse_xml
from infra.nodes.ssh import SshDialer, run_command
from infra.nodes.ssh_ca import AsyncsshCaSigner, SshCertificateAuthority
from tests.support.processes import free_port
from tests.support.ssh_node import EIGHT_H200, ONE_H200, SshNode, running_node

GARBAGE = "this is not a GPU report\n"
SIGNER = AsyncsshCaSigner()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SshNode]:
    with running_node(tmp_path / "node") as started:
        yield started


@pytest.fixture
def groups() -> Iterator[list[str]]:
    """Names for this test's groups, unique so the host's /etc/group never keeps fixed ones;
    whatever prepare made is deleted afterwards."""
    tag = secrets.token_hex(4)
    names = [f"gpcp{tag}", f"gpct{tag}-"]  # the platform group, the GPU group prefix
    yield names
    made = [g.gr_name for g in grp.getgrall() if g.gr_name.startswith((names[0], names[1]))]
    for name in made:
        subprocess.run(["groupdel", name], check=False, capture_output=True)


def _layout(node: SshNode, gpu_group_prefix: str = "gpucloud-gpu") -> NodeLayout:
    (node.root / "dev").mkdir(exist_ok=True)
    (node.root / "udev").mkdir(exist_ok=True)
    return NodeLayout(
        trusted_ca_file=str(node.trusted_ca_file),
        sshd_dropin=None,
        device_dir=str(node.root / "dev"),
        gpu_group_prefix=gpu_group_prefix,
        udev_rules=str(node.root / "udev" / "70-gpucloud-gpu.rules"),
        data_dir=str(node.root),
        nvidia_modprobe=str(node.root / "gpucloud-nvidia.conf"),
    )


def _target(node: SshNode, host_key: str | None = None, *,
            login: KeyLogin | CaLogin | None = None) -> NodeTarget:  # fmt: skip
    login = login or KeyLogin(node.client_key.read_bytes())
    return NodeTarget(7, node.host, node.port, node.user, login, host_key)


def _connector(node: SshNode, command_timeout: float = 60) -> SshNodeConnector:
    return SshNodeConnector(None, _layout(node), command_timeout=command_timeout)


def _other_key(kind: str = "ssh-ed25519") -> str:
    return asyncssh.generate_private_key(kind).export_public_key().decode().strip()


async def test_a_first_contact_reads_the_whole_node(node: SshNode) -> None:
    async with _connector(node).session(_target(node)) as session:
        assert session.host_key == node.host_key_public  # trust on first use: reported
        os = await session.os_info()
        gpus = await session.gpus()
        facts = await session.facts(os)
    assert os.system == "Linux" and os.kernel and os.os_id
    assert [(g.index, g.model, g.memory_mib) for g in gpus] == [(0, "NVIDIA H200", 143771)]
    assert (facts.os_id, facts.os_version, facts.kernel) == (os.os_id, os.os_version, os.kernel)
    assert facts.cpus > 0 and facts.ram_mib > 0
    assert facts.disk_total_mib > 0 and 0 <= facts.disk_free_mib <= facts.disk_total_mib


async def test_an_eight_gpu_node_with_its_key_pinned(tmp_path: Path) -> None:
    with running_node(tmp_path / "big", EIGHT_H200) as big:
        async with _connector(big).session(_target(big, big.host_key_public)) as session:
            assert session.host_key == big.host_key_public
            gpus = await session.gpus()
    assert [g.index for g in gpus] == list(range(8))
    assert {g.model for g in gpus} == {"NVIDIA H200"}


@pytest.mark.parametrize("kind", ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"])
async def test_another_host_key_than_the_pinned_one_is_named(node: SshNode, kind: str) -> None:
    with pytest.raises(HostKeyMismatch) as mismatch:
        async with _connector(node).session(_target(node, _other_key(kind))):
            pytest.fail("a session with an unverified host")
    assert mismatch.value.presented == node.host_key_public
    assert mismatch.value.code is ReasonCode.HOST_KEY_MISMATCH


async def test_an_unknown_client_key_is_refused(node: SshNode) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key()
    with pytest.raises(NodeAuthRefused) as refused:
        async with _connector(node).session(_target(node, login=KeyLogin(stranger))):
            pytest.fail("logged in with a stranger's key")
    assert refused.value.code is ReasonCode.AUTH_REFUSED


async def test_an_unreadable_stored_key_is_refused_without_echoing_it(node: SshNode) -> None:
    key = node.client_key.read_bytes()
    broken = key[:40] + b"tampered" + key[48:]
    with pytest.raises(NodeAuthRefused) as refused:
        async with _connector(node).session(_target(node, login=KeyLogin(broken))):
            pytest.fail("logged in with a broken key")
    assert "tampered" not in str(refused.value) and "PRIVATE KEY" not in str(refused.value)


async def test_nothing_listening_is_unreachable(node: SshNode) -> None:
    port = free_port()
    target = NodeTarget(7, "127.0.0.1", port, node.user, KeyLogin(node.client_key.read_bytes()),
                        None)  # fmt: skip
    with pytest.raises(NodeUnreachable) as unreachable:
        async with _connector(node).session(target):
            pytest.fail("a session with nothing")
    assert f"127.0.0.1:{port}" in str(unreachable.value)
    assert unreachable.value.code is ReasonCode.UNREACHABLE


async def test_a_silent_listener_times_out_as_unreachable(node: SshNode) -> None:
    with socket.socket() as silent:  # accepts TCP (the kernel does) but never speaks SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        target = NodeTarget(7, "127.0.0.1", port, node.user, KeyLogin(node.client_key.read_bytes()),
                            None)  # fmt: skip
        connector = SshNodeConnector(None, _layout(node), connect_timeout=1)
        with pytest.raises(NodeUnreachable) as unreachable:
            async with connector.session(target):
                pytest.fail("a session with a mute peer")
    assert str(unreachable.value) == f"127.0.0.1:{port}: no SSH session within 1s"


async def test_a_node_without_nvidia_smi(node: SshNode) -> None:
    node.set_nvidia_smi(None)
    async with _connector(node).session(_target(node)) as session:
        with pytest.raises(NodeCommandFailed) as failed:
            await session.gpus()
        assert (await session.os_info()).system == "Linux"  # the session is still usable
    assert failed.value.code is ReasonCode.NVIDIA_SMI_MISSING


def _stand_in(query: str, xml: str) -> str:
    """An nvidia-smi running `query` for the CSV query and `xml` for the XML report."""
    return f'#!/bin/sh\ncase "$*" in\n  *--query-gpu=*) {query} ;;\n  *"-q -x"*) {xml} ;;\nesac\n'


async def test_unreadable_csv_falls_back_to_the_xml_report(node: SshNode) -> None:
    node.set_nvidia_smi(_stand_in(f"echo '{GARBAGE.strip()}'", f"cat '{ONE_H200['xml']}'"))
    async with _connector(node).session(_target(node)) as session:
        gpus = await session.gpus()
    assert gpus == parse_xml(ONE_H200["xml"].read_text())
    node.set_nvidia_smi(_stand_in("echo 'Unknown field' >&2; exit 2", f"cat '{ONE_H200['xml']}'"))
    async with _connector(node).session(_target(node)) as session:
        assert await session.gpus() == gpus


@pytest.mark.parametrize(("query", "xml", "said"), [
    ("echo 'garbage'", "echo '<nvidia_smi_log>'", ["expected 13 fields", "not a report"]),
    ("echo 'NVIDIA-SMI has failed because it could not communicate with the driver'; exit 9",
     "echo 'driver gone' >&2; exit 9",
     ["exit 9: NVIDIA-SMI has failed", "exit 9: driver gone"]),
    ("yes", "yes", ["printed more than any report"]),
])  # fmt: skip
async def test_both_reports_unreadable(node: SshNode, query: str, xml: str,
                                       said: list[str]) -> None:  # fmt: skip
    node.set_nvidia_smi(_stand_in(query, xml))
    async with _connector(node).session(_target(node)) as session:
        with pytest.raises(NodeCommandFailed) as failed:
            await session.gpus()
    assert failed.value.code is ReasonCode.NVIDIA_SMI_FAILED
    message = str(failed.value)
    assert all(part in message for part in said), message
    assert "Traceback" not in message and "\n" not in message and len(message) <= 300


async def test_a_hung_nvidia_smi_times_out(node: SshNode) -> None:
    node.set_nvidia_smi(_stand_in("exec sleep 5", "exec sleep 5"))
    async with _connector(node, command_timeout=1).session(_target(node)) as session:
        with pytest.raises(NodeCommandFailed) as failed:
            await session.gpus()
        assert (await session.os_info()).system == "Linux"
    assert failed.value.code is ReasonCode.NVIDIA_SMI_FAILED
    assert "timed out after 1s" in str(failed.value)


def _fake_devices(node: SshNode, count: int) -> list[Path]:
    devices = [node.root / "dev" / f"nvidia{i}" for i in range(count)]
    for device in devices:
        device.parent.mkdir(exist_ok=True)
        device.touch(mode=0o666)
        device.chmod(0o666)  # as the driver leaves them: anyone may open any GPU
    return devices


async def test_prepare_makes_each_gpu_its_own_group_and_trusts_the_ca(
    tmp_path: Path, groups: list[str]
) -> None:
    platform, prefix = groups
    ca_keys = [_other_key(), _other_key()]
    with running_node(tmp_path / "big", EIGHT_H200) as big:
        layout = _layout(big, gpu_group_prefix=prefix)
        devices = _fake_devices(big, 8)
        prep = NodePrep(platform, list(range(8)), ca_keys)
        async with SshNodeConnector(None, layout).session(_target(big)) as session:
            await session.prepare(prep)
            files = (big.trusted_ca_file, Path(str(layout.udev_rules)))
            written = {p: p.stat().st_mtime_ns for p in files}
            await session.prepare(prep)  # ensure steps: a repeat changes nothing
        assert {p: p.stat().st_mtime_ns for p in written} == written

        assert grp.getgrnam(platform)
        for index, device in enumerate(devices):
            info = device.stat()
            assert info.st_gid == grp.getgrnam(f"{prefix}{index}").gr_gid
            assert stat.S_IMODE(info.st_mode) == 0o660
        assert big.trusted_ca_file.read_text() == "".join(f"{k}\n" for k in ca_keys)
        assert stat.S_IMODE(big.trusted_ca_file.stat().st_mode) == 0o644
        rules = Path(str(layout.udev_rules)).read_text()
        assert f'KERNEL=="nvidia7", GROUP="{prefix}7", MODE="0660"' in rules
        assert not list((big.root / "udev").glob("*.rules.*"))  # no temp file left behind


async def test_prepare_names_a_missing_gpu_device(node: SshNode, groups: list[str]) -> None:
    platform, prefix = groups
    _fake_devices(node, 1)
    layout = _layout(node, gpu_group_prefix=prefix)
    async with SshNodeConnector(None, layout).session(_target(node)) as session:
        with pytest.raises(NodeCommandFailed) as failed:
            await session.prepare(NodePrep(platform, [0, 1], []))
    assert failed.value.code is ReasonCode.PREPARE_FAILED
    assert f"GPU device {node.root}/dev/nvidia1 is missing" in str(failed.value)


async def test_a_prepare_older_than_the_node_has_seen_is_refused_and_changes_nothing(
    node: SshNode, groups: list[str]
) -> None:
    # A superseded check (its lease revoked or lapsed) comes late with the CA keys of before a
    # rotation: the node has seen a newer generation and refuses it, keeping the newer trust.
    platform, prefix = groups
    _fake_devices(node, 1)
    layout = _layout(node, gpu_group_prefix=prefix)
    newer, older = [_other_key()], [_other_key()]
    async with SshNodeConnector(None, layout).session(_target(node)) as session:
        await session.prepare(NodePrep(platform, [0], newer, fence=7, node_id=3))
        with pytest.raises(FenceRefused) as refused:
            await session.prepare(NodePrep(platform, [0], older, fence=6, node_id=3))
        await session.prepare(
            NodePrep(platform, [0], newer, fence=7, node_id=3)
        )  # its own again: fine
    assert "fencing token 6 is older than 7" in str(refused.value)
    assert node.trusted_ca_file.read_text() == f"{newer[0]}\n"


Uow = Callable[[], UnitOfWork]


async def _issued(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(
            "SELECT count(*) FROM audit_events WHERE action = 'ssh_ca.certificate_issued'"
        ))).scalar_one())  # fmt: skip


async def test_a_ca_certificate_logs_in(
    tmp_path: Path, uow: Uow, engine: AsyncEngine, groups: list[str]
) -> None:
    kms, cipher = LocalKms.create(tmp_path / "keys.json"), AesGcmCipher()
    await create_ca(uow(), kms, cipher, SIGNER)
    ca = SshCertificateAuthority(uow, kms, cipher, SIGNER)
    trusted = list(await ca.public_keys())
    with running_node(tmp_path / "node", trusted_ca_keys=trusted) as node:
        (node.root / "authorized_keys").write_text("")  # no key login: only the certificate
        layout = _layout(node, gpu_group_prefix=groups[1])
        connector = SshNodeConnector(ca, layout)
        login = CaLogin("bootstrap:node-7")
        async with connector.session(_target(node, node.host_key_public, login=login)) as session:
            assert (await session.os_info()).system == "Linux"
            await session.prepare(NodePrep(groups[0], [], trusted))  # rewrites the same trust
        async with connector.session(_target(node, login=login)) as session:  # still trusted
            assert session.host_key == node.host_key_public
        assert "ID bootstrap:node-7 (serial " in (node.root / "sshd.log").read_text()
        assert await _issued(engine) == 2

        # A certificate is issued only once the node proved its host key: not for an
        # impostor, not for a node that does not answer.
        with pytest.raises(HostKeyMismatch):
            async with connector.session(_target(node, _other_key(), login=login)):
                pytest.fail("a session with an unverified host")
        nowhere = NodeTarget(7, "127.0.0.1", free_port(), node.user, login, None)
        with pytest.raises(NodeUnreachable):
            async with connector.session(nowhere):
                pytest.fail("a session with nothing")
        assert await _issued(engine) == 2

        bad_user = NodeTarget(7, node.host, node.port, "No.Such.User", login, None)
        with pytest.raises(NodeAuthRefused) as no_certificate:
            async with connector.session(bad_user):
                pytest.fail("a certificate for a user name the CA refuses")
        assert "No certificate to log in with" in str(no_certificate.value)
        with pytest.raises(NodeAuthRefused):
            async with SshNodeConnector(None, layout).session(_target(node, login=login)):
                pytest.fail("a CA login without a CA")
        with pytest.raises(NodeAuthRefused):  # the key login is gone
            async with connector.session(_target(node)):
                pytest.fail("logged in with a key no longer authorized")


async def test_a_failing_commands_report_keeps_its_first_and_last_words(node: SshNode) -> None:
    noisy = (
        "echo 'first: useradd: cannot lock /etc/passwd' >&2; "
        "i=0; while [ $i -lt 2000 ]; do echo 'noise noise noise' >&2; i=$((i + 1)); done; "
        "echo 'last: gpucloud: failed while ensuring the account' >&2; exit 3"
    )
    conn, _ = await SshDialer(None).connect(_target(node, node.host_key_public))
    async with conn:
        output = await run_command(
            conn, noisy, what="noisy", limit=1024, code=ReasonCode.COMMAND_FAILED, timeout=30
        )
    assert len(output.stderr) < 5000  # the middle was dropped on the way in
    said = output.failure()
    assert said.startswith("exit 3: first: useradd: cannot lock /etc/passwd")
    assert said.endswith("last: gpucloud: failed while ensuring the account") and " ... " in said
