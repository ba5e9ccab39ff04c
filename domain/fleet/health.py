"""Judging a node's readings: what is wrong with it, if anything, and when to look again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.fleet.inventory import GpuInfo, NodeGpu, canonical_model
from domain.fleet.nodes import NodeFacts, Reason, ReasonCode
from domain.retry import doubling


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    probe_interval: timedelta = timedelta(seconds=60)
    max_backoff: timedelta = timedelta(minutes=15)
    lease: timedelta = timedelta(minutes=5)  # a claimed probe not finished by then is redone
    max_temperature_c: int = 85
    min_disk_free_mib: int = 10 * 1024
    # Allocations on a node unreachable longer than this stop being billed (allocations issue).
    unreachable_grace: timedelta = timedelta(minutes=5)


def inventory_problem(gpus: Sequence[GpuInfo]) -> Reason | None:
    """A node must have GPUs, all of one model, to be offered."""
    if not gpus:
        return Reason(ReasonCode.NO_GPUS, "nvidia-smi lists no GPUs.")
    models = sorted({canonical_model(g.model) for g in gpus})
    if len(models) > 1:
        return Reason(ReasonCode.MIXED_GPU_MODELS,
                      f"GPUs of several models ({', '.join(models)}); one model per node.")  # fmt: skip
    return None


def assess(
    known: Sequence[NodeGpu], gpus: Sequence[GpuInfo], facts: NodeFacts, policy: HealthPolicy
) -> list[Reason]:
    """Everything wrong with the readings, worst first; an empty list is healthy. A GPU the
    inventory recorded but the probe no longer sees is lost, whatever else looks fine."""
    problems: list[Reason] = []
    seen = {g.uuid for g in gpus}
    lost = [g for g in known if g.present and g.uuid not in seen]
    if lost:
        names = ", ".join(f"{g.index} ({g.uuid})" for g in lost)
        problems.append(Reason(ReasonCode.GPU_MISSING, f"GPU {names} no longer reported."))
    ecc = [g for g in gpus if g.uncorrected_ecc_errors]
    if ecc:
        detail = ", ".join(f"GPU {g.index}: {g.uncorrected_ecc_errors}" for g in ecc)
        problems.append(Reason(ReasonCode.ECC_ERRORS, f"Uncorrected ECC errors ({detail})."))
    hot = [g for g in gpus
           if g.temperature_c is not None and g.temperature_c > policy.max_temperature_c]  # fmt: skip
    if hot:
        detail = ", ".join(f"GPU {g.index}: {g.temperature_c} C" for g in hot)
        problems.append(Reason(ReasonCode.GPU_TOO_HOT,
                               f"Above {policy.max_temperature_c} C ({detail})."))  # fmt: skip
    if facts.disk_free_mib < policy.min_disk_free_mib:
        problems.append(Reason(ReasonCode.DISK_LOW,
                               f"{facts.disk_free_mib} MiB free, below "
                               f"{policy.min_disk_free_mib} MiB."))  # fmt: skip
    return problems


def backoff(failures: int, policy: HealthPolicy) -> timedelta:
    """Wait before the next probe of a node that failed `failures` times in a row: the probe
    interval, doubling per failure, capped."""
    return doubling(policy.probe_interval, failures, policy.max_backoff)


def billing_paused(unreachable_since: datetime | None, now: datetime, policy: HealthPolicy) -> bool:
    """Whether work on a node stops being billed now: it has been unreachable for longer than
    the grace period (a short blip costs the user nothing to forgive, a long outage is not
    theirs to pay for). Metering of allocations asks this per node."""
    return unreachable_since is not None and now - unreachable_since > policy.unreachable_grace
