"""Typed settings read from the environment, validated once at start.

Every secret may instead be given as a file (`NAME_FILE`), so deployments can mount secrets
rather than put them in the environment. A missing or malformed value stops the process with a
message naming the variable.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from infra.compute_settings import ComputeSettings
from infra.fleet_settings import FleetSettings
from infra.nodes.layout import SSHD_RELOADS
from infra.payment_settings import PaymentSettings, currencies, secrets_list

T = TypeVar("T")


class SettingsError(Exception):
    """One or more settings are missing or malformed; the message names each variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    redis_namespace: str
    host: str
    port: int
    log_level: str
    log_format: str
    graphiql: bool
    max_query_depth: int
    max_aliases: int
    max_query_tokens: int
    db_pool_size: int
    outbox_poll_seconds: float
    result_cache_seconds: float
    worker_threads: int
    worker_poll_ms: int  # an idle Dramatiq consumer asks Redis again after at most this
    public_url: str
    allowed_origins: tuple[str, ...]
    cookie_secure: bool
    cookie_samesite: str
    session_idle_minutes: int
    session_max_hours: int
    auth_cache_seconds: float
    ws_ping_interval_seconds: float  # graphql-transport-ws: server pings this often
    ws_pong_timeout_seconds: float  # ... and closes a connection that does not answer in time
    ws_max_connections_per_user: int  # live websocket connections per user, across processes
    ws_max_anonymous_per_ip: int  # live websocket connections without a credential, per client IP
    shutdown_grace_seconds: float  # on SIGTERM: how long open sockets get to close themselves
    argon2_time_cost: int
    argon2_memory_kib: int
    argon2_parallelism: int
    login_limit_per_ip: int
    login_failures_per_account: int
    signup_limit_per_ip: int
    oidc_issuer: str
    oidc_client_id: str
    oidc_client_secret: str
    payments: PaymentSettings
    kms_key_file: str  # the local KMS's key file; empty: commands that need it refuse to start
    fleet: FleetSettings
    compute: ComputeSettings

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer)


class _Reader:
    """Collects every problem instead of stopping at the first, so one run shows them all."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str, *, secret: bool = False) -> str | None:
        file_var = f"{name}_FILE"
        if secret and self.env.get(file_var):
            if self.env.get(name):
                self.problems.append(f"{name}: set either {name} or {file_var}, not both")
                return None
            try:
                return Path(self.env[file_var]).read_text().strip()
            except OSError as exc:
                self.problems.append(
                    f"{file_var}: cannot read {self.env[file_var]!r} ({exc.strerror})"
                )
                return None
        value = self.env.get(name)
        return value if value not in (None, "") else None

    def get(
        self,
        name: str,
        default: T | None,
        parse: Callable[[str], T],
        *,
        secret: bool = False,
        what: str = "a value",
    ) -> T:
        value = self.raw(name, secret=secret)
        if value is None:
            if default is None:
                if not any(p.startswith(name) for p in self.problems):
                    self.problems.append(f"{name}: required, not set")
                return None  # type: ignore[return-value]
            return default
        try:
            return parse(value)
        except ValueError as exc:
            # A parser's message may quote the value; for a secret, say only what was expected.
            detail = f" ({exc})" if str(exc) and not secret else ""
            shown = "<secret>" if secret else repr(value)
            self.problems.append(f"{name}: expected {what}, got {shown}{detail}")
            return None  # type: ignore[return-value]


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            raise ValueError(f"scheme must be one of {', '.join(schemes)}")
        if not (parts.hostname or "host=" in parts.query):
            raise ValueError("no host")
        return value

    return parse


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be from {low} to {high}")
        return number

    return parse


def _positive_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError("must be a positive, finite number")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError("must be zero or a positive, finite number")
    return number


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("use true or false")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in options:
            raise ValueError(f"one of {', '.join(options)}")
        return value.lower()

    return parse


def _origins(value: str) -> tuple[str, ...]:
    found = []
    for item in value.split(","):
        item = item.strip().rstrip("/")
        if not item:
            continue
        parts = urlsplit(item)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.username is not None
        ):
            raise ValueError(f"{item!r} is not an origin like https://app.example.com")
        found.append(item)
    return tuple(found)


def _origin_url(value: str) -> str:
    return _origins(value)[0] if _origins(value) else ""


def _path(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL byte")
    return str(Path(value).expanduser())


SERVICES = ("DATABASE_URL", "REDIS_URL")


def _payments(r: _Reader) -> PaymentSettings:
    minor = _int_between(1, 10**12)
    return PaymentSettings(
        stripe_secret_key=r.get("STRIPE_SECRET_KEY", "", str, secret=True),
        stripe_api_base=r.get("STRIPE_API_BASE", "", _url("http", "https"), what="a URL"),
        stripe_webhook_secrets=r.get(
            "STRIPE_WEBHOOK_SECRETS", (), secrets_list, secret=True, what="webhook secrets"
        ),
        stripe_webhook_tolerance_seconds=r.get(
            "STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300, _int_between(1, 3600), what="seconds"
        ),
        stripe_timeout_seconds=r.get(
            "STRIPE_TIMEOUT_SECONDS", 10.0, _positive_float, what="a number of seconds"
        ),
        checkout_success_url=r.get(
            "GPUCLOUD_CHECKOUT_SUCCESS_URL", "", _url("http", "https"), what="a URL"
        ),
        checkout_cancel_url=r.get(
            "GPUCLOUD_CHECKOUT_CANCEL_URL", "", _url("http", "https"), what="a URL"
        ),
        topup_currencies=r.get(
            "GPUCLOUD_TOPUP_CURRENCIES", ("USD",), currencies, what="currency codes"
        ),
        topup_min_minor=r.get("GPUCLOUD_TOPUP_MIN_MINOR", 500, minor, what="minor units"),
        topup_max_minor=r.get("GPUCLOUD_TOPUP_MAX_MINOR", 1_000_000, minor, what="minor units"),
        spend_limit_per_hour_minor=r.get(
            "GPUCLOUD_SPEND_LIMIT_PER_HOUR_MINOR", 100_000, minor, what="minor units"
        ),
        money_tick_seconds=r.get(
            "GPUCLOUD_MONEY_TICK_SECONDS", 30.0, _positive_float, what="a number of seconds"
        ),
        reconcile_interval_seconds=r.get(
            "GPUCLOUD_RECONCILE_INTERVAL_SECONDS", 3600.0, _positive_float, what="seconds"
        ),
        reconcile_window_hours=r.get(
            "GPUCLOUD_RECONCILE_WINDOW_HOURS", 72, _int_between(1, 24 * 90), what="hours"
        ),
    )


_GROUP = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _group(value: str) -> str:
    if not _GROUP.match(value):
        raise ValueError("a Linux group name")
    return value


def _fleet(r: _Reader) -> FleetSettings:
    seconds = "a number of seconds"
    return FleetSettings(
        tick_seconds=r.get("GPUCLOUD_FLEET_TICK_SECONDS", 5.0, _positive_float, what=seconds),
        probe_interval_seconds=r.get(
            "GPUCLOUD_PROBE_INTERVAL_SECONDS", 60.0, _positive_float, what=seconds
        ),
        probe_max_backoff_seconds=r.get(
            "GPUCLOUD_PROBE_MAX_BACKOFF_SECONDS", 900.0, _positive_float, what=seconds
        ),
        unreachable_grace_seconds=r.get(
            "GPUCLOUD_UNREACHABLE_GRACE_SECONDS", 300.0, _non_negative_float, what=seconds
        ),
        max_gpu_temperature_c=r.get(
            "GPUCLOUD_MAX_GPU_TEMPERATURE_C", 85, _int_between(30, 120), what="degrees Celsius"
        ),
        min_disk_free_mib=r.get(
            "GPUCLOUD_MIN_DISK_FREE_MIB", 10240, _int_between(0, 1 << 40), what="MiB"
        ),
        platform_group=r.get("GPUCLOUD_NODE_PLATFORM_GROUP", "gpucloud", _group, what="a group"),
        ssh_connect_timeout_seconds=r.get(
            "GPUCLOUD_SSH_CONNECT_TIMEOUT_SECONDS", 10.0, _positive_float, what=seconds
        ),
        ssh_command_timeout_seconds=r.get(
            "GPUCLOUD_SSH_COMMAND_TIMEOUT_SECONDS", 60.0, _positive_float, what=seconds
        ),
        trusted_ca_file=r.get(
            "GPUCLOUD_NODE_TRUSTED_CA_FILE", "/etc/ssh/gpucloud_user_ca.pub", _path, what="a path"
        ),
        sshd_dropin=r.get(
            "GPUCLOUD_NODE_SSHD_DROPIN",
            "/etc/ssh/sshd_config.d/60-gpucloud.conf",
            _optional_path,
            what="a path, or 'none'",
        ),
        device_dir=r.get("GPUCLOUD_NODE_DEVICE_DIR", "/dev", _path, what="a path"),
        gpu_group_prefix=r.get(
            "GPUCLOUD_NODE_GPU_GROUP_PREFIX", "gpucloud-gpu", _group, what="a group name prefix"
        ),
        udev_rules=r.get(
            "GPUCLOUD_NODE_UDEV_RULES",
            "/etc/udev/rules.d/70-gpucloud-gpu.rules",
            _optional_path,
            what="a path, or 'none'",
        ),
        data_dir=r.get("GPUCLOUD_NODE_DATA_DIR", "/home", _path, what="a path"),
        home_dir=r.get("GPUCLOUD_NODE_HOME_DIR", "/home", _path, what="a path"),
        sshd_config=r.get(
            "GPUCLOUD_NODE_SSHD_CONFIG", "/etc/ssh/sshd_config", _path, what="a path"
        ),
        sshd_reload=r.get(
            "GPUCLOUD_NODE_SSHD_RELOAD", "auto", _sshd_reload, what="'auto' or 'signal'"
        ),
        nvidia_modprobe=r.get(
            "GPUCLOUD_NODE_NVIDIA_MODPROBE",
            "/etc/modprobe.d/gpucloud-nvidia.conf",
            _optional_path,
            what="a path, or 'none'",
        ),
    )


_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,15}$")


def _user_prefix(value: str) -> str:
    if not _PREFIX.match(value):
        raise ValueError("1-16 lowercase letters or digits, starting with a letter")
    return value


def _compute(r: _Reader) -> ComputeSettings:
    seconds = "a number of seconds"
    return ComputeSettings(
        user_prefix=r.get("GPUCLOUD_ALLOCATION_USER_PREFIX", "gc", _user_prefix, what="a prefix"),
        billing_window_seconds=r.get(
            "GPUCLOUD_BILLING_WINDOW_SECONDS", 3600.0, _positive_float, what=seconds
        ),
        provision_deadline_seconds=r.get(
            "GPUCLOUD_PROVISION_DEADLINE_SECONDS", 600.0, _positive_float, what=seconds
        ),
        engine_tick_seconds=r.get(
            "GPUCLOUD_ENGINE_TICK_SECONDS", 1.0, _positive_float, what=seconds
        ),
        engine_lease_seconds=r.get(
            "GPUCLOUD_ENGINE_LEASE_SECONDS", 120.0, _positive_float, what=seconds
        ),
        keep_home=r.get("GPUCLOUD_KEEP_HOME_ON_STOP", False, _bool, what="a boolean"),
        node_concurrency=r.get(
            "GPUCLOUD_NODE_CONCURRENCY", 4, _int_between(1, 10), what="an integer"
        ),
        metering_tick_seconds=r.get(
            "GPUCLOUD_METERING_TICK_SECONDS", 60.0, _positive_float, what=seconds
        ),
        low_balance_grace_seconds=r.get(
            "GPUCLOUD_LOW_BALANCE_GRACE_SECONDS", 600.0, _non_negative_float, what=seconds
        ),
        reconcile_seconds=r.get(
            "GPUCLOUD_RECONCILE_NODES_SECONDS", 300.0, _positive_float, what=seconds
        ),
    )


def _sshd_reload(value: str) -> str:
    if value not in SSHD_RELOADS:
        raise ValueError("")
    return value


def _optional_path(value: str) -> str:
    return "" if value.strip().lower() == "none" else _path(value)


def load_settings(
    env: Mapping[str, str] | None = None, *, needs: tuple[str, ...] = SERVICES
) -> Settings:
    """Read and validate all settings; raises `SettingsError` naming every bad variable.

    `needs` names the service URLs this command requires; the others may be unset (empty).
    """
    r = _Reader(os.environ if env is None else env)

    def service(name: str, parse: Callable[[str], str], what: str) -> str:
        return r.get(name, None if name in needs else "", parse, secret=True, what=what)

    settings = Settings(
        database_url=service(
            "DATABASE_URL",
            _url("postgresql", "postgres", "postgresql+asyncpg"),
            "a postgresql:// URL",
        ),
        redis_url=service("REDIS_URL", _url("redis", "rediss"), "a redis:// URL"),
        redis_namespace=r.get("GPUCLOUD_REDIS_NAMESPACE", "gpucloud", str),
        host=r.get("GPUCLOUD_HOST", "127.0.0.1", str),
        port=r.get("GPUCLOUD_PORT", 8000, _int_between(1, 65535), what="a TCP port"),
        log_level=r.get(
            "GPUCLOUD_LOG_LEVEL",
            "info",
            _choice("debug", "info", "warning", "error"),
            what="a log level",
        ),
        log_format=r.get(
            "GPUCLOUD_LOG_FORMAT", "json", _choice("json", "console"), what="a log format"
        ),
        graphiql=r.get("GPUCLOUD_GRAPHIQL", True, _bool, what="a boolean"),
        max_query_depth=r.get(
            "GPUCLOUD_MAX_QUERY_DEPTH", 10, _int_between(1, 100), what="an integer"
        ),
        max_aliases=r.get("GPUCLOUD_MAX_ALIASES", 15, _int_between(1, 1000), what="an integer"),
        max_query_tokens=r.get(
            "GPUCLOUD_MAX_QUERY_TOKENS", 2000, _int_between(10, 100_000), what="an integer"
        ),
        db_pool_size=r.get("GPUCLOUD_DB_POOL_SIZE", 10, _int_between(1, 200), what="an integer"),
        outbox_poll_seconds=r.get(
            "GPUCLOUD_OUTBOX_POLL_SECONDS", 1.0, _positive_float, what="a number of seconds"
        ),
        result_cache_seconds=r.get(
            "GPUCLOUD_RESULT_CACHE_SECONDS", 5.0, _non_negative_float, what="a number of seconds"
        ),
        worker_threads=r.get("GPUCLOUD_WORKER_THREADS", 4, _int_between(1, 64), what="an integer"),
        worker_poll_ms=r.get(
            "GPUCLOUD_WORKER_POLL_MS", 50, _int_between(10, 10_000), what="milliseconds"
        ),
        public_url="",
        allowed_origins=r.get("GPUCLOUD_ALLOWED_ORIGINS", (), _origins, what="origins"),
        cookie_secure=r.get("GPUCLOUD_COOKIE_SECURE", True, _bool, what="a boolean"),
        cookie_samesite=r.get(
            "GPUCLOUD_COOKIE_SAMESITE", "lax", _choice("lax", "strict"), what="lax or strict"
        ),
        session_idle_minutes=r.get(
            "GPUCLOUD_SESSION_IDLE_MINUTES", 120, _int_between(1, 60 * 24 * 30), what="minutes"
        ),
        session_max_hours=r.get(
            "GPUCLOUD_SESSION_MAX_HOURS", 168, _int_between(1, 24 * 90), what="hours"
        ),
        auth_cache_seconds=r.get(
            "GPUCLOUD_AUTH_CACHE_SECONDS", 5.0, _non_negative_float, what="a number of seconds"
        ),
        ws_ping_interval_seconds=r.get(
            "GPUCLOUD_WS_PING_INTERVAL_SECONDS", 20.0, _positive_float, what="a number of seconds"
        ),
        ws_pong_timeout_seconds=r.get(
            "GPUCLOUD_WS_PONG_TIMEOUT_SECONDS", 10.0, _positive_float, what="a number of seconds"
        ),
        ws_max_connections_per_user=r.get(
            "GPUCLOUD_WS_MAX_CONNECTIONS_PER_USER", 10, _int_between(1, 10_000), what="an integer"
        ),
        ws_max_anonymous_per_ip=r.get(
            "GPUCLOUD_WS_MAX_ANONYMOUS_PER_IP", 20, _int_between(0, 100_000), what="an integer"
        ),
        shutdown_grace_seconds=r.get(
            "GPUCLOUD_SHUTDOWN_GRACE_SECONDS", 10.0, _positive_float, what="a number of seconds"
        ),
        argon2_time_cost=r.get(
            "GPUCLOUD_ARGON2_TIME_COST", 3, _int_between(1, 20), what="an integer"
        ),
        argon2_memory_kib=r.get(
            "GPUCLOUD_ARGON2_MEMORY_KIB", 65536, _int_between(8192, 4 * 1024 * 1024), what="KiB"
        ),
        argon2_parallelism=r.get(
            "GPUCLOUD_ARGON2_PARALLELISM", 4, _int_between(1, 64), what="an integer"
        ),
        login_limit_per_ip=r.get(
            "GPUCLOUD_LOGIN_LIMIT_PER_IP", 30, _int_between(1, 100_000), what="attempts per minute"
        ),
        login_failures_per_account=r.get(
            "GPUCLOUD_LOGIN_FAILURES_PER_ACCOUNT",
            10,
            _int_between(1, 10_000),
            what="failures per 15 minutes",
        ),
        signup_limit_per_ip=r.get(
            "GPUCLOUD_SIGNUP_LIMIT_PER_IP", 10, _int_between(1, 100_000), what="sign-ups per hour"
        ),
        oidc_issuer=r.get(
            "GPUCLOUD_OIDC_ISSUER", "", _url("http", "https"), what="an https:// URL"
        ),
        oidc_client_id=r.get("GPUCLOUD_OIDC_CLIENT_ID", "", str),
        oidc_client_secret=r.get("GPUCLOUD_OIDC_CLIENT_SECRET", "", str, secret=True),
        payments=_payments(r),
        kms_key_file=r.get("GPUCLOUD_KMS_KEY_FILE", "", _path, what="a file path"),
        fleet=_fleet(r),
        compute=_compute(r),
    )
    public = r.get(
        "GPUCLOUD_PUBLIC_URL", "", _origin_url, what="an origin like https://gpu.example.com"
    )
    if settings.oidc_issuer and not (settings.oidc_client_id and settings.oidc_client_secret):
        r.problems.append(
            "GPUCLOUD_OIDC_CLIENT_ID, GPUCLOUD_OIDC_CLIENT_SECRET: required when "
            "GPUCLOUD_OIDC_ISSUER is set"
        )
    if r.problems:
        raise SettingsError(r.problems)
    # Where browsers reach us: the OIDC callback and the default allowed websocket origin.
    public = public or f"http://{settings.host}:{settings.port}"
    return replace(settings, public_url=public)
