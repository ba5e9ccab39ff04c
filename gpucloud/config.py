"""Settings for a command: validated at start, or the process stops naming each bad variable."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from infra.crypto.local_kms import KeyFileError, LocalKms
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from infra.logging import configure_logging
from infra.settings import SERVICES, Settings, SettingsError, load_settings


def settings_or_exit(needs: tuple[str, ...] = SERVICES) -> Settings:
    try:
        settings = load_settings(needs=needs)
    except SettingsError as exc:
        print(f"gpucloud: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def key_service_or_exit(settings: Settings, needed_for: str) -> LocalKms:
    """The local KMS named by GPUCLOUD_KMS_KEY_FILE, or exit 2 with one line saying why not."""
    if not settings.kms_key_file:
        print(f"gpucloud: GPUCLOUD_KMS_KEY_FILE: required for {needed_for}, not set "
              "(the path of the key file; `gpucloud keys init` creates one)",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    try:
        return LocalKms(settings.kms_key_file)
    except KeyFileError as exc:
        print(f"gpucloud: GPUCLOUD_KMS_KEY_FILE: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


T = TypeVar("T")


def run_with_uow(
    work: Callable[[Callable[[], SqlUnitOfWork]], Awaitable[T]], settings: Settings | None = None
) -> T:
    """Run one CLI command's async work with units of work on a one-connection engine."""
    settings = settings or settings_or_exit(needs=("DATABASE_URL",))

    async def main() -> T:
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            return await work(lambda: SqlUnitOfWork(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())
