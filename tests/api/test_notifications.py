"""Notifications over graphql-transport-ws against real `gpucloud serve` and `gpucloud worker`
processes: a subscriber that disconnects, misses three and reconnects with its cursor gets
exactly those three, in order, then live ones; the list, the type filter and marking read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from domain.catalog.services import add_sku
from domain.catalog.sku import SkuSpec
from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from domain.pagination import encode_cursor
from domain.ports import UnitOfWork
from schema.relay import from_global_id, to_global_id
from tests.support.compute import credit
from tests.support.fleet import seed_node
from tests.support.identity import body, sync_sign_up_with_token
from tests.support.stack import next_message, served, subscribe

SUBSCRIBE = """subscription($after: String, $types: [NotificationType!]) {
  notifications(after: $after, types: $types) { cursor type payload } }"""
DETAILS = """subscription { notifications { cursor type
  details { ... on AllocationStateChangedNotice { allocationId state } } } }"""
LIST = """query($first: Int, $unread: Boolean!) { notifications(first: $first, unreadOnly: $unread) {
  edges { node { cursor type payload readAt } } } }"""
MARK = """mutation($upTo: String!) { markNotificationsRead(upTo: $upTo) {
  __typename ... on MarkNotificationsReadPayload { marked }
  ... on NotificationError { code field } } }"""
Uow = Callable[[], UnitOfWork]
# Before a user's first notification: a subscription "from now" (no cursor) starts wherever the
# server is when it handles the subscribe, which a client cannot observe, so events sent right
# after it could fall before that point. Tests subscribe from the beginning instead.
FROM_START = encode_cursor(0)


@pytest.fixture
def stack(service_env: dict[str, str], tmp_path: Path, engine: object) -> Iterator[dict[str, Any]]:
    """API and worker (the outbox relay) in a Redis namespace of their own."""
    with served(service_env, tmp_path, "notify", GPUCLOUD_OUTBOX_POLL_SECONDS="0.2") as running:
        yield {"http": running.http[0], "ws": running.ws[0]}


def _gql(http: str, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(base_url=http) as client:
        found = client.post("/graphql", json=body(query, variables),
                            headers={"authorization": f"Bearer {token}"}).json()  # fmt: skip
    assert "errors" not in found, found
    return found["data"]  # type: ignore[no-any-return]


async def _subscribe(ws_url: str, token: str, variables: dict[str, Any]) -> Any:
    return await subscribe(ws_url, token, SUBSCRIBE, variables)


async def _received(ws: Any, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        message = await next_message(ws, timeout)
        assert message["type"] == "next", message
        got.append(message["payload"]["data"]["notifications"])
    return got


async def _quiet(ws: Any, seconds: float = 1.5) -> bool:
    """Nothing more arrives for a while."""
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    return False


async def _tell(uow: Uow, user_id: int, n: int, kind: NoticeType = NoticeType.PAYMENT_SUCCEEDED,
                ) -> None:  # fmt: skip
    async with uow() as u:  # each in its own transaction, as causes happen
        await notify(u, [user_id], kind, {"n": n})
        await u.commit()


async def test_a_subscriber_resumes_from_its_cursor_without_gaps_or_repeats(
    stack: dict[str, Any], uow: Uow
) -> None:
    token = await asyncio.to_thread(sync_sign_up_with_token, stack["http"])
    viewer = await asyncio.to_thread(_gql, stack["http"], token, "{ viewer { id } }", {})
    user_id = from_global_id(viewer["viewer"]["id"])[1]
    other = await asyncio.to_thread(sync_sign_up_with_token, stack["http"])
    other_id = from_global_id((await asyncio.to_thread(
        _gql, stack["http"], other, "{ viewer { id } }", {}))["viewer"]["id"])[1]  # fmt: skip

    ws = await _subscribe(stack["ws"], token, {"after": FROM_START})
    await _tell(uow, user_id, 1)
    await _tell(uow, other_id, 99)  # someone else's: never seen here
    await _tell(uow, user_id, 2)
    first = await _received(ws, 2)
    assert [n["payload"]["n"] for n in first] == [1, 2]
    await ws.close()

    for n in (3, 4, 5):  # while disconnected
        await _tell(uow, user_id, n)
    ws = await _subscribe(stack["ws"], token, {"after": first[-1]["cursor"]})
    try:
        missed = await _received(ws, 3)
        assert [n["payload"]["n"] for n in missed] == [3, 4, 5]
        assert await _quiet(ws)  # exactly those three: nothing repeated
        await _tell(uow, user_id, 6)  # then live
        assert [n["payload"]["n"] for n in await _received(ws, 1)] == [6]
    finally:
        await ws.close()

    # Only some types, from the very first one on.
    ws = await _subscribe(
        stack["ws"], token, {"after": FROM_START, "types": ["ALLOCATION_LOW_BALANCE"]}
    )
    try:
        await _tell(uow, user_id, 7)
        await _tell(uow, user_id, 8, NoticeType.ALLOCATION_LOW_BALANCE)
        only = await _received(ws, 1)
        assert [(n["type"], n["payload"]["n"]) for n in only] == [("ALLOCATION_LOW_BALANCE", 8)]
    finally:
        await ws.close()

    listed = await asyncio.to_thread(_gql, stack["http"], token, LIST, {"first": 3,
                                                                         "unread": False})  # fmt: skip
    edges = [e["node"] for e in listed["notifications"]["edges"]]
    assert [e["payload"]["n"] for e in edges] == [8, 7, 6]  # newest first
    marked = await asyncio.to_thread(_gql, stack["http"], token, MARK, {"upTo": edges[1]["cursor"]})
    assert marked["markNotificationsRead"] == {"__typename": "MarkNotificationsReadPayload",
                                               "marked": 7}  # fmt: skip
    unread = await asyncio.to_thread(_gql, stack["http"], token, LIST, {"first": 10,
                                                                         "unread": True})  # fmt: skip
    assert [e["node"]["payload"]["n"] for e in unread["notifications"]["edges"]] == [8]
    bad = await asyncio.to_thread(_gql, stack["http"], token, MARK, {"upTo": "nonsense"})
    assert bad["markNotificationsRead"] == {"__typename": "NotificationError",
                                            "code": "INVALID_CURSOR", "field": "upTo"}  # fmt: skip


ADD_KEY = """mutation($input: AddSshKeyInput!) { addSshKey(input: $input) {
  ... on SshKeyPayload { sshKey { id } } } }"""
CREATE_ALLOCATION = """mutation($input: CreateAllocationInput!) { createAllocation(input: $input) {
  __typename ... on AllocationPayload { allocation { id state } } } }"""


@pytest.fixture
def two_apis(
    service_env: dict[str, str], tmp_path: Path, engine: object
) -> Iterator[dict[str, Any]]:
    """Two API processes and one worker on the same PostgreSQL and Redis."""
    with served(service_env, tmp_path, "two", apis=2, GPUCLOUD_OUTBOX_POLL_SECONDS="0.2",
                GPUCLOUD_ENGINE_TICK_SECONDS="3600") as running:  # fmt: skip
        yield {"a": running.http[0], "b_ws": running.ws[1]}


async def test_an_event_caused_through_one_api_reaches_a_subscriber_on_another(
    two_apis: dict[str, Any], uow: Uow
) -> None:
    token = await asyncio.to_thread(sync_sign_up_with_token, two_apis["a"])
    viewer = await asyncio.to_thread(_gql, two_apis["a"], token, "{ viewer { id } }", {})
    user_id = from_global_id(viewer["viewer"]["id"])[1]
    await seed_node(uow(), "gpu-two", gpus=1)
    sku = await add_sku(uow(), SkuSpec.create(
        name="h200x1-two", gpu_model="H200", gpu_count=1, vcpus=8, ram_gib=64, disk_gib=100,
        region="eu-west", hourly_price_minor=399, currency="USD"))  # fmt: skip
    async with uow() as u:
        await credit(u.ledger, user_id, 100_000)
        await u.commit()
    public = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    key = await asyncio.to_thread(_gql, two_apis["a"], token, ADD_KEY,
                                  {"input": {"name": "k", "publicKey": public}})  # fmt: skip

    ws = await subscribe(two_apis["b_ws"], token, DETAILS, {"after": FROM_START})  # on process B
    try:
        made = await asyncio.to_thread(_gql, two_apis["a"], token, CREATE_ALLOCATION, {"input": {
            "skuId": to_global_id("Sku", sku.id), "sshKeyIds": [key["addSshKey"]["sshKey"]["id"]],
            "idempotencyKey": "two-apis"}})  # fmt: skip
        allocation = made["createAllocation"]["allocation"]
        (told,) = await _received(ws, 1)
        assert told["type"] == "ALLOCATION_STATE_CHANGED"
        assert told["details"] == {"allocationId": allocation["id"], "state": "PLACED"}
        assert allocation["state"] == "PLACED"
    finally:
        await ws.close()
