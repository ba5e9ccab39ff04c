"""SSH CA use cases: create the CA, rotate and retire its keys, issue user certificates.

The private key is made by the signer, sealed at once (`seal`, purpose SSH_CA_KEY) and opened
only to sign. Every change and every certificate issued is written to the audit log.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from domain.audit.records import CLI, RequestMeta, audit
from domain.errors import Conflict, NotFound, Problem
from domain.fleet.ca import (
    CaErrorCode,
    CaKeyStatus,
    CertificateRequest,
    GeneratedCaKey,
    SshCaKey,
    ca_keys_of,
    ca_not_found,
)
from domain.identity.principal import SYSTEM, Principal
from domain.ports import CaSigner, KeyService, SecretCipher, UnitOfWork
from domain.secret_services import open_secret, seal
from domain.secrets import SecretPurpose


def _view(key: SshCaKey) -> dict[str, object]:
    return {"status": str(key.status), "publicKey": key.public_key}


async def _store(
    uow: UnitOfWork, kms: KeyService, cipher: SecretCipher, generated: GeneratedCaKey
) -> SshCaKey:
    ref = await seal(uow, kms, cipher, SecretPurpose.SSH_CA_KEY, generated.private_key)
    return await uow.ssh_ca.add(ref.id, generated.public_key, CaKeyStatus.CURRENT)


async def create_ca(
    uow: UnitOfWork, kms: KeyService, cipher: SecretCipher, signer: CaSigner,
    actor: Principal = SYSTEM, meta: RequestMeta = CLI,
) -> SshCaKey:  # fmt: skip
    """Make the first CA key. Refused (CA_EXISTS) once a CA exists: use `rotate_ca`."""
    async with uow:
        await uow.ssh_ca.lock()
        if await uow.ssh_ca.current() is not None:
            raise Conflict(Problem(CaErrorCode.CA_EXISTS,
                                   "The SSH CA exists already; rotate it instead."))  # fmt: skip
        key = await _store(uow, kms, cipher, signer.generate_key())
        await uow.audit.append(audit(actor, meta, "ssh_ca.created", ("ssh_ca_key", key.id),
                                     after=_view(key)))  # fmt: skip
        await uow.commit()
        return key


async def rotate_ca(
    uow: UnitOfWork, kms: KeyService, cipher: SecretCipher, signer: CaSigner,
    actor: Principal = SYSTEM, meta: RequestMeta = CLI,
) -> SshCaKey:  # fmt: skip
    """Make a new current key; the old current one becomes previous and stays trusted until
    `retire_ca_key`. Nodes must be given the new `trusted_public_keys` before that."""
    async with uow:
        await uow.ssh_ca.lock()
        old = await uow.ssh_ca.current()
        if old is None:
            raise ca_not_found()
        generated = signer.generate_key()
        ca_keys_of(list(await uow.ssh_ca.trusted())).rotate(generated.public_key)
        await uow.ssh_ca.set_status(old.id, CaKeyStatus.PREVIOUS)
        new = await _store(uow, kms, cipher, generated)
        await uow.audit.append(audit(actor, meta, "ssh_ca.rotated", ("ssh_ca_key", new.id),
                                     before={"current": old.id},
                                     after={"current": new.id, **_view(new)}))  # fmt: skip
        await uow.commit()
        return new


async def retire_ca_key(
    uow: UnitOfWork, key_id: int, actor: Principal = SYSTEM, meta: RequestMeta = CLI,
) -> SshCaKey:  # fmt: skip
    """Stop trusting a previous key. Refused (CA_NODES_NOT_UPDATED) while any node that is
    not retired has not been given the current key (the health probe gives it), and for the
    current key itself (CA_KEY_CURRENT)."""
    async with uow:
        await uow.ssh_ca.lock()
        key = await uow.ssh_ca.get(key_id)
        if key is None or key.status is CaKeyStatus.RETIRED:
            raise NotFound(Problem(CaErrorCode.CA_KEY_NOT_FOUND,
                                   f"No trusted SSH CA key with id {key_id}.", "key"))  # fmt: skip
        keys = ca_keys_of(list(await uow.ssh_ca.trusted()))
        lagging = await uow.nodes.lagging_ca(keys.current)
        keys.retire(key.public_key, lagging=lagging)
        retired = await uow.ssh_ca.set_status(key.id, CaKeyStatus.RETIRED)
        await uow.audit.append(audit(actor, meta, "ssh_ca.retired", ("ssh_ca_key", key.id),
                                     before={"status": str(key.status)},
                                     after={"status": str(retired.status)}))  # fmt: skip
        await uow.commit()
        return retired


async def trusted_public_keys(uow: UnitOfWork) -> Sequence[str]:
    """What a node's `TrustedUserCAKeys` file must hold, current key first."""
    async with uow:
        return ca_keys_of(list(await uow.ssh_ca.trusted())).trusted_keys()


async def issue_certificate(
    uow: UnitOfWork, kms: KeyService, cipher: SecretCipher, signer: CaSigner,
    user_public_key: str, request: CertificateRequest,
    actor: Principal = SYSTEM, meta: RequestMeta = CLI,
) -> str:  # fmt: skip
    """Sign `user_public_key` with the current CA key, as `request` allows; an OpenSSH
    certificate line. The audit row names the key id, principals, window and serial (sshd logs
    the same key id and serial on login), never key material."""
    serial = secrets.randbits(63)
    async with uow:
        key = await uow.ssh_ca.current()
        if key is None:
            raise ca_not_found()
        private_key = await open_secret(uow, kms, cipher, key.secret_id,
                                        purpose=SecretPurpose.SSH_CA_KEY)  # fmt: skip
        certificate = signer.sign_user_certificate(private_key, user_public_key, request, serial)
        await uow.audit.append(audit(actor, meta, "ssh_ca.certificate_issued",
                                     ("ssh_ca_key", key.id), after={
                                         "keyId": request.key_id,
                                         "principals": list(request.principals),
                                         "validAfter": _iso(request.valid_after),
                                         "validBefore": _iso(request.valid_before),
                                         "forceCommand": request.force_command,
                                         "permitPty": request.permit_pty,
                                         "serial": str(serial)}))  # fmt: skip
        await uow.commit()
        return certificate


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()
