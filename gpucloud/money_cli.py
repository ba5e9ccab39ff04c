"""`gpucloud ledger verify` and `gpucloud billing reconcile`: operator checks on the money."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from domain.ledger.services import verify
from domain.payments.findings import Finding
from domain.payments.reconcile import reconcile
from gpucloud.config import run_with_uow, settings_or_exit
from infra.db.uow import SqlUnitOfWork
from infra.stripe.factory import make_gateway


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    check = run_with_uow(lambda uow: verify(uow()))
    if check.problems:
        for problem in check.problems:
            print(f"ledger: {problem}", file=sys.stderr)
        print(f"ledger verify FAILED: {len(check.problems)} problem(s) in "
              f"{check.accounts_checked} accounts, {check.transfers_checked} transfers",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"ledger verified: {check.accounts_checked} accounts and {check.transfers_checked} "
          "transfers; balances equal the sums of postings, every transfer balances, "
          "no wallet is overdrawn, every hold agrees with its transfers")  # fmt: skip
    return 0


def cmd_billing_reconcile(args: argparse.Namespace) -> int:
    settings = settings_or_exit(needs=("DATABASE_URL",))
    if not settings.payments.stripe_enabled:
        print("gpucloud billing reconcile: error: STRIPE_SECRET_KEY is not set", file=sys.stderr)
        return 2
    gateway = make_gateway(settings.payments)
    now = datetime.now(UTC)
    since = now - timedelta(hours=args.hours)

    async def work(uow: Callable[[], SqlUnitOfWork]) -> list[Finding]:
        try:
            return await reconcile(uow(), gateway, since, now)
        finally:
            await gateway.aclose()

    found = run_with_uow(work, settings)
    for f in found:
        print(f"{f.kind}\t{f.stripe_object_id}\t{f.detail}")
    print(f"reconciled Stripe since {since.isoformat(timespec='seconds')}: "
          f"{len(found)} new finding(s)")  # fmt: skip
    return 1 if found else 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ledger = sub.add_parser("ledger", help="check the money ledger",
                            description="Tools for the double-entry ledger.")  # fmt: skip
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    check = ledger_sub.add_parser(
        "verify", help="prove the balances equal the sums of the transfers",
        description="Check that every balance equals the sum of its postings, every transfer "
                    "balances in one currency, no wallet is overdrawn and every hold agrees "
                    "with its transfers. Exit status 1 when anything is wrong.",
    )  # fmt: skip
    check.set_defaults(func=cmd_ledger_verify)

    billing = sub.add_parser("billing", help="billing operations",
                             description="Billing operations against Stripe.")  # fmt: skip
    billing_sub = billing.add_subparsers(dest="billing_command", required=True, metavar="ACTION")
    rec = billing_sub.add_parser(
        "reconcile", help="compare Stripe with the ledger and record differences",
        description="Compare Stripe's payment intents, refunds, balance transactions and events "
                    "with the platform's records; record every difference as a reconciliation "
                    "issue. It never changes money. Exit status 1 when there are new findings.",
    )  # fmt: skip
    rec.add_argument("--hours", type=int, default=72, help="how far back to look (default 72)")
    rec.set_defaults(func=cmd_billing_reconcile)
