"""`gpucloud ca init|rotate|retire|status`: the platform's SSH user CA, whose key nodes trust
(`TrustedUserCAKeys`) so the platform logs in with short-lived certificates. The private key is
stored only sealed (GPUCLOUD_KMS_KEY_FILE's KMS wraps its data key)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from domain.errors import DomainError
from domain.fleet.ca import SshCaKey
from domain.fleet.ca_services import create_ca, retire_ca_key, rotate_ca
from gpucloud.config import key_service_or_exit, run_with_uow, settings_or_exit
from infra.crypto.envelope import AesGcmCipher
from infra.crypto.local_kms import KeyFileError
from infra.db.uow import SqlUnitOfWork
from infra.nodes.keys import AsyncsshKeyCodec
from infra.nodes.ssh_ca import AsyncsshCaSigner


def _fail(action: str, exc: Exception) -> int:
    problems = exc.problems if isinstance(exc, DomainError) else None
    for line in [f"{p.message} [{p.code}]" for p in problems] if problems else [str(exc)]:
        print(f"gpucloud ca {action}: error: {line}", file=sys.stderr)
    return 2


def _describe(key: SshCaKey) -> str:
    return f"{key.id:>4}  {key.status:<8}  {AsyncsshKeyCodec().fingerprint(key.public_key)}"


def _changed(action: str, make: Callable[..., object]) -> int:
    settings = settings_or_exit(needs=("DATABASE_URL",))
    kms = key_service_or_exit(settings, f"`gpucloud ca {action}`")

    async def work(uow: Callable[[], SqlUnitOfWork]) -> object:
        return await make(uow(), kms, AesGcmCipher(), AsyncsshCaSigner())  # type: ignore[misc]

    try:
        key = run_with_uow(work, settings)
    except (KeyFileError, DomainError) as exc:
        return _fail(action, exc)
    assert isinstance(key, SshCaKey)
    print(f"current CA key {key.id}: {AsyncsshKeyCodec().fingerprint(key.public_key)}")
    print(key.public_key)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    return _changed("init", create_ca)


def cmd_rotate(args: argparse.Namespace) -> int:
    code = _changed("rotate", rotate_ca)
    if code == 0:
        print("The previous key stays trusted; each node's next probe gives it the new one. "
              "`gpucloud ca status` shows which nodes are still waiting.")  # fmt: skip
    return code


def cmd_retire(args: argparse.Namespace) -> int:
    settings = settings_or_exit(needs=("DATABASE_URL",))
    try:
        key = run_with_uow(lambda uow: retire_ca_key(uow(), args.key_id), settings)
    except DomainError as exc:
        return _fail("retire", exc)
    print(f"retired CA key {key.id}; nodes stop trusting it at their next probe")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_or_exit(needs=("DATABASE_URL",))

    async def work(uow: Callable[[], SqlUnitOfWork]) -> tuple[Sequence[SshCaKey], Sequence[str]]:
        async with uow() as u:
            trusted = await u.ssh_ca.trusted()
            lagging = await u.nodes.lagging_ca(trusted[0].public_key) if trusted else []
            return trusted, lagging

    trusted, lagging = run_with_uow(work, settings)
    if not trusted:
        print("gpucloud ca status: error: no SSH CA yet; run `gpucloud ca init` [CA_NOT_FOUND]",
              file=sys.stderr)  # fmt: skip
        return 1
    for key in trusted:
        print(_describe(key))
    if lagging:
        print(f"nodes not yet trusting the current key: {', '.join(lagging)}")
    else:
        print("every node trusts the current key")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = sub.add_parser(
        "ca", help="manage the platform's SSH certificate authority",
        description="Nodes trust the platform CA's public keys (TrustedUserCAKeys); the platform "
                    "logs in to them with short-lived certificates it signs. Bootstrap and every "
                    "probe keep each node's trusted keys in step with these.",
    )  # fmt: skip
    verbs = ca.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    verbs.add_parser("init", help="create the CA key (once)",
                     description="Create the CA's first key, sealed at rest; prints the public "
                                 "key nodes must trust.").set_defaults(func=cmd_init)  # fmt: skip
    verbs.add_parser("rotate", help="make a new current CA key; the old one stays trusted",
                     description="The new key signs from now on; the previous one stays trusted "
                                 "until it is retired.").set_defaults(func=cmd_rotate)  # fmt: skip
    retire = verbs.add_parser("retire", help="stop trusting a previous CA key",
                              description="Refused while any node does not yet trust the current "
                                          "key (it names them).")  # fmt: skip
    retire.add_argument("key_id", type=int, help="the key's id, as `gpucloud ca status` lists")
    retire.set_defaults(func=cmd_retire)
    verbs.add_parser("status", help="list the trusted CA keys and nodes not yet updated",
                     description="Trusted keys (current first) with their fingerprints, and the "
                                 "nodes still waiting for the current one.").set_defaults(func=cmd_status)  # fmt: skip
