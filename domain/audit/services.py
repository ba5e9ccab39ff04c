"""Reading and verifying the audit log."""

from __future__ import annotations

from collections.abc import Callable

from domain.audit.records import AuditEvent, AuditFilter, ChainVerifier
from domain.pagination import Page, PageRequest
from domain.ports import UnitOfWork


async def list_events(uow: UnitOfWork, audit_filter: AuditFilter,
                      page: PageRequest) -> Page[AuditEvent]:  # fmt: skip
    async with uow:
        return await uow.audit.list(audit_filter, page)


async def verify_chain(uow: Callable[[], UnitOfWork], batch: int = 1000) -> ChainVerifier:
    """Recompute every hash from the first row, in batches of short transactions; the result
    names the first row that does not match (`broken_at`), or none."""
    verifier = ChainVerifier()
    after = 0
    while True:
        async with uow() as tx:
            events = await tx.audit.scan(after, batch)
        if not events or not verifier.feed(events):
            return verifier
        after = events[-1].id
