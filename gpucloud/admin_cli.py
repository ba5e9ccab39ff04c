"""`gpucloud admin create` and `gpucloud audit verify`: operator commands."""

from __future__ import annotations

import argparse
import getpass
import sys

from domain.audit.records import RequestMeta
from domain.audit.services import verify_chain
from domain.errors import DomainError
from domain.identity.auth import create_user
from domain.identity.principal import SYSTEM
from domain.identity.scopes import Role
from gpucloud.config import run_with_uow, settings_or_exit
from gpucloud.resources import password_hasher

_FLAGS = {"email": "--email", "password": "password"}


def _read_password(args: argparse.Namespace) -> str | None:
    # Never from the command line, where other users can read it in the process list.
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password (at least 12 characters): ")
    if first != getpass.getpass("Repeat it: "):
        print("gpucloud admin create: error: the passwords differ", file=sys.stderr)
        return None
    return first


def cmd_admin_create(args: argparse.Namespace) -> int:
    settings = settings_or_exit(needs=("DATABASE_URL",))
    password = _read_password(args)
    if password is None:
        return 2
    try:
        user = run_with_uow(
            lambda uow: create_user(uow(), password_hasher(settings), args.email, password,
                                    Role.ADMIN, SYSTEM, RequestMeta(request_id="cli")),
            settings,
        )  # fmt: skip
    except DomainError as exc:
        for p in exc.problems:
            where = f"{_FLAGS.get(p.field or '', p.field)}: " if p.field else ""
            print(f"gpucloud admin create: error: {where}{p.message} [{p.code}]", file=sys.stderr)
        return 2
    print(f"created administrator {user.email} (id {user.id})")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    result = run_with_uow(lambda uow: verify_chain(uow, batch=args.batch))
    if result.broken_at is not None:
        print(
            f"audit chain BROKEN at row {result.broken_at}: its hash or link does not match "
            f"({result.checked} rows before it verified)",
            file=sys.stderr,
        )
        return 1
    print(f"audit chain intact: {result.checked} rows verified")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = sub.add_parser("admin", help="manage administrator accounts",
                           description="Manage administrator accounts.")  # fmt: skip
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    create = admin_sub.add_parser(
        "create", help="create an administrator account",
        description="Create an administrator. The password is prompted for (twice), or read "
                    "from the first line of stdin with --password-stdin.",
    )  # fmt: skip
    create.add_argument("--email", required=True, help="the administrator's email")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from stdin instead of prompting")  # fmt: skip
    create.set_defaults(func=cmd_admin_create)

    audit = sub.add_parser("audit", help="check the audit log",
                           description="Tools for the tamper-evident audit log.")  # fmt: skip
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser(
        "verify", help="recompute the hash chain and name the first altered row",
        description="Recompute every row's hash from the first; exit 1 naming the first row "
                    "whose content or link was altered.",
    )  # fmt: skip
    verify.add_argument("--batch", type=int, default=1000, help="rows per read (default 1000)")
    verify.set_defaults(func=cmd_audit_verify)
