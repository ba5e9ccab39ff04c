"""The Linux account an allocation gets on its node, as the node operations see it.

The user name is made by the platform from the allocation id and checked against a strict
pattern; nothing a user types becomes part of a command. Access to GPUs is by group: GPU N's
device file belongs to group `<gpu_group_prefix>N` (set up at bootstrap), and the account joins
exactly the groups of its GPUs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,15}$")


def account_name(prefix: str, allocation_id: int) -> str:
    """`<prefix><id>`, e.g. "gc42": unique per allocation, never reused (ids are not)."""
    if not _PREFIX.match(prefix) or isinstance(allocation_id, bool) or allocation_id < 1:
        raise ValueError("account names come from a lowercase prefix and a positive id")
    name = f"{prefix}{allocation_id}"
    if not _USER.match(name):
        raise ValueError(f"{name!r} is not a valid Linux user name")
    return name


def is_account_name(prefix: str, name: str) -> bool:
    """Whether `name` is one of ours (the reconciler removes only those)."""
    return name.startswith(prefix) and name[len(prefix) :].isdigit() and bool(_USER.match(name))


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """Everything `ensure_account` makes true on the node."""

    username: str
    public_keys: Sequence[str]  # OpenSSH "type base64" lines: the user's own keys
    gpu_indices: Sequence[int]  # exactly these GPUs; CUDA_VISIBLE_DEVICES lists them too


@dataclass(frozen=True, slots=True)
class AccountState:
    """A platform account as found on a node, for the reconciler."""

    username: str
    gpu_indices: tuple[int, ...]  # from its GPU group memberships
