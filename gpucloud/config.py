"""Settings for a command: validated at start, or the process stops naming each bad variable."""

from __future__ import annotations

import sys

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
