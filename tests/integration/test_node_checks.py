"""Bootstrap and health probes against a real OpenSSH sshd on loopback, with real PostgreSQL:
each fault becomes a clear node state and event, never a crash or a silent "ready"."""

from __future__ import annotations

import asyncio
import grp
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import Conflict
from domain.fleet.ca_services import create_ca, retire_ca_key, rotate_ca
from domain.fleet.checks import check_node
from domain.fleet.kit import FleetKit
from domain.fleet.node_services import change_node
from domain.fleet.nodes import Node, NodeHealth, NodeState, NodeTrigger, ReasonCode
from domain.fleet.records import BootstrapStep
from domain.identity.principal import SYSTEM
from domain.pagination import PageRequest
from domain.ports import UnitOfWork
from infra.crypto.envelope import AesGcmCipher
from infra.crypto.local_kms import LocalKms
from infra.nodes.ssh_ca import AsyncsshCaSigner
from tests.support.accounts import open_node_root
from tests.support.fleet import (
    META,
    eight_gpu_node,
    fake_devices,
    fleet_settings,
    group_prefix,
    kit_for,
    register,
)
from tests.support.ssh_node import EIGHT_H200, FIXTURES, SshNode, running_node

Uow = Callable[[], UnitOfWork]
SEVEN_OF_EIGHT = """#!/bin/sh
case "$*" in
  *--query-gpu=*) head -n 7 "{csv}" ;;
  *) exit 2 ;;
esac
"""
GARBAGE = """#!/bin/sh
echo 'this is not a GPU report'
"""
CSV_GARBAGE_XML_FINE = """#!/bin/sh
case "$*" in
  *--query-gpu=*) echo 'garbage, , ,' ;;
  *"-q -x"*) cat "{xml}" ;;
  *) exit 2 ;;
esac
"""


@pytest.fixture
def prefix() -> Iterator[str]:
    with group_prefix() as made:
        yield made


@pytest.fixture
def node() -> Iterator[SshNode]:
    with eight_gpu_node() as started:
        yield started


@pytest.fixture
def kms(tmp_path: Path) -> LocalKms:
    return LocalKms.create(tmp_path / "keys.json")


@pytest.fixture
def kit(uow: Uow, kms: LocalKms, node: SshNode, prefix: str) -> FleetKit:
    return kit_for(uow, kms, fleet_settings(node.root, prefix))


async def _events(kit: FleetKit, node_id: int) -> list[tuple[str, str | None, str | None]]:
    uow = kit.uow()
    async with uow:
        page = await uow.nodes.events(node_id, PageRequest(first=100, after_key=None))
    return [(str(e.kind), e.step and str(e.step), e.reason_code) for _, e in reversed(page.items)]


async def _get(kit: FleetKit, node_id: int) -> Node:
    uow = kit.uow()
    async with uow:
        found = await uow.nodes.get(node_id)
    assert found is not None
    return found


async def _bootstrapped(kit: FleetKit, node: SshNode) -> Node:
    registered = await register(kit, node)
    ready = await check_node(kit, registered.id)
    assert ready is not None and ready.state is NodeState.READY, ready.reason
    return ready


async def test_bootstrap_inventories_pins_prepares_and_readies_the_node(
    kit: FleetKit, node: SshNode, prefix: str, engine: AsyncEngine
) -> None:
    await create_ca(kit.uow(), kit.kms, AesGcmCipher(), AsyncsshCaSigner())
    registered = await register(kit, node)
    assert registered.state is NodeState.BOOTSTRAPPING and registered.host_key is None

    ready = await check_node(kit, registered.id)

    assert ready is not None and ready.state is NodeState.READY, ready.reason
    assert (ready.gpu_model, ready.gpu_count, ready.health) == ("H200", 8, NodeHealth.OK)
    assert ready.host_key == node.host_key_public  # trust on first use, pinned
    assert ready.facts is not None and ready.facts.cpus > 0 and ready.facts.ram_mib > 0
    uow = kit.uow()
    async with uow:
        gpus = (await uow.nodes.gpus([ready.id]))[ready.id]
    assert [g.index for g in gpus] == list(range(8))
    assert {g.model for g in gpus} == {"NVIDIA H200"} and all(g.present for g in gpus)
    events = await _events(kit, ready.id)
    assert events[0][0] == "registered" and ("host_key_pinned", None, None) in events
    for step in BootstrapStep:
        assert ("step_started", str(step), None) in events
        assert ("step_succeeded", str(step), None) in events
    assert events[-1][0] == "state_changed"
    # Prepared: each GPU device belongs to its own group, mode 0660; the CA key is trusted.
    for index in range(8):
        info = os.stat(node.root / "dev" / f"nvidia{index}")
        assert grp.getgrgid(info.st_gid).gr_name == f"{prefix}g{index}"
        assert stat.S_IMODE(info.st_mode) == 0o660
    grp.getgrnam(f"{prefix}p")
    async with kit.uow() as u:
        trusted = [k.public_key for k in await u.ssh_ca.trusted()]
    assert node.trusted_ca_file.read_text().split("\n")[:1] == trusted
    async with engine.connect() as conn:
        actions = (await conn.execute(text(
            "SELECT action FROM audit_events WHERE target_type = 'node' ORDER BY id"))).scalars().all()  # fmt: skip
    assert actions == ["fleet.node.registered", "fleet.node.host_key_pinned",
                       "fleet.node.bootstrapped"]  # fmt: skip


async def test_a_probe_of_a_healthy_node_changes_nothing_but_the_readings(
    kit: FleetKit, node: SshNode
) -> None:
    ready = await _bootstrapped(kit, node)
    events_before = await _events(kit, ready.id)
    again = await check_node(kit, ready.id)
    assert again is not None and again.state is NodeState.READY
    assert again.last_probe_at is not None and again.last_probe_at > ready.last_probe_at  # type: ignore[operator]
    assert await _events(kit, ready.id) == events_before  # no event for "still fine"


async def test_a_gpu_lost_between_probes_makes_the_node_unhealthy_until_it_returns(
    kit: FleetKit, node: SshNode
) -> None:
    ready = await _bootstrapped(kit, node)
    node.set_nvidia_smi(SEVEN_OF_EIGHT.format(csv=EIGHT_H200["query"]))
    sick = await check_node(kit, ready.id)
    assert sick is not None and sick.state is NodeState.UNHEALTHY
    assert sick.reason is not None and sick.reason.code is ReasonCode.GPU_MISSING
    assert "7" in sick.reason.message
    node.set_nvidia_smi(_real_tool())  # the GPU is back (reseated, driver reloaded)
    well = await check_node(kit, ready.id)
    assert well is not None and well.state is NodeState.READY and well.reason is None


def _real_tool() -> str:
    return f"""#!/bin/sh
case "$*" in
  *--query-gpu=*) exec cat "{EIGHT_H200["query"]}" ;;
  *"-q -x"*) exec cat "{EIGHT_H200["xml"]}" ;;
esac
exit 2
"""


@pytest.mark.parametrize(("script", "code"), [
    (None, ReasonCode.NVIDIA_SMI_MISSING), (GARBAGE, ReasonCode.NVIDIA_SMI_FAILED)])  # fmt: skip
async def test_a_node_without_a_working_nvidia_smi_is_never_ready(
    kit: FleetKit, node: SshNode, script: str | None, code: ReasonCode
) -> None:
    node.set_nvidia_smi(script)
    registered = await register(kit, node)
    checked = await check_node(kit, registered.id)
    assert checked is not None and checked.state is NodeState.UNHEALTHY
    assert checked.reason is not None and checked.reason.code is code
    assert not checked.bootstrapped and checked.next_probe_at is not None
    assert ("step_failed", "gpus", str(code)) in await _events(kit, registered.id)


async def test_the_xml_report_stands_in_when_the_csv_is_unreadable(
    kit: FleetKit, node: SshNode
) -> None:
    node.set_nvidia_smi(CSV_GARBAGE_XML_FINE.format(xml=FIXTURES / "h200" / "nvidia-smi-q.xml"))
    fake_devices(node, 1)
    registered = await register(kit, node)
    checked = await check_node(kit, registered.id)
    assert checked is not None and checked.state is NodeState.READY
    assert (checked.gpu_model, checked.gpu_count) == ("H200", 1)


async def test_a_wrong_host_key_quarantines_and_alerts(
    kit: FleetKit, node: SshNode, engine: AsyncEngine
) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    registered = await register(kit, node, host_key=impostor)
    checked = await check_node(kit, registered.id)
    assert checked is not None and checked.state is NodeState.QUARANTINED
    assert checked.reason is not None and checked.reason.code is ReasonCode.HOST_KEY_MISMATCH
    assert node.host_key_public.split()[1] in checked.reason.message  # which key it saw
    assert checked.next_probe_at is None  # nothing talks to it any more
    assert await check_node(kit, registered.id) == checked  # a late check does nothing
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT name FROM outbox WHERE topic = 'fleet' "
                                         "ORDER BY id"))).scalars().all()  # fmt: skip
    assert "node.alert" in names
    # The admin checks the machine and readmits it with its real key: it comes back.
    readmitted = await change_node(kit, registered.id, NodeTrigger.READMIT, SYSTEM, META,
                                   host_key=node.host_key_public)  # fmt: skip
    assert readmitted.state is NodeState.BOOTSTRAPPING
    back = await check_node(kit, registered.id)
    assert back is not None and back.state is NodeState.READY


async def test_a_host_key_that_changes_after_pinning_quarantines(
    kit: FleetKit, node: SshNode
) -> None:
    ready = await _bootstrapped(kit, node)
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    uow = kit.uow()
    async with uow:  # as if the machine behind the address had been swapped
        await uow.nodes.save(replace(ready, host_key=other, version=ready.version + 1))
        await uow.commit()
    checked = await check_node(kit, ready.id)
    assert checked is not None and checked.state is NodeState.QUARANTINED


async def test_a_refused_key_is_unreachable_with_its_reason(kit: FleetKit, node: SshNode) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    registered = await register(kit, node, private_key=stranger)
    checked = await check_node(kit, registered.id)
    assert checked is not None and checked.state is NodeState.UNREACHABLE
    assert checked.reason is not None and checked.reason.code is ReasonCode.AUTH_REFUSED


async def test_an_unreachable_node_is_marked_and_probed_with_backoff_not_destroyed(
    kit: FleetKit, tmp_path: Path, prefix: str
) -> None:
    with eight_gpu_node() as gone:
        gone_kit = kit_for(kit.uow, kit.kms, fleet_settings(gone.root, prefix))
        ready = await _bootstrapped(gone_kit, gone)
    # sshd is stopped now: nothing listens on the port.
    first = await check_node(gone_kit, ready.id)
    second = await check_node(gone_kit, ready.id)
    assert first is not None and second is not None
    assert first.state is NodeState.UNREACHABLE and first.reason is not None
    assert first.reason.code is ReasonCode.UNREACHABLE
    assert (first.probe_failures, second.probe_failures) == (1, 2)
    assert second.unreachable_since == first.unreachable_since  # since the first failure
    wait_1 = first.next_probe_at - first.last_probe_at  # type: ignore[operator]
    wait_2 = second.next_probe_at - second.last_probe_at  # type: ignore[operator]
    assert wait_1 == gone_kit.policy.probe_interval and wait_2 == 2 * wait_1
    uow = gone_kit.uow()
    async with uow:  # the inventory is kept: unreachable is a state, not a teardown
        assert len((await uow.nodes.gpus([ready.id]))[ready.id]) == 8


async def test_an_admin_cordon_during_a_check_is_not_lost(kit: FleetKit, node: SshNode) -> None:
    ready = await _bootstrapped(kit, node)
    node.set_nvidia_smi(SEVEN_OF_EIGHT.format(csv=EIGHT_H200["query"]))
    checked, cordoned = await asyncio.gather(
        check_node(kit, ready.id),
        change_node(kit, ready.id, NodeTrigger.CORDON, SYSTEM, META),
    )
    final = await _get(kit, ready.id)
    # Whichever came second saw the first: the hold stands, and the health reading too.
    assert final.state is NodeState.CORDONED
    assert final.health is NodeHealth.UNHEALTHY
    assert final.version == ready.version + 2
    with pytest.raises(Conflict):
        await change_node(kit, ready.id, NodeTrigger.CORDON, SYSTEM, META,
                          expected_version=ready.version)  # fmt: skip
    assert checked is not None and cordoned is not None


async def test_ca_login_bootstraps_a_node_that_trusts_the_platform_ca(
    uow: Uow, kms: LocalKms, tmp_path: Path, prefix: str
) -> None:
    ca_key = await create_ca(uow(), kms, AesGcmCipher(), AsyncsshCaSigner())
    with open_node_root() as root, running_node(root, report=EIGHT_H200,
                      trusted_ca_keys=[ca_key.public_key]) as ca_node:  # fmt: skip
        fake_devices(ca_node, 8)
        ca_kit = kit_for(uow, kms, fleet_settings(ca_node.root, prefix))
        registered = await register(ca_kit, ca_node, use_ca=True, host_key=ca_node.host_key_public)
        checked = await check_node(ca_kit, registered.id)
    assert checked is not None and checked.state is NodeState.READY
    assert registered.credential_secret_id is None


async def test_no_stack_trace_or_key_reaches_the_events(kit: FleetKit, node: SshNode) -> None:
    node.set_nvidia_smi(GARBAGE)
    registered = await register(kit, node)
    await check_node(kit, registered.id)
    uow = kit.uow()
    async with uow:
        page = await uow.nodes.events(registered.id, PageRequest(first=100, after_key=None))
    key_body = node.client_key.read_text().splitlines()[1]
    for _, event in page.items:
        assert "Traceback" not in event.message and key_body not in event.message


async def test_after_a_ca_rotation_the_probe_updates_the_node_then_the_old_key_can_go(
    kit: FleetKit, node: SshNode
) -> None:
    old = await create_ca(kit.uow(), kit.kms, AesGcmCipher(), AsyncsshCaSigner())
    ready = await _bootstrapped(kit, node)
    assert ready.ca_keys == (old.public_key,)
    new = await rotate_ca(kit.uow(), kit.kms, AesGcmCipher(), AsyncsshCaSigner())
    with pytest.raises(Conflict) as pending:  # the node knows only the old key
        await retire_ca_key(kit.uow(), old.id)
    assert "gpu-1" in pending.value.problems[0].message

    probed = await check_node(kit, ready.id)

    assert probed is not None and probed.state is NodeState.READY
    assert probed.ca_keys == (new.public_key, old.public_key)
    assert node.trusted_ca_file.read_text().split() == [*new.public_key.split(),
                                                        *old.public_key.split()]  # fmt: skip
    await retire_ca_key(kit.uow(), old.id)
    after = await check_node(kit, ready.id)  # the next probe drops the retired key
    assert after is not None and after.ca_keys == (new.public_key,)
    assert node.trusted_ca_file.read_text().split() == new.public_key.split()


async def test_readmitting_keeps_the_pin_unless_the_key_is_what_changed(
    kit: FleetKit, node: SshNode
) -> None:
    ready = await _bootstrapped(kit, node)
    again = await change_node(kit, ready.id, NodeTrigger.READMIT, SYSTEM, META)
    assert again.state is NodeState.BOOTSTRAPPING and again.host_key == node.host_key_public
    back = await check_node(kit, ready.id)  # re-inventoried under the same pin
    assert back is not None and back.state is NodeState.READY

    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    uow = kit.uow()
    async with uow:
        await uow.nodes.save(replace(back, host_key=other, version=back.version + 1))
        await uow.commit()
    quarantined = await check_node(kit, ready.id)
    assert quarantined is not None and quarantined.state is NodeState.QUARANTINED
    # The admin, having checked the machine, readmits it without a key: trust at next contact.
    trusting = await change_node(kit, ready.id, NodeTrigger.READMIT, SYSTEM, META)
    assert trusting.host_key is None
    final = await check_node(kit, ready.id)
    assert final is not None and final.state is NodeState.READY
    assert final.host_key == node.host_key_public
