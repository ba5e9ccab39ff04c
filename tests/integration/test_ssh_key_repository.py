"""Users' SSH keys on real PostgreSQL: the round trip, one copy and one name per user (races
included), the per-user limit under concurrent additions, and keys leaving with their owner."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncssh
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.compute import ssh_key_services
from domain.compute.ssh_keys import MAX_KEYS, NewSshKey, SshKeyErrorCode
from domain.errors import Conflict
from domain.identity.principal import Principal
from domain.identity.scopes import Role
from domain.pagination import PageRequest
from infra.nodes.keys import AsyncsshKeyCodec

CODEC = AsyncsshKeyCodec()
META = RequestMeta(request_id="test")


def new_key(name: str = "laptop") -> NewSshKey:
    key = asyncssh.generate_private_key("ssh-ed25519")
    line = " ".join(key.export_public_key().decode().split()[:2])
    return NewSshKey(name, line, key.get_fingerprint("sha256"), "ssh-ed25519", 256)


async def make_user(uow: Any, email: str) -> Principal:
    async with uow() as tx:
        user = await tx.users.add(email, None, Role.USER)
        await tx.commit()
    return Principal.for_session(user.id, Role.USER, 1, datetime.now(UTC) + timedelta(hours=1))


async def add(uow: Any, user_id: int, key: NewSshKey) -> Any:
    async with uow() as tx:
        stored = await tx.ssh_keys.add(user_id, key)
        await tx.commit()
    return stored


async def count(engine: AsyncEngine, user_id: int | None = None) -> int:
    where = "" if user_id is None else f" WHERE user_id = {int(user_id)}"
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM ssh_keys{where}"))).scalar())


async def test_round_trip(uow, engine) -> None:
    ada = await make_user(uow, "ada@example.com")
    assert ada.user_id is not None
    first, second = new_key("a"), new_key("b")
    stored = await add(uow, ada.user_id, first)
    await add(uow, ada.user_id, second)
    assert (stored.name, stored.public_key, stored.fingerprint, stored.bits) == (
        "a", first.public_key, first.fingerprint, 256)  # fmt: skip
    async with uow() as tx:
        assert await tx.ssh_keys.get(stored.id) == stored
        assert list(await tx.ssh_keys.get_many([stored.id, 10**9])) == [stored.id]
        assert [k.name for k in await tx.ssh_keys.all_for(ada.user_id)] == ["a", "b"]
        page = await tx.ssh_keys.list_for(ada.user_id, PageRequest(1, None))
        assert [k.name for _, k in page.items] == ["a"] and page.has_next_page
        assert await tx.ssh_keys.lock_owner(ada.user_id)
        assert not await tx.ssh_keys.lock_owner(10**9)
        assert await tx.ssh_keys.remove(stored.id) == stored
        assert await tx.ssh_keys.remove(stored.id) is None
        await tx.commit()
    assert await count(engine) == 1


async def test_one_copy_and_one_name_per_user(uow, engine) -> None:
    ada, bob = await make_user(uow, "ada@example.com"), await make_user(uow, "bob@example.com")
    assert ada.user_id is not None and bob.user_id is not None
    key = new_key("Laptop")
    await add(uow, ada.user_id, key)
    with pytest.raises(Conflict) as duplicate:
        await add(uow, ada.user_id, NewSshKey("other", key.public_key, key.fingerprint,
                                              key.key_type, key.bits))  # fmt: skip
    assert duplicate.value.problems[0].code == SshKeyErrorCode.DUPLICATE_KEY
    with pytest.raises(Conflict) as taken:
        await add(uow, ada.user_id, new_key("LAPTOP"))
    assert (taken.value.problems[0].code, taken.value.problems[0].field) == (
        SshKeyErrorCode.NAME_TAKEN, "name")  # fmt: skip
    # Another user may hold the same key under the same name.
    await add(uow, bob.user_id, key)
    assert await count(engine) == 2


async def test_concurrent_duplicate_inserts_store_one(uow, engine) -> None:
    """Without the service's lock, the unique constraint alone decides the race."""
    ada = await make_user(uow, "ada@example.com")
    assert ada.user_id is not None
    key = new_key()
    async with uow() as first:
        await first.ssh_keys.add(ada.user_id, key)

        async def second() -> None:
            async with uow() as tx:
                await tx.ssh_keys.add(ada.user_id, NewSshKey("other", key.public_key,
                                                             key.fingerprint, key.key_type, 256))  # fmt: skip
                await tx.commit()

        racing = asyncio.create_task(second())
        await asyncio.sleep(0.2)  # the second insert now waits on the first's index entry
        assert not racing.done()
        await first.commit()
    with pytest.raises(Conflict) as lost:
        await racing
    assert lost.value.problems[0].code == SshKeyErrorCode.DUPLICATE_KEY
    assert await count(engine) == 1


async def test_concurrent_adds_of_one_key_through_the_service(uow, engine) -> None:
    ada = await make_user(uow, "ada@example.com")
    line = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    results = await asyncio.gather(
        *(ssh_key_services.add_ssh_key(uow(), CODEC, ada, f"k{i}", line, META) for i in range(8)),
        return_exceptions=True,
    )
    added = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(added) == 1 and len(refused) == 7, results
    assert {r.problems[0].code for r in refused} == {SshKeyErrorCode.DUPLICATE_KEY}
    assert await count(engine) == 1


async def test_the_limit_holds_under_concurrent_additions(uow, engine) -> None:
    ada = await make_user(uow, "ada@example.com")
    assert ada.user_id is not None
    for i in range(MAX_KEYS - 2):
        await add(uow, ada.user_id, new_key(f"seed-{i}"))
    lines = [asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
             for _ in range(6)]  # fmt: skip
    results = await asyncio.gather(
        *(ssh_key_services.add_ssh_key(uow(), CODEC, ada, f"new-{i}", line, META)
          for i, line in enumerate(lines)),
        return_exceptions=True,
    )  # fmt: skip
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(refused) == 4, results
    assert {r.problems[0].code for r in refused} == {SshKeyErrorCode.TOO_MANY_KEYS}
    assert await count(engine, ada.user_id) == MAX_KEYS


async def test_keys_leave_with_their_owner(uow, engine) -> None:
    ada, bob = await make_user(uow, "ada@example.com"), await make_user(uow, "bob@example.com")
    assert ada.user_id is not None and bob.user_id is not None
    await add(uow, ada.user_id, new_key())
    await add(uow, bob.user_id, new_key())
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": ada.user_id})
    assert await count(engine, ada.user_id) == 0
    assert await count(engine, bob.user_id) == 1
