"""Bootstrap's proofs against a real sshd that no init manages (a host without systemd): sshd
is reloaded by SIGHUP to its PidFile, a failed reload is tried again, the node is READY only
after a fresh platform certificate logs in, and every probe checks GPU isolation."""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from domain.fleet.checks import check_node
from domain.fleet.kit import FleetKit
from domain.fleet.node_services import change_node
from domain.fleet.nodes import Node, NodeState, NodeTrigger, ReasonCode
from domain.identity.principal import SYSTEM
from domain.pagination import PageRequest
from domain.ports import UnitOfWork
from infra.crypto.local_kms import LocalKms
from infra.nodes.commands import reload_pending_marker
from tests.support.fleet import (
    META,
    eight_gpu_node,
    fleet_settings,
    group_prefix,
    kit_for,
    register,
)
from tests.support.ssh_node import SshNode

Uow = Callable[[], UnitOfWork]


@pytest.fixture
def prefix() -> Iterator[str]:
    with group_prefix() as made:
        yield made


@pytest.fixture
def node() -> Iterator[SshNode]:
    with eight_gpu_node() as started:
        yield started


@pytest.fixture
def kit(uow: Uow, tmp_path: Path, node: SshNode, prefix: str) -> FleetKit:
    kms = LocalKms.create(tmp_path / "keys.json")
    return kit_for(uow, kms, fleet_settings(node.root, prefix))


def _dropin(node: SshNode) -> Path:
    return node.sshd_dropin_dir / "60-gpucloud.conf"


async def _events(kit: FleetKit, node_id: int) -> list[tuple[str, str | None, str | None, str]]:
    uow = kit.uow()
    async with uow:
        page = await uow.nodes.events(node_id, PageRequest(first=200, after_key=None))
    found = [e for _, e in reversed(page.items)]
    return [(str(e.kind), e.step and str(e.step), e.reason_code, e.message) for e in found]


def _sighups(node: SshNode) -> int:
    return (node.root / "sshd.log").read_text(errors="replace").count("Received SIGHUP")


async def _checked(kit: FleetKit, node_id: int) -> Node:
    checked = await check_node(kit, node_id)
    assert checked is not None
    return checked


async def _readmitted(kit: FleetKit, node_id: int) -> Node:
    """Bootstrapped once more, as after an admin's readmit."""
    await change_node(kit, node_id, NodeTrigger.READMIT, SYSTEM, META)
    return await _checked(kit, node_id)


async def test_an_sshd_without_the_ca_is_reloaded_by_its_pid_and_a_certificate_logs_in(
    kit: FleetKit, node: SshNode
) -> None:
    assert not _dropin(node).exists()  # the running sshd has never heard of the CA
    pid = int(node.pid_file.read_text())
    registered = await register(kit, node)

    ready = await _checked(kit, registered.id)

    assert ready.state is NodeState.READY, ready.reason
    assert f"TrustedUserCAKeys {node.trusted_ca_file}" in _dropin(node).read_text()
    assert not Path(reload_pending_marker(str(_dropin(node)))).exists()
    assert _sighups(node) == 1 and int(node.pid_file.read_text()) == pid  # re-executed itself
    events = await _events(kit, registered.id)
    login = [e for e in events if e[1] == "cert_login"]
    assert [e[0] for e in login] == ["step_started", "step_succeeded"]
    assert f"logs in as {node.user}" in login[-1][3]
    # Nothing changed: a second bootstrap writes nothing and reloads nothing.
    again = await _readmitted(kit, registered.id)
    assert again.state is NodeState.READY and _sighups(node) == 1


async def test_a_failed_reload_keeps_the_node_out_and_the_next_bootstrap_reloads(
    kit: FleetKit, node: SshNode
) -> None:
    pid = node.pid_file.read_text()
    node.pid_file.write_text("not a pid\n")  # a stale or broken pid file
    registered = await register(kit, node)

    failed = await _checked(kit, registered.id)

    assert failed.state is NodeState.UNHEALTHY and failed.reason is not None
    assert failed.reason.code is ReasonCode.PREPARE_FAILED
    # The head says what failed, the tail in which step.
    assert "holds no process id" in failed.reason.message
    assert "failed while reloading sshd" in failed.reason.message
    assert _dropin(node).exists() and _sighups(node) == 0
    assert Path(reload_pending_marker(str(_dropin(node)))).exists()
    assert not failed.bootstrapped

    node.pid_file.write_text(pid)  # the operator mends it; the drop-in is unchanged now
    ready = await _checked(kit, registered.id)

    assert ready.state is NodeState.READY, ready.reason
    assert _sighups(node) == 1
    assert not Path(reload_pending_marker(str(_dropin(node)))).exists()


async def test_a_drop_in_written_before_but_never_loaded_is_loaded(
    kit: FleetKit, node: SshNode
) -> None:
    # Identical to bootstrap's (nothing to change), written after sshd started: by hand, or by
    # a run that died before it reloaded and left no marker.
    _dropin(node).write_text(f"# Managed by gpucloud.\nTrustedUserCAKeys {node.trusted_ca_file}\n")
    os.utime(node.pid_file, (1, 1))  # sshd's last start: long before the drop-in
    registered = await register(kit, node)

    ready = await _checked(kit, registered.id)

    assert ready.state is NodeState.READY, ready.reason
    assert _sighups(node) == 1


async def test_a_node_whose_sshd_ignores_the_ca_is_not_ready(
    uow: Uow, tmp_path: Path, node: SshNode, prefix: str
) -> None:
    # sshd's config declared not ours: nothing points sshd at the CA, so the login must fail.
    settings = replace(fleet_settings(node.root, prefix), sshd_dropin="")
    unmanaged = kit_for(uow, LocalKms.create(tmp_path / "k.json"), settings)
    registered = await register(unmanaged, node)

    checked = await _checked(unmanaged, registered.id)

    assert checked.state is NodeState.UNHEALTHY and checked.reason is not None
    assert checked.reason.code is ReasonCode.CERT_LOGIN_REFUSED
    assert "has not loaded the CA keys" in checked.reason.message
    assert ("step_failed", "cert_login", "CERT_LOGIN_REFUSED") in [
        e[:3] for e in await _events(unmanaged, registered.id)
    ]


async def test_without_a_platform_ca_no_node_is_ready(kit: FleetKit, node: SshNode) -> None:
    registered = await register(kit, node, with_ca=False)
    checked = await _checked(kit, registered.id)
    assert checked.state is NodeState.UNHEALTHY and checked.reason is not None
    assert checked.reason.code is ReasonCode.CERT_LOGIN_REFUSED
    assert "gpucloud ca init" in checked.reason.message


async def test_the_nvidia_option_is_written_and_its_reload_reported_once(
    kit: FleetKit, node: SshNode
) -> None:
    registered = await register(kit, node)
    assert (await _checked(kit, registered.id)).state is NodeState.READY
    option = node.root / "gpucloud-nvidia.conf"
    assert option.read_text().splitlines()[-1] == "options nvidia NVreg_ModifyDeviceFiles=0"
    assert stat.S_IMODE(option.stat().st_mode) == 0o644
    needed = [e for e in await _events(kit, registered.id) if e[0] == "action_needed"]
    assert len(needed) == 1 and "reboot" in needed[0][3] and needed[0][1] == "prepare"
    # Bootstrapped again with the option in place (and no driver saying otherwise): no news.
    assert (await _readmitted(kit, registered.id)).state is NodeState.READY
    assert len([e for e in await _events(kit, registered.id) if e[0] == "action_needed"]) == 1


async def test_a_probe_finds_a_gpu_others_can_open_and_the_next_one_finds_it_mended(
    kit: FleetKit, node: SshNode, prefix: str
) -> None:
    registered = await register(kit, node)
    assert (await _checked(kit, registered.id)).state is NodeState.READY
    device = node.root / "dev" / "nvidia3"
    device.chmod(0o666)  # what a driver reload without our option does
    os.chown(node.root / "dev" / "nvidia5", -1, grp.getgrnam(f"{prefix}g2").gr_gid)

    broken = await _checked(kit, registered.id)

    assert broken.state is NodeState.UNHEALTHY and broken.reason is not None
    assert broken.reason.code is ReasonCode.ISOLATION_BROKEN
    message = broken.reason.message
    assert f"{device} opens for any user" in message
    assert f"{node.root}/dev/nvidia5 opens for the group of GPU 2" in message
    assert f"{node.root}/dev/nvidia5 does not open for its own group" in message
    # Set again at once, so the next probe finds the node whole.
    assert stat.S_IMODE(device.stat().st_mode) == 0o660
    mended = await _checked(kit, registered.id)
    assert mended.state is NodeState.READY and mended.reason is None
