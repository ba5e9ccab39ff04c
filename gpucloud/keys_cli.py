"""`gpucloud keys init|new-version|rotate|retire|status`: the key-encryption keys of secrets at
rest, kept by the local KMS in the file GPUCLOUD_KMS_KEY_FILE."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from domain.errors import DomainError
from domain.secret_services import key_status, retire_version, rotate
from domain.secrets import KeyStatus, Rotation
from gpucloud.config import key_service_or_exit, run_with_uow, settings_or_exit
from infra.crypto.local_kms import KeyFileError, LocalKms
from infra.db.uow import SqlUnitOfWork


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _fail(action: str, exc: Exception) -> int:
    if isinstance(exc, DomainError):
        for p in exc.problems:
            print(f"gpucloud keys {action}: error: {p.message} [{p.code}]", file=sys.stderr)
    else:
        print(f"gpucloud keys {action}: error: {exc}", file=sys.stderr)
    return 2


def cmd_init(args: argparse.Namespace) -> int:
    settings = settings_or_exit(needs=())
    if not settings.kms_key_file:
        key_service_or_exit(settings, "`gpucloud keys init`")  # says what is missing, exits 2
    try:
        kms = LocalKms.create(settings.kms_key_file)
    except KeyFileError as exc:
        return _fail("init", exc)
    print(f"created key file {kms.path} (mode 0600) with key version v1. Back it up apart from "
          "the database: without it no secret can be opened.")  # fmt: skip
    return 0


def cmd_new_version(args: argparse.Namespace) -> int:
    kms = key_service_or_exit(settings_or_exit(needs=()), "`gpucloud keys new-version`")
    try:
        version = asyncio.run(kms.add_version())
    except (KeyFileError, DomainError) as exc:
        return _fail("new-version", exc)
    print(f"added key version {version}; new secrets are wrapped with it from now on. Run "
          "`gpucloud keys rotate` to re-wrap the existing ones.")  # fmt: skip
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    settings = settings_or_exit(needs=("DATABASE_URL",))
    kms = key_service_or_exit(settings, "`gpucloud keys rotate`")

    async def work(uow: Callable[[], SqlUnitOfWork]) -> Rotation:
        return await rotate(uow, kms, batch=args.batch)

    try:
        done = run_with_uow(work, settings)
    except (KeyFileError, DomainError) as exc:
        return _fail("rotate", exc)
    print(f"re-wrapped {done.rewrapped} data key(s) under {done.current}; "
          f"{done.skipped} were moved by another rotation at the same time")  # fmt: skip
    if done.failed:
        ids = ", ".join(map(str, done.failed))
        print(f"gpucloud keys rotate: error: {len(done.failed)} data key(s) did not unwrap and "
              f"were left as they were: secret id(s) {ids} [DECRYPT_FAILED]", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    settings = settings_or_exit(needs=("DATABASE_URL",))
    kms = key_service_or_exit(settings, "`gpucloud keys retire`")
    try:
        run_with_uow(lambda uow: retire_version(uow(), kms, args.version), settings)
    except (KeyFileError, DomainError) as exc:
        return _fail("retire", exc)
    print(f"retired key version {args.version}: removed from {kms.path}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_or_exit(needs=("DATABASE_URL",))
    kms = key_service_or_exit(settings, "`gpucloud keys status`")
    try:
        found: KeyStatus = run_with_uow(lambda uow: key_status(uow(), kms), settings)
    except (KeyFileError, DomainError) as exc:
        return _fail("status", exc)
    print(f"key file: {kms.path}")
    print(f"current version: {found.current}")
    for version in found.versions:
        mark = "  (current)" if version == found.current else ""
        print(f"{version:>6}  {found.secrets_by_version.get(version, 0)} secret(s){mark}")
    lost = {v: n for v, n in found.secrets_by_version.items() if v not in found.versions}
    for version, count in sorted(lost.items()):
        print(f"gpucloud keys status: error: {count} secret(s) are wrapped under {version}, "
              "which the key file no longer has [KEY_VERSION_UNKNOWN]", file=sys.stderr)  # fmt: skip
    return 1 if lost else 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser(
        "keys", help="manage the key-encryption keys of secrets at rest",
        description="Secrets (node admin keys, the SSH CA key) are encrypted each with its own "
                    "data key; data keys are wrapped by a key-encryption key from the KMS. The "
                    "local KMS keeps its key versions in the file GPUCLOUD_KMS_KEY_FILE.",
    )  # fmt: skip
    verbs = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    init = verbs.add_parser("init", help="create the key file with version v1",
                            description="Create GPUCLOUD_KMS_KEY_FILE (mode 0600) with one "
                                        "random key, v1. Never overwrites a file.")  # fmt: skip
    init.set_defaults(func=cmd_init)

    new = verbs.add_parser(
        "new-version", help="add a key version and make it current",
        description="Add a random key version and make it current: new secrets are wrapped "
                    "with it at once (running processes notice the file changed); the older "
                    "versions stay to unwrap existing secrets until they are rotated.",
    )  # fmt: skip
    new.set_defaults(func=cmd_new_version)

    rot = verbs.add_parser(
        "rotate", help="re-wrap every data key under the current version",
        description="Re-wrap every data key not under the current version, in short "
                    "transactions. Secrets' ciphertext is not touched, so it is safe while the "
                    "API serves. Exit status 1 when a data key did not unwrap.",
    )  # fmt: skip
    rot.add_argument("--batch", type=_positive, default=100,
                     help="data keys per transaction (default 100)")  # fmt: skip
    rot.set_defaults(func=cmd_rotate)

    ret = verbs.add_parser(
        "retire", help="remove an old key version from the key file",
        description="Remove VERSION from the key file for good. Refused (exit status 2) while "
                    "any secret is still wrapped under it, and for the current version.",
    )  # fmt: skip
    ret.add_argument("version", metavar="VERSION", help="the key version, e.g. v1")
    ret.set_defaults(func=cmd_retire)

    st = verbs.add_parser("status", help="show key versions and secrets per version",
                          description="Show the key versions, the current one, and how many "
                                      "secrets each wraps.")  # fmt: skip
    st.set_defaults(func=cmd_status)
