"""`allocationUpdated(id)` over graphql-transport-ws against real `gpucloud serve` and
`gpucloud worker` processes: the allocation as it is, then each change (relayed through the
outbox and Redis); another user's allocation is refused before anything is streamed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from domain.audit.records import RequestMeta
from domain.catalog.services import add_sku
from domain.catalog.sku import SkuSpec
from domain.compute.allocation_services import create_allocation, stop_allocation
from domain.compute.ssh_key_services import add_ssh_key
from domain.ports import UnitOfWork
from infra.crypto.local_kms import LocalKms
from infra.nodes.factory import make_compute_kit
from infra.nodes.keys import AsyncsshKeyCodec
from infra.payment_settings import ledger_policy
from infra.settings import Settings
from schema.relay import from_global_id, to_global_id
from tests.support.compute import credit, signed_in
from tests.support.fleet import fleet_settings, kit_for, seed_node
from tests.support.identity import body, sync_sign_up_with_token
from tests.support.stack import next_message, served, subscribe

META = RequestMeta(request_id="test")
SUBSCRIBE = """subscription($id: ID!) { allocationUpdated(id: $id) {
  id state version stopReason } }"""
Uow = Callable[[], UnitOfWork]


@pytest.fixture
def stack(service_env: dict[str, str], tmp_path: Path, engine: object) -> Iterator[dict[str, Any]]:
    """API and worker on this run's servers, in a Redis namespace of their own."""
    with served(service_env, tmp_path, "alloc", GPUCLOUD_ENGINE_TICK_SECONDS="3600") as running:
        yield {"http": running.http[0], "ws": running.ws[0], "env": running.env}


def _user_id(http: str, token: str) -> int:
    with httpx.Client(base_url=http) as client:
        found = client.post("/graphql", json=body("{ viewer { id } }"),
                            headers={"authorization": f"Bearer {token}"}).json()  # fmt: skip
    return from_global_id(found["data"]["viewer"]["id"])[1]


async def _subscribe(ws_url: str, token: str, allocation_gid: str) -> Any:
    return await subscribe(ws_url, token, SUBSCRIBE, {"id": allocation_gid})


async def test_an_owner_sees_each_change_and_a_stranger_is_refused(
    stack: dict[str, Any], uow: Uow, settings: Settings, tmp_path: Path
) -> None:
    token = await asyncio.to_thread(sync_sign_up_with_token, stack["http"])
    stranger = await asyncio.to_thread(sync_sign_up_with_token, stack["http"])
    user_id = await asyncio.to_thread(_user_id, stack["http"], token)
    # A placed allocation, made through the domain on the same database the processes use.
    await seed_node(uow(), "gpu-sub", gpus=2)
    fleet = fleet_settings(tmp_path, "gpctsub")
    kit = make_compute_kit(fleet, settings.compute,
                           kit_for(uow, LocalKms(stack["env"]["GPUCLOUD_KMS_KEY_FILE"]), fleet),
                           ledger_policy(settings.payments))  # fmt: skip
    sku = await add_sku(uow(), SkuSpec.create(
        name="h200x1-sub", gpu_model="H200", gpu_count=1, vcpus=8, ram_gib=64, disk_gib=100,
        region="eu-west", hourly_price_minor=399, currency="USD"))  # fmt: skip
    async with uow() as u:
        await credit(u.ledger, user_id, 100_000)
        await u.commit()
    owner = signed_in(user_id)
    public = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    key = await add_ssh_key(uow(), AsyncsshKeyCodec(), owner, "k", public, META)
    placed = await create_allocation(kit, owner, sku.id, [key.id], "sub", META)
    gid = to_global_id("Allocation", placed.id)

    refused = await _subscribe(stack["ws"], stranger, gid)
    try:
        message = await next_message(refused)
        assert message["type"] in ("error", "next") and "NOT_FOUND" in json.dumps(message)
        assert "PLACED" not in json.dumps(message)
    finally:
        await refused.close()

    ws = await _subscribe(stack["ws"], token, gid)
    try:
        first = await next_message(ws)
        assert first["type"] == "next", first
        now = first["payload"]["data"]["allocationUpdated"]
        assert (now["id"], now["state"], now["version"]) == (gid, "PLACED", placed.version)
        await stop_allocation(kit, owner, placed.id, META)
        # The stack's worker is woken by the commit and may have moved it on before the stop
        # (PLACED -> PROVISIONING, its node being unreachable): each change comes, in order.
        changed = now
        while changed["state"] != "STOPPING":
            seen = changed["version"]
            changed = (await next_message(ws))["payload"]["data"]["allocationUpdated"]
            assert changed["version"] > seen and changed["state"] in ("PROVISIONING", "STOPPING")
        assert changed["stopReason"] == "USER"
    finally:
        await ws.close()
        await kit.ops.aclose()  # type: ignore[attr-defined]
