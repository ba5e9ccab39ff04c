"""The platform SSH CA against real PostgreSQL and a real OpenSSH sshd: the private key is only
stored sealed, nodes trusting the CA accept its short-lived certificates for the user they name
and nothing else, and a rotation keeps the old key trusted until every node has the new one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import Conflict, InvalidInput, NotFound
from domain.fleet.ca import CaErrorCode, CaKeyStatus, CertificateRequest, SshCaKey
from domain.fleet.ca_services import create_ca, retire_ca_key, rotate_ca
from domain.ports import UnitOfWork
from domain.secret_services import open_secret
from domain.secrets import SecretPurpose
from infra.crypto.envelope import AesGcmCipher
from infra.crypto.local_kms import LocalKms
from infra.nodes.ssh_ca import AsyncsshCaSigner, SshCertificateAuthority
from tests.support.fleet import seed_node
from tests.support.ssh_node import SshNode, running_node

CIPHER = AesGcmCipher()
SIGNER = AsyncsshCaSigner()
Uow = Callable[[], UnitOfWork]


@pytest.fixture
def kms(tmp_path: Path) -> LocalKms:
    return LocalKms.create(tmp_path / "keys.json")


@pytest.fixture
async def ca(uow: Uow, kms: LocalKms) -> SshCertificateAuthority:
    await create_ca(uow(), kms, CIPHER, SIGNER)
    return SshCertificateAuthority(uow, kms, CIPHER, SIGNER)


def _request(principal: str, key_id: str = "provision:node-7") -> CertificateRequest:
    return CertificateRequest.starting(datetime.now(UTC), [principal], key_id)


async def _certified(ca: SshCertificateAuthority, request: CertificateRequest
                     ) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:  # fmt: skip
    """A fresh client key (in no authorized_keys file) and a certificate for it."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    line = await ca.issue(key.export_public_key().decode(), request)
    return key, asyncssh.import_certificate(line)


async def _logs_in(node: SshNode, key: asyncssh.SSHKey, cert: asyncssh.SSHCertificate) -> bool:
    known = asyncssh.import_known_hosts(f"[{node.host}]:{node.port} {node.host_key_public}\n")
    try:
        async with asyncssh.connect(node.host, node.port, username=node.user,
                                    client_keys=[(key, cert)], known_hosts=known,
                                    agent_path=None, connect_timeout=10) as conn:  # fmt: skip
            result = await conn.run("echo in", check=True)
    except asyncssh.PermissionDenied:
        return False
    return str(result.stdout).strip() == "in"


async def _actions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT action FROM audit_events ORDER BY id"))
        return [row.action for row in rows]


async def test_the_private_key_is_stored_only_sealed(
    uow: Uow, engine: AsyncEngine, kms: LocalKms, ca: SshCertificateAuthority
) -> None:
    async with uow() as tx:
        key = await tx.ssh_ca.current()
        assert key is not None and key.public_key.startswith("ssh-ed25519 ")
        private = await open_secret(tx, kms, CIPHER, key.secret_id,
                                    purpose=SecretPurpose.SSH_CA_KEY)  # fmt: skip
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    body = b"".join(private.splitlines()[1:-1])  # the base64 of the key itself
    rows: list[str] = []  # every column of every row, as PostgreSQL prints it
    async with engine.connect() as conn:
        for table in ("secrets", "ssh_ca_keys"):
            rows += [row[0] for row in await conn.execute(text(f"SELECT t::text FROM {table} t"))]
    dump = "\n".join(rows)
    assert "ssh_ca_key" in dump and key.public_key in dump  # we did read the right rows
    for needle in (private.hex(), body.decode(), body.hex(), "PRIVATE KEY", "50524956415445"):
        assert needle not in dump
    assert list(await ca.public_keys()) == [key.public_key]

    with pytest.raises(Conflict) as again:
        await create_ca(uow(), kms, CIPHER, SIGNER)
    assert again.value.problems[0].code == CaErrorCode.CA_EXISTS
    assert await _actions(engine) == ["ssh_ca.created"]


async def test_a_certificate_logs_in_as_the_user_it_names_and_is_audited(
    tmp_path: Path, engine: AsyncEngine, ca: SshCertificateAuthority
) -> None:
    with running_node(tmp_path / "node", trusted_ca_keys=list(await ca.public_keys())) as node:
        key, cert = await _certified(ca, _request(node.user))
        assert await _logs_in(node, key, cert)
        # sshd logs the certificate's key id and serial; the audit row has the same.
        async with engine.connect() as conn:
            issued = (await conn.execute(text(
                "SELECT after FROM audit_events WHERE action = 'ssh_ca.certificate_issued'"
            ))).one().after  # fmt: skip
        assert issued["keyId"] == "provision:node-7" and issued["principals"] == [node.user]
        log = (node.root / "sshd.log").read_text()
        assert f"ID provision:node-7 (serial {issued['serial']})" in log

        other_key, other_cert = await _certified(ca, _request("someoneelse"))
        assert not await _logs_in(node, other_key, other_cert)

        now = datetime.now(UTC)
        expired = CertificateRequest((node.user,), "provision:node-7",
                                     now - timedelta(minutes=20), now - timedelta(minutes=10))  # fmt: skip
        assert not await _logs_in(node, *await _certified(ca, expired))
        # Refused for those reasons, not another: sshd says why.
        refusals = (node.root / "sshd.log").read_text()
        assert "Certificate invalid: name is not a listed principal" in refusals
        assert "Certificate invalid: expired" in refusals

    with pytest.raises(InvalidInput) as not_a_key:
        await ca.issue("ssh-ed25519 not-base64", _request("u1"))
    assert not_a_key.value.problems[0].code == CaErrorCode.INVALID_CERTIFICATE_REQUEST


async def test_rotation_keeps_the_old_key_trusted_until_every_node_has_the_new_one(
    tmp_path: Path, uow: Uow, engine: AsyncEngine, kms: LocalKms, ca: SshCertificateAuthority
) -> None:
    old_keys = list(await ca.public_keys())
    with running_node(tmp_path / "node", trusted_ca_keys=old_keys) as node:
        old_key, old_cert = await _certified(ca, _request(node.user))
        async with uow() as tx:
            old = await tx.ssh_ca.current()
        assert isinstance(old, SshCaKey)

        new = await rotate_ca(uow(), kms, CIPHER, SIGNER)
        both = list(await ca.public_keys())
        assert both == [new.public_key, old.public_key]
        new_key, new_cert = await _certified(ca, _request(node.user))
        # The node has not been told yet: it refuses the new key's certificates, which is why
        # the old key stays trusted (and retirement waits) until every node is updated.
        assert not await _logs_in(node, new_key, new_cert)
        assert await _logs_in(node, old_key, old_cert)

        node.trust_ca_keys(both)
        assert await _logs_in(node, new_key, new_cert)
        assert await _logs_in(node, old_key, old_cert)  # still trusted meanwhile

        # A registered node not yet given the new key holds the retirement back, by name.
        lagging = await seed_node(uow(), "lagging")
        with pytest.raises(Conflict) as pending:
            await retire_ca_key(uow(), old.id)
        assert pending.value.problems[0].code == CaErrorCode.CA_NODES_NOT_UPDATED
        assert "lagging" in pending.value.problems[0].message
        async with uow() as u:  # as the node's next probe records it (test_node_checks.py)
            await u.nodes.save(replace(lagging, ca_keys=tuple(both), version=lagging.version + 1))
            await u.commit()
        with pytest.raises(Conflict) as current:
            await retire_ca_key(uow(), new.id)
        assert current.value.problems[0].code == CaErrorCode.CA_KEY_CURRENT
        assert list(await ca.public_keys()) == both

        retired = await retire_ca_key(uow(), old.id)
        assert retired.status is CaKeyStatus.RETIRED and retired.retired_at is not None
        assert list(await ca.public_keys()) == [new.public_key]
        node.trust_ca_keys(list(await ca.public_keys()))
        assert not await _logs_in(node, old_key, old_cert)
        assert await _logs_in(node, new_key, new_cert)

    with pytest.raises(NotFound):
        await retire_ca_key(uow(), old.id)
    assert await _actions(engine) == [
        "ssh_ca.created", "ssh_ca.certificate_issued", "ssh_ca.rotated",
        "ssh_ca.certificate_issued", "ssh_ca.retired",
    ]  # fmt: skip
