"""What bootstrap and the probes prove on a node rather than assume: that a certificate the
platform CA issues now logs in (the running sshd trusts the CA, not only its config on disk),
and that each GPU's device opens for its own group only."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from domain.fleet.kit import FleetKit
from domain.fleet.nodes import Reason, ReasonCode
from domain.fleet.remote import (
    CaLogin,
    NodeAuthRefused,
    NodeCommandFailed,
    NodeFailure,
    NodePrep,
    NodeTarget,
    NodeUnreachable,
)
from domain.ports import NodeSession

# sshd re-executes itself on a reload: its listener is back within moments.
_LOGIN_TRIES = 4
_LOGIN_PAUSE = 0.25  # seconds, doubled after each refused connection


async def cert_login(
    kit: FleetKit, node_id: int, target: NodeTarget, host_key: str, prep: NodePrep
) -> str:
    """Log in with a certificate the platform CA issues now: the running sshd, not only its
    config, trusts the CA. Returns the user it logged in as."""
    if not prep.ca_public_keys:
        raise NodeFailure(
            "The platform has no SSH CA yet (`gpucloud ca init`): no certificate "
            "login can show that the node trusts it.",
            ReasonCode.CERT_LOGIN_REFUSED,
        )
    checked = replace(
        target, login=CaLogin(key_id=f"fleet:node-{node_id}:cert-login"), host_key=host_key
    )
    pause = _LOGIN_PAUSE
    for attempt in range(1, _LOGIN_TRIES + 1):
        try:
            async with kit.connector.session(checked) as session:
                await session.os_info()  # the login runs commands, not only authenticates
            return checked.user
        except NodeAuthRefused as exc:
            raise NodeFailure(
                f"sshd refused a fresh platform certificate for {checked.user}: "
                f"the running sshd has not loaded the CA keys ({exc})",
                ReasonCode.CERT_LOGIN_REFUSED,
            ) from None
        except NodeUnreachable:
            if attempt == _LOGIN_TRIES:
                raise
            await asyncio.sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")


async def isolation(session: NodeSession, prep: NodePrep) -> Reason | None:
    """Why the GPUs are not isolated, or None. When broken, the node is prepared again (a driver
    reload may have reset the modes), so the next probe finds it mended or still broken."""
    if not prep.gpu_indices:
        return None
    try:
        await session.check_isolation(prep.gpu_indices)
    except NodeCommandFailed as exc:
        if exc.code is not ReasonCode.ISOLATION_BROKEN:
            raise
        try:
            await session.prepare(prep)
        except NodeCommandFailed as again:  # still broken, and said so first
            return Reason(exc.code, f"{exc}; setting them again failed: {again}")
        return Reason(exc.code, f"{exc}; device permissions set again, the next probe checks")
    return None
