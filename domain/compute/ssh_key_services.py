"""SSH key use cases: add (validated, fingerprinted, duplicates refused), list, remove.

The same key may be on two users' accounts. A key never says who a platform user is: it opens
only the Linux accounts of the allocations whose owner added it, so sharing one (a team's
deploy key, a person with two accounts) grants nobody anything, and refusing it would tell a
stranger that someone else holds the key.
"""

from __future__ import annotations

from datetime import UTC, datetime

from domain.audit.records import RequestMeta, audit
from domain.compute.key_revocation import take_off_allocations
from domain.compute.ssh_keys import (
    NewSshKey,
    SshKey,
    SshKeyErrorCode,
    check_name,
    check_parsed,
    clashes,
    screen_public_key,
)
from domain.errors import Conflict, DomainError, NotFound, Problem, ProblemCollector
from domain.identity.errors import AccessCode, AccessDenied
from domain.identity.principal import Principal, may_change, owns_or_admin
from domain.pagination import Page, PageRequest
from domain.ports import SshKeyCodec, UnitOfWork


def validate(codec: SshKeyCodec, name: str, public_key: str) -> NewSshKey:
    """The key to store, or `InvalidInput` listing every problem of the name and the key."""
    problems = ProblemCollector()
    clean_name = check_name(name, problems)
    parsed = None
    try:
        line = screen_public_key(public_key)
        parsed = codec.parse_public_key(line)
        check_parsed(parsed, line.split()[0])
    except DomainError as exc:
        problems.problems.extend(exc.problems)
    problems.raise_if_any()
    assert parsed is not None
    return NewSshKey(clean_name, parsed.openssh_line, parsed.fingerprint, parsed.key_type,
                     parsed.bits)  # fmt: skip


async def add_ssh_key(uow: UnitOfWork, codec: SshKeyCodec, principal: Principal, name: str,
                      public_key: str, meta: RequestMeta) -> SshKey:  # fmt: skip
    """Add a key to the caller's own account (audited)."""
    assert principal.user_id is not None
    new = validate(codec, name, public_key)
    now = datetime.now(UTC)
    async with uow:
        # Held until commit: two additions by one user cannot both see room for one more key.
        await uow.ssh_keys.lock_owner(principal.user_id)
        if found := clashes(await uow.ssh_keys.all_for(principal.user_id), new):
            raise Conflict(found)
        key = await uow.ssh_keys.add(principal.user_id, new)  # the constraints stay the backstop
        await uow.audit.append(audit(principal, meta, "ssh_key.added", ("ssh_key", key.id),
                                     after=key.audit_view(), now=now))  # fmt: skip
        await uow.commit()
    return key


async def list_ssh_keys(uow: UnitOfWork, principal: Principal,
                        page: PageRequest) -> Page[SshKey]:  # fmt: skip
    assert principal.user_id is not None
    async with uow:
        return await uow.ssh_keys.list_for(principal.user_id, page)


async def remove_ssh_key(uow: UnitOfWork, principal: Principal, key_id: int,
                         meta: RequestMeta) -> SshKey:  # fmt: skip
    """Remove one of the caller's keys, and take it off their live allocations (see
    domain/compute/key_revocation.py). As with API tokens, an administrator holding
    `admin:write` may remove anyone's (a leaked key is taken off at once); anybody else is told
    NOT_FOUND, exactly as for a key that does not exist."""
    now = datetime.now(UTC)
    async with uow:
        key = await uow.ssh_keys.get(key_id)
        if key is None or not owns_or_admin(principal, key.user_id):
            raise NotFound(Problem(SshKeyErrorCode.NOT_FOUND, "No such SSH key.", "id"))
        if not may_change(principal, key.user_id):
            raise AccessDenied(AccessCode.FORBIDDEN, "Removing others' keys takes admin:write.")
        removed = await uow.ssh_keys.remove(key_id)
        if removed is None:  # removed by a concurrent request since we read it
            raise NotFound(Problem(SshKeyErrorCode.NOT_FOUND, "No such SSH key.", "id"))
        changed = await take_off_allocations(uow, removed, now)
        await uow.audit.append(
            audit(
                principal,
                meta,
                "ssh_key.removed",
                ("ssh_key", key_id),
                before=removed.audit_view(),
                after={"allocationsUpdated": changed},
                now=now,
            )
        )
        await uow.commit()
        return removed
