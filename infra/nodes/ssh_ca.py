"""The platform SSH CA on asyncssh: ed25519 CA keys and short-lived user certificates.

`AsyncsshCaSigner` does the key arithmetic (the `CaSigner` port) and stores nothing.
`SshCertificateAuthority` is the `CertificateAuthority` port: each call runs one CA use case of
`domain.fleet.ca_services` in a unit of work of its own, so the private key is read only sealed
from the database, opened for one signature, and every certificate is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncssh

from domain.errors import InvalidInput, Problem
from domain.fleet.ca import CaErrorCode, CertificateRequest, GeneratedCaKey
from domain.fleet.ca_services import issue_certificate, trusted_public_keys
from domain.ports import CaSigner, KeyService, SecretCipher, UnitOfWork

CA_KEY_TYPE = "ssh-ed25519"


def _line(data: bytes) -> str:
    return data.decode("ascii").strip()


class AsyncsshCaSigner:
    def generate_key(self) -> GeneratedCaKey:
        key = asyncssh.generate_private_key(CA_KEY_TYPE)
        return GeneratedCaKey(
            public_key=_line(key.export_public_key()),
            private_key=key.export_private_key(),  # OpenSSH format; sealed by the caller
        )

    def sign_user_certificate(
        self, ca_private_key: bytes, user_public_key: str, request: CertificateRequest,
        serial: int,
    ) -> str:  # fmt: skip
        try:
            user_key = asyncssh.import_public_key(user_public_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise InvalidInput(Problem(CaErrorCode.INVALID_CERTIFICATE_REQUEST,
                                       "That is not an OpenSSH public key.", "publicKey")) from exc  # fmt: skip
        ca_key = asyncssh.import_private_key(ca_private_key)
        certificate = ca_key.generate_user_certificate(
            user_key, request.key_id, serial=serial, principals=list(request.principals),
            valid_after=request.valid_after, valid_before=request.valid_before,
            force_command=request.force_command, permit_pty=request.permit_pty,
            permit_x11_forwarding=False, permit_agent_forwarding=False,
            permit_port_forwarding=False, permit_user_rc=False,
            comment=request.key_id,
        )  # fmt: skip
        return _line(certificate.export_certificate())


class SshCertificateAuthority:
    """The CA as provisioning and terminals call it (`domain.ports.CertificateAuthority`)."""

    def __init__(
        self, uow: Callable[[], UnitOfWork], kms: KeyService, cipher: SecretCipher,
        signer: CaSigner | None = None,
    ) -> None:  # fmt: skip
        self._uow = uow
        self._kms = kms
        self._cipher = cipher
        self.signer: CaSigner = signer or AsyncsshCaSigner()

    async def public_keys(self) -> Sequence[str]:
        return await trusted_public_keys(self._uow())

    async def issue(self, public_key_openssh: str, request: CertificateRequest) -> str:
        return await issue_certificate(self._uow(), self._kms, self._cipher, self.signer,
                                       public_key_openssh, request)  # fmt: skip
