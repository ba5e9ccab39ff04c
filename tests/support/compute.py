"""Setting up money and people for allocation tests and benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncssh

from domain.audit.records import RequestMeta
from domain.compute.ssh_key_services import add_ssh_key
from domain.identity.principal import Principal, PrincipalKind
from domain.identity.scopes import ROLE_SCOPES, Role
from domain.ledger import book
from domain.ledger.accounts import AccountKind, platform, wallet
from domain.ledger.transfers import TransferCode
from domain.ports import LedgerRepository, UnitOfWork
from infra.nodes.keys import AsyncsshKeyCodec


async def credit(ledger: LedgerRepository, user_id: int, amount: int) -> None:
    """Give the user's USD wallet `amount` of promotional credit (in the caller's transaction)."""
    await book.move(ledger, platform(AccountKind.PROMOTIONAL_CREDIT, "USD"),
                    wallet(user_id, "USD"), amount, TransferCode.CREDIT)  # fmt: skip


def signed_in(user_id: int, role: Role = Role.USER) -> Principal:
    """The user as a browser session would act: every scope of the role."""
    return Principal(PrincipalKind.SESSION, user_id, role, ROLE_SCOPES[role])


async def stored_user(uow: Callable[[], UnitOfWork], role: Role = Role.USER) -> int:
    """A user row (no password), committed; returns its id."""
    async with uow() as u:
        made = await u.users.add(f"{uuid.uuid4().hex[:10]}@example.com", None, role)
        await u.commit()
        return int(made.id)


async def customer(uow: Callable[[], UnitOfWork], email: str) -> tuple[Principal, int]:
    """A signed-in user with ample credit and one SSH key: (the user, the key's id)."""
    async with uow() as u:
        made = await u.users.add(email, None, Role.USER)
        await credit(u.ledger, made.id, 10**9)
        await u.commit()
    user = signed_in(made.id)
    public = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    key = await add_ssh_key(uow(), AsyncsshKeyCodec(), user, "bench", public,
                            RequestMeta(request_id="setup"))  # fmt: skip
    return user, key.id
