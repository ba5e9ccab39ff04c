"""`load_settings`: a pure function of the mapping given (plus the `*_FILE` files it names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.compute_settings import ComputeSettings
from infra.fleet_settings import FleetSettings
from infra.payment_settings import PaymentSettings
from infra.settings import Settings, SettingsError, load_settings

DB = "postgresql://app:hunter2@db.internal:5432/gpucloud"
REDIS = "redis://:hunter3@cache.internal:6379/0"
BASE = {"DATABASE_URL": DB, "REDIS_URL": REDIS}


def error_of(env: dict[str, str], **kwargs: tuple[str, ...]) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        load_settings(env, **kwargs)
    assert str(caught.value).startswith("invalid configuration:")
    return caught.value


def test_defaults() -> None:
    assert load_settings(BASE) == Settings(
        database_url=DB,
        redis_url=REDIS,
        redis_namespace="gpucloud",
        host="127.0.0.1",
        port=8000,
        log_level="info",
        log_format="json",
        graphiql=True,
        max_query_depth=10,
        max_aliases=15,
        max_query_tokens=2000,
        db_pool_size=10,
        outbox_poll_seconds=1.0,
        result_cache_seconds=5.0,
        worker_threads=4,
        worker_poll_ms=50,
        public_url="http://127.0.0.1:8000",
        allowed_origins=(),
        cookie_secure=True,
        cookie_samesite="lax",
        session_idle_minutes=120,
        session_max_hours=168,
        auth_cache_seconds=5.0,
        ws_ping_interval_seconds=20.0,
        ws_pong_timeout_seconds=10.0,
        ws_max_connections_per_user=10,
        ws_max_anonymous_per_ip=20,
        shutdown_grace_seconds=10.0,
        argon2_time_cost=3,
        argon2_memory_kib=65536,
        argon2_parallelism=4,
        login_limit_per_ip=30,
        login_failures_per_account=10,
        signup_limit_per_ip=10,
        oidc_issuer="",
        oidc_client_id="",
        oidc_client_secret="",
        payments=PaymentSettings(
            stripe_secret_key="",
            stripe_api_base="",
            stripe_webhook_secrets=(),
            stripe_webhook_tolerance_seconds=300,
            stripe_timeout_seconds=10.0,
            checkout_success_url="",
            checkout_cancel_url="",
            topup_currencies=("USD",),
            topup_min_minor=500,
            topup_max_minor=1_000_000,
            spend_limit_per_hour_minor=100_000,
            money_tick_seconds=30.0,
            reconcile_interval_seconds=3600.0,
            reconcile_window_hours=72,
        ),
        kms_key_file="",
        fleet=FleetSettings(
            tick_seconds=5.0,
            probe_interval_seconds=60.0,
            probe_max_backoff_seconds=900.0,
            unreachable_grace_seconds=300.0,
            max_gpu_temperature_c=85,
            min_disk_free_mib=10240,
            platform_group="gpucloud",
            ssh_connect_timeout_seconds=10.0,
            ssh_command_timeout_seconds=60.0,
            trusted_ca_file="/etc/ssh/gpucloud_user_ca.pub",
            sshd_dropin="/etc/ssh/sshd_config.d/60-gpucloud.conf",
            device_dir="/dev",
            gpu_group_prefix="gpucloud-gpu",
            udev_rules="/etc/udev/rules.d/70-gpucloud-gpu.rules",
            data_dir="/home",
            home_dir="/home",
        ),
        compute=ComputeSettings(
            user_prefix="gc",
            billing_window_seconds=3600.0,
            provision_deadline_seconds=600.0,
            engine_tick_seconds=1.0,
            engine_lease_seconds=120.0,
            keep_home=False,
            node_concurrency=4,
            metering_tick_seconds=60.0,
            low_balance_grace_seconds=600.0,
            reconcile_seconds=300.0,
        ),
    )
    assert not load_settings(BASE).payments.stripe_enabled


def test_money_settings_are_parsed_and_checked() -> None:
    settings = load_settings({**BASE, "STRIPE_SECRET_KEY": "sk_test_x",
                              "STRIPE_WEBHOOK_SECRETS": "whsec_new, whsec_old",
                              "GPUCLOUD_TOPUP_CURRENCIES": "usd,EUR"})  # fmt: skip
    assert settings.payments.stripe_enabled
    assert settings.payments.stripe_webhook_secrets == ("whsec_new", "whsec_old")
    assert settings.payments.topup_currencies == ("USD", "EUR")
    error = error_of({**BASE, "STRIPE_WEBHOOK_SECRETS": "not-a-secret",
                      "GPUCLOUD_TOPUP_CURRENCIES": "XXX", "STRIPE_API_BASE": "ftp://x"})  # fmt: skip
    text = str(error)
    assert "STRIPE_WEBHOOK_SECRETS: expected webhook secrets, got <secret>" in text
    assert "not-a-secret" not in text  # a secret's value is never echoed
    assert "GPUCLOUD_TOPUP_CURRENCIES: expected currency codes, got 'XXX'" in text
    assert "STRIPE_API_BASE: expected a URL" in text


def test_values_are_parsed() -> None:
    settings = load_settings(
        {
            **BASE,
            "GPUCLOUD_PORT": "9000",
            "GPUCLOUD_GRAPHIQL": "off",
            "GPUCLOUD_LOG_LEVEL": "DEBUG",
            "GPUCLOUD_LOG_FORMAT": "console",
            "GPUCLOUD_OUTBOX_POLL_SECONDS": "0.25",
            "GPUCLOUD_REDIS_NAMESPACE": "ns1",
        }
    )
    assert settings.port == 9000
    assert settings.graphiql is False
    assert settings.log_level == "debug"
    assert settings.log_format == "console"
    assert settings.outbox_poll_seconds == 0.25
    assert settings.redis_namespace == "ns1"


@pytest.mark.parametrize(
    "url", ["postgres://h/d", "postgresql+asyncpg://u@h/d", "postgresql:///d?host=/run/pg"]
)
def test_accepted_database_url_forms(url: str) -> None:
    assert load_settings({**BASE, "DATABASE_URL": url}).database_url == url


def test_empty_value_counts_as_unset() -> None:
    assert load_settings({**BASE, "GPUCLOUD_PORT": ""}).port == 8000
    assert "DATABASE_URL: required, not set" in error_of({**BASE, "DATABASE_URL": ""}).problems


@pytest.mark.parametrize("missing", ["DATABASE_URL", "REDIS_URL"])
def test_missing_service_url_is_named(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    err = error_of(env)
    assert err.problems == [f"{missing}: required, not set"]
    assert missing in str(err)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GPUCLOUD_PORT", "http"),
        ("GPUCLOUD_PORT", "0"),
        ("GPUCLOUD_PORT", "65536"),
        ("GPUCLOUD_GRAPHIQL", "maybe"),
        ("GPUCLOUD_LOG_LEVEL", "loud"),
        ("GPUCLOUD_LOG_FORMAT", "xml"),
        ("GPUCLOUD_MAX_QUERY_DEPTH", "0"),
        ("GPUCLOUD_OUTBOX_POLL_SECONDS", "0"),
        ("GPUCLOUD_OUTBOX_POLL_SECONDS", "-1"),
        ("GPUCLOUD_WORKER_THREADS", "65"),
        ("DATABASE_URL", "mysql://u:hunter2@h/d"),
        ("DATABASE_URL", "postgresql://"),
        ("DATABASE_URL", "not a url"),
        ("REDIS_URL", "http://cache:6379"),
        ("REDIS_URL", "redis://"),
    ],
)
def test_malformed_value_is_named(name: str, value: str) -> None:
    err = error_of({**BASE, name: value})
    assert len(err.problems) == 1
    assert err.problems[0].startswith(f"{name}: expected ")


def test_non_secret_value_is_shown_to_help_fix_it() -> None:
    err = error_of({**BASE, "GPUCLOUD_GRAPHIQL": "maybe"})
    assert err.problems == [
        "GPUCLOUD_GRAPHIQL: expected a boolean, got 'maybe' (use true or false)"
    ]


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("DATABASE_URL", "mysql://app:hunter2@h/d", "hunter2"),
        ("DATABASE_URL", "postgresql://app:hunter2@/d", "hunter2"),
        ("DATABASE_URL", "postgresql://app:hunter2@[::1/d", "hunter2"),
        ("REDIS_URL", "http://:hunter3@cache:6379", "hunter3"),
    ],
)
def test_secret_value_never_appears_in_the_error(name: str, value: str, secret: str) -> None:
    err = error_of({**BASE, name: value})
    assert name in str(err)
    assert "<secret>" in str(err)
    assert secret not in str(err)


def test_secret_with_brackets_never_appears_in_the_error() -> None:
    err = error_of({**BASE, "DATABASE_URL": "postgresql://app:pa[hunter2]ss@db/d"})
    assert "DATABASE_URL" in str(err)
    assert "hunter2" not in str(err)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_poll_seconds_must_be_finite(value: str) -> None:
    err = error_of({**BASE, "GPUCLOUD_OUTBOX_POLL_SECONDS": value})
    assert err.problems[0].startswith("GPUCLOUD_OUTBOX_POLL_SECONDS")


def test_secret_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret_file = tmp_path / "db_url"
    secret_file.write_text(f"  {DB}\n\n")
    env = {"DATABASE_URL_FILE": str(secret_file), "REDIS_URL": REDIS}
    assert load_settings(env).database_url == DB


def test_malformed_secret_file_content_is_hidden(tmp_path: Path) -> None:
    secret_file = tmp_path / "db_url"
    secret_file.write_text("mysql://app:hunter2@h/d\n")
    err = error_of({"DATABASE_URL_FILE": str(secret_file), "REDIS_URL": REDIS})
    assert err.problems[0].startswith("DATABASE_URL: expected a postgresql:// URL, got <secret>")
    assert "hunter2" not in str(err)


def test_value_and_file_together_is_an_error(tmp_path: Path) -> None:
    secret_file = tmp_path / "db_url"
    secret_file.write_text(DB)
    err = error_of({**BASE, "DATABASE_URL_FILE": str(secret_file)})
    assert err.problems == ["DATABASE_URL: set either DATABASE_URL or DATABASE_URL_FILE, not both"]
    assert "hunter2" not in str(err)


def test_value_and_file_together_is_an_error_even_when_not_needed(tmp_path: Path) -> None:
    secret_file = tmp_path / "redis_url"
    secret_file.write_text(REDIS)
    err = error_of({**BASE, "REDIS_URL_FILE": str(secret_file)}, needs=("DATABASE_URL",))
    assert err.problems == ["REDIS_URL: set either REDIS_URL or REDIS_URL_FILE, not both"]


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    err = error_of({"DATABASE_URL_FILE": str(missing), "REDIS_URL": REDIS})
    assert len(err.problems) == 1  # not also "required, not set"
    assert err.problems[0].startswith("DATABASE_URL_FILE: cannot read")
    assert str(missing) in err.problems[0]


def test_needs_lets_other_services_be_unset() -> None:
    settings = load_settings({"DATABASE_URL": DB}, needs=("DATABASE_URL",))
    assert settings.database_url == DB
    assert settings.redis_url == ""


def test_needs_still_validates_a_set_but_unneeded_url() -> None:
    err = error_of({"DATABASE_URL": DB, "REDIS_URL": "http://x"}, needs=("DATABASE_URL",))
    assert [p.split(":")[0] for p in err.problems] == ["REDIS_URL"]


def test_needs_nothing() -> None:
    settings = load_settings({}, needs=())
    assert (settings.database_url, settings.redis_url) == ("", "")


def test_every_problem_is_reported_at_once() -> None:
    err = error_of({"GPUCLOUD_PORT": "x", "GPUCLOUD_GRAPHIQL": "maybe", "REDIS_URL": "http://h"})
    assert [p.split(":")[0] for p in err.problems] == [
        "DATABASE_URL",
        "REDIS_URL",
        "GPUCLOUD_PORT",
        "GPUCLOUD_GRAPHIQL",
    ]
    for name in ("DATABASE_URL", "REDIS_URL", "GPUCLOUD_PORT", "GPUCLOUD_GRAPHIQL"):
        assert name in str(err)


def test_fleet_settings_are_validated_and_none_turns_a_path_off() -> None:
    fleet = load_settings({**BASE, "GPUCLOUD_NODE_SSHD_DROPIN": "none",
                           "GPUCLOUD_NODE_UDEV_RULES": "None"}).fleet  # fmt: skip
    assert fleet.sshd_dropin == "" and fleet.udev_rules == ""
    with pytest.raises(SettingsError) as bad:
        load_settings({**BASE, "GPUCLOUD_NODE_PLATFORM_GROUP": "Bad Group",
                       "GPUCLOUD_MAX_GPU_TEMPERATURE_C": "500"})  # fmt: skip
    assert "GPUCLOUD_NODE_PLATFORM_GROUP" in str(bad.value)
    assert "GPUCLOUD_MAX_GPU_TEMPERATURE_C" in str(bad.value)


def test_the_account_prefix_must_make_linux_user_names() -> None:
    with pytest.raises(SettingsError) as bad:
        load_settings({**BASE, "GPUCLOUD_ALLOCATION_USER_PREFIX": "Root;"})
    assert "GPUCLOUD_ALLOCATION_USER_PREFIX" in str(bad.value)
    assert (
        load_settings({**BASE, "GPUCLOUD_ALLOCATION_USER_PREFIX": "alloc"}).compute.user_prefix
        == "alloc"
    )


def test_how_sshd_is_reloaded_and_the_nvidia_option_are_settings() -> None:
    fleet = load_settings(BASE).fleet
    assert (fleet.sshd_config, fleet.sshd_reload) == ("/etc/ssh/sshd_config", "auto")
    assert fleet.nvidia_modprobe == "/etc/modprobe.d/gpucloud-nvidia.conf"
    env = {"GPUCLOUD_NODE_SSHD_RELOAD": "signal", "GPUCLOUD_NODE_NVIDIA_MODPROBE": "none"}
    changed = load_settings({**BASE, **env}).fleet
    assert changed.sshd_reload == "signal" and changed.nvidia_modprobe == ""
    with pytest.raises(SettingsError) as bad:
        load_settings({**BASE, "GPUCLOUD_NODE_SSHD_RELOAD": "systemd"})
    assert "GPUCLOUD_NODE_SSHD_RELOAD: expected 'auto' or 'signal'" in str(bad.value)
