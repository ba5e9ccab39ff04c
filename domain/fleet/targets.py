"""How the platform reaches a node: its address, pinned host key and admin login."""

from __future__ import annotations

from domain.fleet.kit import FleetKit
from domain.fleet.nodes import Node, NodeAuth
from domain.fleet.remote import CaLogin, KeyLogin, NodeTarget
from domain.ports import UnitOfWork
from domain.secret_services import open_secret
from domain.secrets import SecretPurpose


async def node_target(kit: FleetKit, uow: UnitOfWork, node: Node, key_id: str) -> NodeTarget:
    """The node's target, its sealed key opened in the caller's transaction, or a CA login
    whose certificate carries `key_id` (shown in sshd's log and our audit log)."""
    login: KeyLogin | CaLogin
    if node.auth is NodeAuth.KEY and node.credential_secret_id is not None:
        key = await open_secret(uow, kit.kms, kit.cipher, node.credential_secret_id,
                                purpose=SecretPurpose.NODE_ADMIN_KEY)  # fmt: skip
        login = KeyLogin(key)
    else:
        login = CaLogin(key_id=key_id)
    return NodeTarget(node.id, node.host, node.port, node.ssh_user, login, node.host_key)
