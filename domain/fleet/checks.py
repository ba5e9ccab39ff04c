"""Looking at a node over SSH: bootstrap (first contact, inventory, preparation) and the
periodic health probe. Both end in one `_settle` that locks the node, applies the outcome
through `transition` and stores it with its event, so an admin's cordon or retire made while
we were talking to the node is never overwritten.

Nothing here destroys work: an unreachable node is marked, alerted and probed again with
backoff; a changed host key quarantines the node and nothing talks to it until an admin acts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from domain.audit.records import WORKER, audit
from domain.errors import Conflict
from domain.fleet.changes import store
from domain.fleet.health import assess, backoff, inventory_problem
from domain.fleet.inventory import GpuInfo, NodeGpu, canonical_model
from domain.fleet.kit import FleetKit
from domain.fleet.nodes import (
    Node,
    NodeFacts,
    NodeHealth,
    NodeState,
    NodeTrigger,
    Reason,
    ReasonCode,
    probed,
    transition,
)
from domain.fleet.proofs import cert_login, isolation
from domain.fleet.records import BootstrapStep, NewNodeEvent, NodeEventKind
from domain.fleet.remote import (
    HostKeyMismatch,
    NodeFailure,
    NodePrep,
    NodeTarget,
    OsInfo,
    Prepared,
)
from domain.fleet.targets import node_target
from domain.identity.principal import SYSTEM
from domain.leases import under_lease
from domain.ports import NodeSession, UnitOfWork

T = TypeVar("T")
log = logging.getLogger(__name__)

_UNREACHABLE_CODES = (ReasonCode.UNREACHABLE, ReasonCode.AUTH_REFUSED)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What looking at the node found, before it is applied."""

    trigger: NodeTrigger
    reason: Reason | None = None
    gpus: Sequence[GpuInfo] | None = None  # a fresh inventory (bootstrap only)
    facts: NodeFacts | None = None
    host_key: str | None = None  # met at first contact, to pin
    ca_keys: tuple[str, ...] | None = None  # CA keys the node was just given to trust


async def check_node(kit: FleetKit, node_id: int, token: int | None = None) -> Node | None:
    """Bootstrap the node if it needs it, else probe it, under the node's lease `token` (the
    Dispatcher's claim; None: taken here if nobody holds it; domain/leases.py). Returns the
    node as stored after; None if this worker does not hold the lease. Safe to run twice: each
    run reads the node afresh, and its outcome is stored only under the lease it ran with."""
    return await under_lease(
        kit.uow,
        lambda uow: uow.nodes,
        node_id,
        token,
        kit.policy.lease,
        f"node {node_id}",
        lambda lease: _check(kit, node_id, lease),
    )


async def _check(kit: FleetKit, node_id: int, lease: int) -> Node | None:
    uow = kit.uow()
    async with uow:
        node = await uow.nodes.get(node_id)
        if node is None or not probed(node.state):
            return node
        if node.lease_token != lease:
            return None  # revoked between taking the lease and reading the node
        target = await node_target(kit, uow, node, f"fleet:node-{node.id}")
        known = (await uow.nodes.gpus([node_id])).get(node_id, [])
    if node.state is NodeState.BOOTSTRAPPING or not node.bootstrapped:
        outcome = await _bootstrap(kit, node, target, lease)
    else:
        outcome = await _probe(kit, node, target, known, lease)
    return await _settle(kit, node_id, outcome, lease)


def _failed(exc: NodeFailure) -> Outcome:
    if isinstance(exc, HostKeyMismatch) or exc.code is ReasonCode.HOST_KEY_MISMATCH:
        # (also a pin that no longer parses: nothing may talk to the node until an admin acts)
        return Outcome(NodeTrigger.HOST_KEY_MISMATCH, Reason(exc.code, str(exc)))
    trigger = (NodeTrigger.PROBE_UNREACHABLE if exc.code in _UNREACHABLE_CODES
               else NodeTrigger.PROBE_UNHEALTHY)  # fmt: skip
    return Outcome(trigger, Reason(exc.code, str(exc)))


async def _event(kit: FleetKit, node_id: int, kind: NodeEventKind, step: BootstrapStep,
                 message: str, reason: Reason | None = None) -> None:  # fmt: skip
    uow = kit.uow()
    async with uow:
        await uow.nodes.add_event(NewNodeEvent(
            node_id, kind, message, step=step,
            reason_code=None if reason is None else str(reason.code)))  # fmt: skip
        await uow.commit()


class _StepFailed(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


async def _step(kit: FleetKit, node: Node, step: BootstrapStep, started: str,
                work: Callable[[], Awaitable[T]], done: Callable[[T], str]) -> T:  # fmt: skip
    """Run one bootstrap step between a started and a succeeded/failed event, each committed
    at once so the admin watches the progress."""
    await _event(kit, node.id, NodeEventKind.STEP_STARTED, step, started)
    try:
        result = await work()
    except NodeFailure as exc:
        outcome = _failed(exc)
        await _event(kit, node.id, NodeEventKind.STEP_FAILED, step, str(exc), outcome.reason)
        raise _StepFailed(outcome) from exc
    await _event(kit, node.id, NodeEventKind.STEP_SUCCEEDED, step, done(result))
    return result


def _check_os(os: OsInfo) -> OsInfo:
    if os.system != "Linux":
        raise NodeFailure(f"{os.system} is not Linux; nodes run Linux.", ReasonCode.OS_UNSUPPORTED)
    return os


def _check_inventory(gpus: list[GpuInfo]) -> list[GpuInfo]:
    problem = inventory_problem(gpus)
    if problem is not None:
        raise NodeFailure(problem.message, problem.code)
    return gpus


async def _bootstrap(kit: FleetKit, node: Node, target: NodeTarget, lease: int) -> Outcome:
    # One exit stack: the session, once connected, is closed however the steps end.
    async with AsyncExitStack() as open_session:
        try:
            session: NodeSession = await _step(
                kit, node, BootstrapStep.CONNECT, f"connecting to {node.host}:{node.port}",
                lambda: open_session.enter_async_context(kit.connector.session(target)),
                lambda s: f"connected; host key {kit.codec.fingerprint(s.host_key)}")  # fmt: skip
        except _StepFailed as failed:
            return failed.outcome
        try:
            os = await _step(kit, node, BootstrapStep.OS, "checking the operating system",
                             lambda: _os(session), lambda o: f"{o.os_id} {o.os_version}, "
                             f"kernel {o.kernel}")  # fmt: skip
            gpus = await _step(kit, node, BootstrapStep.GPUS, "reading GPUs with nvidia-smi",
                               lambda: _gpus(session), _describe_gpus)  # fmt: skip
            facts = await _step(kit, node, BootstrapStep.FACTS, "reading CPU, memory and disk",
                                lambda: session.facts(os),
                                lambda f: f"{f.cpus} CPUs, {f.ram_mib} MiB RAM, "
                                f"{f.disk_free_mib}/{f.disk_total_mib} MiB disk free")  # fmt: skip
            prep = await _prep(kit, node.id, gpus, lease)
            await _prepare(kit, node, session, prep)
            await _step(
                kit,
                node,
                BootstrapStep.ISOLATION,
                "checking that each GPU opens for its own group only",
                lambda: session.check_isolation(prep.gpu_indices),
                lambda _: f"each of {len(gpus)} GPUs opens for its own group only",
            )
            await _step(
                kit,
                node,
                BootstrapStep.CERT_LOGIN,
                "logging in with a fresh platform certificate",
                lambda: cert_login(kit, node.id, target, session.host_key, prep),
                lambda user: f"a fresh platform certificate logs in as {user}",
            )
        except _StepFailed as failed:
            # Connected: the key met is pinned, whatever failed after.
            return replace(failed.outcome, host_key=session.host_key)
    problems = assess([], gpus, facts, kit.policy)
    trusted = tuple(prep.ca_public_keys)
    if problems:
        return Outcome(NodeTrigger.PROBE_UNHEALTHY, _merge(problems), gpus, facts,
                       session.host_key, trusted)  # fmt: skip
    return Outcome(NodeTrigger.BOOTSTRAPPED, None, gpus, facts, session.host_key, trusted)


DRIVER_RELOAD = (
    "The NVIDIA driver option NVreg_ModifyDeviceFiles=0 is written but not in effect: reload "
    "the nvidia kernel modules (no GPU in use) or reboot the node. Until then a driver reload "
    "may reset the GPU device permissions; every probe checks them."
)


async def _prepare(kit: FleetKit, node: Node, session: NodeSession, prep: NodePrep) -> Prepared:
    prepared = await _step(
        kit,
        node,
        BootstrapStep.PREPARE,
        "preparing: platform group, GPU device permissions, NVIDIA driver option, CA trust",
        lambda: session.prepare(prep),
        lambda _: "prepared",
    )
    if prepared.driver_reload_needed:  # the operator's to do; it does not block the node
        await _event(
            kit, node.id, NodeEventKind.ACTION_NEEDED, BootstrapStep.PREPARE, DRIVER_RELOAD
        )
    return prepared


async def _os(session: NodeSession) -> OsInfo:
    return _check_os(await session.os_info())


async def _gpus(session: NodeSession) -> list[GpuInfo]:
    return _check_inventory(await session.gpus())


def _describe_gpus(gpus: list[GpuInfo]) -> str:
    first = gpus[0]
    return (f"{len(gpus)} x {first.model}, {first.memory_mib} MiB, driver "
            f"{first.driver_version}, MIG {'on' if first.mig_enabled else 'off'}")  # fmt: skip


async def _trusted(kit: FleetKit) -> tuple[str, ...]:
    uow = kit.uow()
    async with uow:
        return tuple(k.public_key for k in await uow.ssh_ca.trusted())


async def _prep(
    kit: FleetKit, node_id: int, gpus: Sequence[GpuInfo | NodeGpu], lease: int
) -> NodePrep:
    """What preparing makes true, fenced with the check's lease generation: the node refuses
    it once a newer check has been there."""
    return NodePrep(
        kit.platform_group,
        [g.index for g in gpus],
        list(await _trusted(kit)),
        fence=lease,
        node_id=node_id,
    )


async def _probe(
    kit: FleetKit, node: Node, target: NodeTarget, recorded: Sequence[NodeGpu], lease: int
) -> Outcome:
    """Read the node's health; and when the CA keys it trusts are not the platform's (after a
    rotation), prepare it again so it does, which is what lets the old key be retired."""
    prep = await _prep(kit, node.id, [g for g in recorded if g.present], lease)
    refresh = set(prep.ca_public_keys) != set(node.ca_keys)
    try:
        async with kit.connector.session(target) as session:
            os = await session.os_info()
            gpus = await session.gpus()
            facts = await session.facts(os)
            if refresh:
                await session.prepare(prep)
            broken = await isolation(session, prep)
    except NodeFailure as exc:
        return _failed(exc)
    trusted = tuple(prep.ca_public_keys) if refresh else None
    problems = assess(recorded, gpus, facts, kit.policy)
    if broken is not None:  # the worst: another user's GPU is open to them
        problems.insert(0, broken)
    if problems:
        return Outcome(NodeTrigger.PROBE_UNHEALTHY, _merge(problems), facts=facts,
                       ca_keys=trusted)  # fmt: skip
    return Outcome(NodeTrigger.PROBE_OK, facts=facts, ca_keys=trusted)


def _merge(problems: list[Reason]) -> Reason:
    """The worst problem's code, every problem's message."""
    return Reason(problems[0].code, " ".join(p.message for p in problems))


_HEALTH = {NodeTrigger.BOOTSTRAPPED: NodeHealth.OK, NodeTrigger.PROBE_OK: NodeHealth.OK,
           NodeTrigger.PROBE_UNHEALTHY: NodeHealth.UNHEALTHY,
           NodeTrigger.PROBE_UNREACHABLE: NodeHealth.UNREACHABLE}  # fmt: skip


async def _settle(kit: FleetKit, node_id: int, outcome: Outcome, lease: int) -> Node | None:
    now = kit.clock()
    uow = kit.uow()
    async with uow:
        before = await uow.nodes.get(node_id, for_update=True)
        if before is None or not probed(before.state):
            return before  # retired or quarantined while we were away: leave it be
        if before.lease_token != lease:  # superseded: a newer check owns the outcome
            log.info(
                "node %s: outcome of generation %s discarded (now %s)",
                node_id,
                lease,
                before.lease_token,
            )
            return None
        node = _observed(before, outcome, now, kit)
        if outcome.gpus is not None:  # `probed` above: never a quarantined node's report
            await _record_inventory(uow, before, outcome.gpus)
        try:
            after = transition(node, outcome.trigger, now, outcome.reason)
        except Conflict:
            after = replace(node, version=node.version + 1, updated_at=now)
        if node.host_key is not None and before.host_key is None:
            await _pinned(kit, uow, node)
        saved = await store(uow, before, after, f"fleet.node.{outcome.trigger}", now=now)
        await uow.commit()
        return saved


def _observed(node: Node, outcome: Outcome, now: datetime, kit: FleetKit) -> Node:
    """The node with what the look found, before any change of state."""
    health = _HEALTH.get(outcome.trigger, node.health)
    failures = node.probe_failures + 1 if health is NodeHealth.UNREACHABLE else 0
    changes: dict[str, object] = {
        "health": health, "last_probe_at": now, "probe_failures": failures,
        "unreachable_since": (node.unreachable_since or now) if health is NodeHealth.UNREACHABLE
        else None,
        "next_probe_at": None if outcome.trigger is NodeTrigger.HOST_KEY_MISMATCH
        else now + backoff(failures, kit.policy),
    }  # fmt: skip
    if outcome.facts is not None:
        changes["facts"] = outcome.facts
    if outcome.ca_keys is not None:
        changes["ca_keys"] = outcome.ca_keys
    if outcome.host_key is not None and node.host_key is None:
        changes["host_key"] = outcome.host_key
    if outcome.gpus:
        changes.update(gpu_model=canonical_model(outcome.gpus[0].model),
                       gpu_count=len(outcome.gpus), bootstrapped_at=now)  # fmt: skip
    return replace(node, **changes)  # type: ignore[arg-type]


async def _record_inventory(uow: UnitOfWork, node: Node, gpus: Sequence[GpuInfo]) -> None:
    known = (await uow.nodes.gpus([node.id])).get(node.id, [])
    await uow.nodes.record_gpus(node.id, gpus)
    before = {(g.index, g.uuid) for g in known if g.present}
    after = {(g.index, g.uuid) for g in gpus}
    if before and before != after:
        await uow.nodes.add_event(NewNodeEvent(
            node.id, NodeEventKind.INVENTORY_CHANGED,
            f"GPUs changed: {len(before)} -> {len(after)}; gone "
            f"{sorted(i for i, _ in before - after)}, new {sorted(i for i, _ in after - before)}",
            state=node.state))  # fmt: skip


async def _pinned(kit: FleetKit, uow: UnitOfWork, node: Node) -> None:
    """Trust on first use, said out loud: the admin sees which key was pinned and can compare
    it with the one the machine really has."""
    assert node.host_key is not None
    fingerprint = kit.codec.fingerprint(node.host_key)
    await uow.nodes.add_event(NewNodeEvent(
        node.id, NodeEventKind.HOST_KEY_PINNED,
        f"host key recorded at first contact: {fingerprint}; check it against the machine",
        state=node.state))  # fmt: skip
    await uow.audit.append(audit(SYSTEM, WORKER, "fleet.node.host_key_pinned", ("node", node.id),
                                 after={"hostKey": fingerprint}))  # fmt: skip
