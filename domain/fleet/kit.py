"""Everything the fleet's use cases need from outside, built once by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from domain.fleet.health import HealthPolicy
from domain.ports import KeyService, NodeConnector, SecretCipher, SshKeyCodec, UnitOfWork

if TYPE_CHECKING:
    from domain.fleet.decommission import NodeDecommissioner


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FleetKit:
    uow: Callable[[], UnitOfWork]
    kms: KeyService
    cipher: SecretCipher
    codec: SshKeyCodec
    connector: NodeConnector
    policy: HealthPolicy = field(default_factory=HealthPolicy)
    platform_group: str = "gpucloud"  # the Linux group every allocation user joins
    clock: Callable[[], datetime] = _now
    decommissioner: NodeDecommissioner | None = None  # retireNode cleans the machine with it
