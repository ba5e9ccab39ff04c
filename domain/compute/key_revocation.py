"""A removed SSH key leaves the allocations it was given to.

Each live allocation keeps a snapshot of its keys' OpenSSH lines (what provisioning writes to
the node's authorized_keys). Removing a key rewrites the snapshot of every live allocation of
its owner that has it, in the same transaction as the removal. PLACED and PROVISIONING ones
then provision with the new snapshot; a RUNNING one is marked due (`next_attempt_at`), and the
engine re-runs `ensure_account` with its stored keys (domain/compute/engine.py, `rekey`), which
rewrites authorized_keys without the key. SSH sessions already open with the key stay open
until they end; stopping the allocation ends them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from domain.compute.allocations import AllocationState
from domain.compute.changes import store
from domain.compute.records import AllocationEventKind
from domain.compute.ssh_keys import SshKey
from domain.ports import UnitOfWork


def _same_key(line: str, public_key: str) -> bool:
    return line.split()[:2] == public_key.split()[:2]  # type and base64; the comment may differ


async def take_off_allocations(uow: UnitOfWork, key: SshKey, now: datetime) -> list[int]:
    """In the caller's transaction: drop `key` from its owner's live allocations; returns the
    ids of those changed."""
    live = await uow.allocations.live_ids(user_id=key.user_id)
    changed: list[int] = []
    for allocation_id in live:
        before = await uow.allocations.get(allocation_id, for_update=True)
        if before is None or key.id not in before.ssh_key_ids:
            continue
        lines = (await uow.allocations.public_keys([allocation_id]))[allocation_id]
        kept_ids = [k for k in before.ssh_key_ids if k != key.id]
        kept = [line for line in lines if not _same_key(line, key.public_key)]
        await uow.allocations.set_keys(allocation_id, kept_ids, kept)
        after = replace(
            before, version=before.version + 1, updated_at=now, ssh_key_ids=tuple(kept_ids)
        )
        if before.state is AllocationState.RUNNING:
            after = replace(after, next_attempt_at=now, attempts=0)  # the engine re-ensures
        note = (
            AllocationEventKind.KEYS_CHANGED,
            f"SSH key {key.fingerprint} removed; {len(kept)} key(s) left",
        )
        await store(uow, before, after, "allocation.keys_changed", now=now, note=note)
        changed.append(allocation_id)
    return changed
