"""Nodes on real PostgreSQL: uniqueness of names and live addresses (races included), optimistic
versions, the recorded GPU inventory, event history, and probe claims two workers never share."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import Conflict
from domain.fleet.inventory import GpuInfo
from domain.fleet.nodes import (
    Node,
    NodeAuth,
    NodeFacts,
    NodeHealth,
    NodeState,
    NodeTrigger,
    Reason,
    ReasonCode,
    transition,
)
from domain.fleet.records import BootstrapStep, NewNode, NewNodeEvent, NodeEventKind, NodeFilter
from domain.pagination import PageRequest
from domain.ports import UnitOfWork
from domain.secrets import NewSecret, SecretPurpose, WrappedKey
from infra.db.fleet_tables import nodes

Uow = Callable[[], UnitOfWork]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def new_node(name: str, host: str = "10.0.0.1", port: int = 22, *, region: str = "eu-west",
             due: datetime = NOW, labels: dict[str, str] | None = None) -> NewNode:  # fmt: skip
    return NewNode(name=name, host=host, port=port, ssh_user="ubuntu", auth=NodeAuth.CA,
                   credential_secret_id=None, host_key=None, region=region,
                   labels=labels or {}, next_probe_at=due)  # fmt: skip


def gpu(index: int, driver: str = "550.54.15") -> GpuInfo:
    return GpuInfo(index=index, uuid=f"GPU-{index:04d}", model="NVIDIA H200",
                   pci_bus_id=f"00000000:{index + 0x18:02X}:00.0", memory_mib=143771,
                   driver_version=driver, mig_enabled=False)  # fmt: skip


async def add(uow: Uow, node: NewNode) -> Node:
    async with uow() as tx:
        added = await tx.nodes.add(node)
        await tx.commit()
    return added


async def save(uow: Uow, node: Node) -> Node:
    async with uow() as tx:
        saved = await tx.nodes.save(node)
        await tx.commit()
    return saved


async def count_nodes(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(nodes))).scalar_one())


async def test_add_stores_a_bootstrapping_node_and_reads_it_back(uow: Uow) -> None:
    added = await add(uow, new_node("gpu-1", labels={"rack": "r12"}))
    assert (added.state, added.health, added.version) == (
        NodeState.BOOTSTRAPPING, NodeHealth.UNKNOWN, 1)  # fmt: skip
    assert (added.gpu_count, added.probe_failures, added.reason, added.facts) == (0, 0, None, None)
    assert added.labels == {"rack": "r12"} and added.next_probe_at == NOW
    assert added.retired_at is None and added.bootstrapped_at is None
    async with uow() as tx:
        assert await tx.nodes.get(added.id) == added
        assert await tx.nodes.get(added.id + 1000) is None
        assert await tx.nodes.get_many([added.id, added.id + 1000]) == {added.id: added}


async def test_a_taken_name_is_refused_even_when_its_node_is_retired(uow, engine) -> None:
    first = await add(uow, new_node("gpu-1", "10.0.0.1"))
    with pytest.raises(Conflict) as caught:
        await add(uow, new_node("gpu-1", "10.0.0.2"))
    assert caught.value.problems[0].code == "NAME_TAKEN"
    assert caught.value.problems[0].field == "name"
    await save(uow, transition(first, NodeTrigger.RETIRE, NOW))
    with pytest.raises(Conflict) as caught:
        await add(uow, new_node("gpu-1", "10.0.0.3"))
    assert caught.value.problems[0].code == "NAME_TAKEN"
    assert await count_nodes(engine) == 1


async def test_one_live_node_per_address_and_a_retired_ones_address_is_free(uow, engine) -> None:
    first = await add(uow, new_node("gpu-1", "10.0.0.1", 22))
    with pytest.raises(Conflict) as caught:
        await add(uow, new_node("gpu-2", "10.0.0.1", 22))
    assert caught.value.problems[0].code == "ADDRESS_TAKEN"
    assert caught.value.problems[0].field == "host"
    await add(uow, new_node("gpu-3", "10.0.0.1", 2222))  # another port is another address
    retired = await save(uow, transition(first, NodeTrigger.RETIRE, NOW))
    assert retired.state is NodeState.RETIRED and retired.retired_at == NOW
    again = await add(uow, new_node("gpu-4", "10.0.0.1", 22))
    assert again.state is NodeState.BOOTSTRAPPING
    assert await count_nodes(engine) == 3


async def test_concurrent_registrations_of_one_address_leave_one_node(uow, engine) -> None:
    results = await asyncio.gather(
        *(add(uow, new_node(f"race-{i}", "10.9.9.9")) for i in range(5)), return_exceptions=True
    )
    assert sum(isinstance(r, Node) for r in results) == 1
    refused = [r for r in results if not isinstance(r, Node)]
    assert all(isinstance(r, Conflict) and r.problems[0].code == "ADDRESS_TAKEN" for r in refused)
    assert await count_nodes(engine) == 1


async def test_the_credential_must_match_the_auth_mode(uow, engine) -> None:
    key_node = replace(new_node("keyed", "10.0.0.5"), auth=NodeAuth.KEY)
    with pytest.raises(IntegrityError, match="ck_nodes_credential_matches_auth"):
        await add(uow, key_node)  # a key node without its sealed key
    async with uow() as tx:
        secret = await tx.secrets.add(NewSecret(
            uuid=uuid.uuid4(), purpose=SecretPurpose.NODE_ADMIN_KEY,
            wrapped=WrappedKey("v1", os.urandom(40)), nonce=os.urandom(12),
            ciphertext=os.urandom(64),
        ))  # fmt: skip
        await tx.commit()
    with pytest.raises(IntegrityError, match="ck_nodes_credential_matches_auth"):
        await add(uow, replace(new_node("ca-with-key", "10.0.0.6"), credential_secret_id=secret.id))
    stored = await add(uow, replace(key_node, credential_secret_id=secret.id))
    assert (stored.auth, stored.credential_secret_id) == (NodeAuth.KEY, secret.id)
    assert await count_nodes(engine) == 1


async def test_save_stores_every_mutable_field(uow: Uow) -> None:
    node = await add(uow, new_node("gpu-1"))
    facts = NodeFacts(os_id="ubuntu", os_version="22.04", kernel="5.15.0-97-generic", cpus=96,
                      ram_mib=1_031_000, disk_total_mib=3_600_000, disk_free_mib=3_100_000)  # fmt: skip
    later = NOW + timedelta(minutes=1)
    changed = replace(
        node, health=NodeHealth.UNHEALTHY, host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA",
        labels={"rack": "r7"}, gpu_model="H200", gpu_count=8, facts=facts,
        bootstrapped_at=later, last_probe_at=later, unreachable_since=later, probe_failures=3,
        next_probe_at=later + timedelta(minutes=5),
    )  # fmt: skip
    bad = transition(changed, NodeTrigger.PROBE_UNHEALTHY, later,
                     Reason(ReasonCode.ECC_ERRORS, "GPU 3 has 2 uncorrected ECC errors"))  # fmt: skip
    saved = await save(uow, bad)
    assert saved == bad
    async with uow() as tx:
        assert await tx.nodes.get(node.id) == bad
    # READY clears the reason; None values are stored as such, not skipped.
    healed = transition(replace(saved, facts=None, next_probe_at=None), NodeTrigger.PROBE_OK, NOW)
    assert (await save(uow, healed)).reason is None
    async with uow() as tx:
        stored = await tx.nodes.get(node.id)
    assert stored == healed and stored.version == 3 and stored.facts is None


async def test_saving_from_a_stale_copy_is_a_version_mismatch(uow: Uow) -> None:
    node = await add(uow, new_node("gpu-1"))
    await save(uow, transition(node, NodeTrigger.CORDON, NOW))  # someone else's change
    with pytest.raises(Conflict) as caught:
        await save(uow, transition(node, NodeTrigger.DRAIN, NOW))  # made from version 1
    assert caught.value.problems[0].code == "VERSION_MISMATCH"
    async with uow() as tx:
        stored = await tx.nodes.get(node.id)
    assert stored is not None and (stored.state, stored.version) == (NodeState.CORDONED, 2)


async def test_get_for_update_makes_a_second_writer_wait(uow: Uow) -> None:
    node = await add(uow, new_node("gpu-1"))
    async with uow() as first:
        locked = await first.nodes.get(node.id, for_update=True)
        assert locked is not None

        async def second() -> Node | None:
            async with uow() as tx:
                return await tx.nodes.get(node.id, for_update=True)

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.2)
        assert not waiting.done()  # blocked on the row lock
        await first.nodes.save(transition(locked, NodeTrigger.CORDON, NOW))
        await first.commit()
    after = await waiting
    assert after is not None and after.state is NodeState.CORDONED  # it read the new row


async def test_record_gpus_marks_the_missing_ones_and_revives_returning_ones(uow: Uow) -> None:
    node = await add(uow, new_node("gpu-1"))
    async with uow() as tx:
        await tx.nodes.record_gpus(node.id, [gpu(i) for i in range(4)])
        await tx.commit()
    async with uow() as tx:
        await tx.nodes.record_gpus(node.id, [gpu(0, "560.1"), gpu(1, "560.1"), gpu(3, "560.1")])
        await tx.commit()
    async with uow() as tx:
        recorded = (await tx.nodes.gpus([node.id]))[node.id]
    assert [(g.index, g.present, g.driver_version) for g in recorded] == [
        (0, True, "560.1"), (1, True, "560.1"), (2, False, "550.54.15"), (3, True, "560.1")]  # fmt: skip
    assert recorded[0].model == "NVIDIA H200" and recorded[0].uuid == "GPU-0000"
    async with uow() as tx:
        await tx.nodes.record_gpus(node.id, [gpu(i) for i in range(4)])
        await tx.nodes.record_gpus(node.id, [gpu(i) for i in range(4)])  # repeating is harmless
        other = await tx.nodes.add(new_node("gpu-2", "10.0.0.2"))
        await tx.commit()
    async with uow() as tx:
        both = await tx.nodes.gpus([node.id, other.id])
    assert [g.present for g in both[node.id]] == [True] * 4
    assert both[other.id] == []
    async with uow() as tx:
        await tx.nodes.record_gpus(node.id, [])  # nvidia-smi found nothing at all
        await tx.commit()
    async with uow() as tx:
        assert [g.present for g in (await tx.nodes.gpus([node.id]))[node.id]] == [False] * 4


async def test_events_page_newest_first(uow: Uow) -> None:
    node = await add(uow, new_node("gpu-1"))
    other = await add(uow, new_node("gpu-2", "10.0.0.2"))
    async with uow() as tx:
        first = await tx.nodes.add_event(NewNodeEvent(node.id, NodeEventKind.REGISTERED, "hi"))
        await tx.nodes.add_event(NewNodeEvent(other.id, NodeEventKind.REGISTERED, "other"))
        for step in (BootstrapStep.CONNECT, BootstrapStep.OS):
            await tx.nodes.add_event(NewNodeEvent(node.id, NodeEventKind.STEP_SUCCEEDED,
                                                  f"{step} ok", step=step))  # fmt: skip
        await tx.nodes.add_event(NewNodeEvent(
            node.id, NodeEventKind.STATE_CHANGED, "unhealthy", state=NodeState.UNHEALTHY,
            reason_code=ReasonCode.NO_GPUS.value))  # fmt: skip
        await tx.commit()
    assert first.at is not None and first.step is None and first.state is None
    async with uow() as tx:
        page1 = await tx.nodes.events(node.id, PageRequest(2, None))
        page2 = await tx.nodes.events(node.id, PageRequest(2, page1.items[-1][0]))
    assert [e.message for _, e in page1.items] == ["unhealthy", "os ok"]
    assert page1.has_next_page and not page1.has_previous_page
    newest = page1.items[0][1]
    assert (newest.state, newest.reason_code) == (NodeState.UNHEALTHY, "NO_GPUS")
    assert page1.items[1][1].step is BootstrapStep.OS
    assert [e.message for _, e in page2.items] == ["connect ok", "hi"]
    assert not page2.has_next_page and page2.has_previous_page


async def test_list_filters_by_state_and_region_in_id_order(uow: Uow) -> None:
    a = await add(uow, new_node("a", "10.0.0.1", region="eu-west"))
    b = await add(uow, new_node("b", "10.0.0.2", region="us-east"))
    c = await add(uow, new_node("c", "10.0.0.3", region="eu-west"))
    await save(uow, transition(c, NodeTrigger.CORDON, NOW))

    async def names(node_filter: NodeFilter, first: int = 10) -> list[str]:
        async with uow() as tx:
            page = await tx.nodes.list(node_filter, PageRequest(first, None))
        return [n.name for _, n in page.items]

    assert await names(NodeFilter()) == ["a", "b", "c"]
    assert await names(NodeFilter(region="eu-west")) == ["a", "c"]
    assert await names(NodeFilter(state=NodeState.BOOTSTRAPPING)) == ["a", "b"]
    assert await names(NodeFilter(NodeState.CORDONED, "eu-west")) == ["c"]
    assert await names(NodeFilter(NodeState.CORDONED, "us-east")) == []
    async with uow() as tx:
        second = await tx.nodes.list(NodeFilter(), PageRequest(2, a.id))
    assert [n.id for _, n in second.items] == [b.id, c.id]


async def test_claim_due_takes_due_nodes_in_order_and_leases_them(
    uow: Uow, engine: AsyncEngine
) -> None:
    late = await add(uow, new_node("late", "10.0.0.1", due=NOW - timedelta(minutes=1)))
    early = await add(uow, new_node("early", "10.0.0.2", due=NOW - timedelta(minutes=5)))
    await add(uow, new_node("future", "10.0.0.3", due=NOW + timedelta(minutes=1)))
    never = await add(uow, new_node("never", "10.0.0.4"))
    await save(uow, replace(transition(never, NodeTrigger.RETIRE, NOW), next_probe_at=None))
    lease = timedelta(minutes=2)
    async with uow() as tx:
        claimed = await tx.nodes.claim_due(NOW, lease, 10)
        await tx.commit()
    assert [c.id for c in claimed] == [early.id, late.id]
    assert [c.token for c in claimed] == [1, 1]  # the first generation of each
    async with uow() as tx:
        stored = await tx.nodes.get_many([early.id, late.id])
    # The claim leaves the schedule and the version alone: the lease is what holds the rows.
    assert stored[early.id].next_probe_at == NOW - timedelta(minutes=5)
    assert all(n.version == 1 and n.lease_token == 1 for n in stored.values())
    async with uow() as tx:
        assert await tx.nodes.claim_due(NOW, lease, 10) == []  # leased: nobody takes them now
    async with engine.begin() as conn:  # the worker died and its lease ran out
        await conn.execute(text("UPDATE nodes SET lease_expires_at = now() - interval '1 s'"))
    async with uow() as tx:
        again = await tx.nodes.claim_due(NOW + lease, lease, 10)
    assert sorted((c.id, c.token) for c in again) == sorted(
        [(early.id, 2), (late.id, 2), (early.id + 1, 1)]
    )


async def test_a_lease_is_renewed_released_and_revoked_by_generation(uow: Uow) -> None:
    node = await add(uow, new_node("n", "10.0.0.9", due=NOW))
    async with uow() as tx:
        (claimed,) = await tx.nodes.claim_due(NOW, timedelta(minutes=2), 1)
        assert await tx.nodes.take_lease(node.id, 60) is None  # held: not taken
        assert await tx.nodes.renew_lease(node.id, claimed.token, 60)
        assert not await tx.nodes.renew_lease(node.id, claimed.token - 1, 60)  # an older one
        assert await tx.nodes.revoke_lease(node.id) == claimed.token + 1
        # Revoked: the holder can neither renew nor release, and the row is free at once.
        assert not await tx.nodes.renew_lease(node.id, claimed.token, 60)
        assert not await tx.nodes.release_lease(node.id, claimed.token)
        assert await tx.nodes.take_lease(node.id, 60) == claimed.token + 2
        assert await tx.nodes.release_lease(node.id, claimed.token + 2)
        assert [c.token for c in await tx.nodes.claim_due(NOW, timedelta(minutes=2), 1)] == [
            claimed.token + 3
        ]


async def test_two_workers_claiming_at_once_never_share_a_node(
    uow: Uow, engine: AsyncEngine
) -> None:
    for i in range(12):
        await add(uow, new_node(f"n{i:02d}", f"10.0.1.{i}", due=NOW - timedelta(seconds=i)))
    lease = timedelta(minutes=2)
    async with uow() as first, uow() as second:
        # Both transactions stay open: the first's locks are what the second must skip.
        mine = await first.nodes.claim_due(NOW, lease, 5)
        theirs = await second.nodes.claim_due(NOW, lease, 20)
        await first.commit()
        await second.commit()
    assert len(mine) == 5 and len(theirs) == 7
    assert {n.id for n in mine}.isdisjoint(n.id for n in theirs)
    async with uow() as tx:
        names = {i: n.name for i, n in (await tx.nodes.get_many([c.id for c in mine])).items()}
    assert [names[c.id] for c in mine] == ["n11", "n10", "n09", "n08", "n07"]  # longest overdue
    async with engine.begin() as conn:  # their worker died: the leases ran out
        await conn.execute(text("UPDATE nodes SET lease_expires_at = now() - interval '1 s'"))

    async def worker() -> list[int]:
        async with uow() as tx:
            got = await tx.nodes.claim_due(NOW, lease, 3)
            await asyncio.sleep(0.05)  # hold the locks while the others claim
            await tx.commit()
        return [n.id for n in got]

    claims = await asyncio.gather(*(worker() for _ in range(6)))
    taken = [node_id for claim in claims for node_id in claim]
    assert len(taken) == len(set(taken)) == 12


async def test_database_refuses_rows_the_domain_never_writes(engine: AsyncEngine) -> None:
    row = {"name": "raw", "host": "10.0.0.1", "port": 22, "ssh_user": "u", "auth": "ca",
           "region": "eu-west", "state": "ready"}  # fmt: skip
    for bad in ({"state": "sleeping"}, {"health": "meh"}, {"port": 0},
                {"reason_code": "NO_GPUS"}, {"state": "retired"}, {"labels": []}):  # fmt: skip
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(insert(nodes).values(**{**row, **bad}))
    async with engine.begin() as conn:
        await conn.execute(insert(nodes).values(**row))
