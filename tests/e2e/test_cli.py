"""The `gpucloud` command line as a user types it."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support.processes import gpucloud

COMMANDS = [[], ["serve"], ["worker"], ["migrate"], ["dev"], ["export-schema"], ["sku"],
            ["sku", "add"], ["sku", "list"], ["sku", "retire"], ["sku", "seed-demo"],
            ["admin"], ["admin", "create"], ["audit"], ["audit", "verify"],
            ["ledger"], ["ledger", "verify"], ["billing"], ["billing", "reconcile"],
            ["keys"], ["keys", "init"], ["keys", "new-version"], ["keys", "rotate"],
            ["keys", "retire"], ["keys", "status"], ["ca"], ["ca", "init"], ["ca", "rotate"],
            ["ca", "retire"], ["ca", "status"]]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "gpucloud")
def test_every_command_has_help(command: list[str]) -> None:
    result = gpucloud(*command, "--help", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: gpucloud")


def test_missing_and_malformed_settings_are_named() -> None:
    result = gpucloud("sku", "list", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "DATABASE_URL: required, not set" in result.stderr
    assert "Traceback" not in result.stderr
    bad = gpucloud("serve", env={"DATABASE_URL": "mysql://x/y", "REDIS_URL": "redis://127.0.0.1:6379/0",
                                 "GPUCLOUD_PORT": "eighty"})  # fmt: skip
    assert bad.returncode == 2
    assert "DATABASE_URL: expected a postgresql:// URL" in bad.stderr
    assert "GPUCLOUD_PORT: expected a TCP port, got 'eighty'" in bad.stderr


def test_secret_from_file(service_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "db-url"
    secret.write_text(service_env["DATABASE_URL"] + "\n")
    env = {k: v for k, v in service_env.items() if k != "DATABASE_URL"}
    result = gpucloud("sku", "list", env={**env, "DATABASE_URL_FILE": str(secret)})
    assert result.returncode == 0, result.stderr


async def _sku_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM skus"))
    finally:
        await conn.close()


def test_invalid_sku_is_refused_naming_each_flag_and_nothing_is_written(
    service_env, engine
) -> None:  # type: ignore[no-untyped-def]
    result = gpucloud(
        "sku", "add", "--name", "bad", "--gpu-model", "H100", "--gpu-count", "0", "--vcpus", "8",
        "--ram-gib", "64", "--disk-gib", "100", "--region", "eu-west", "--price-minor", "-5",
        "--currency", "XYZ", env=service_env,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        "--gpu-count: GPU count must be a whole number from 1 to 64. [INVALID_GPU_COUNT]"
        in result.stderr
    )
    assert "--price-minor:" in result.stderr and "[INVALID_PRICE]" in result.stderr
    assert "--currency: Unknown or unsupported currency 'XYZ'. [UNKNOWN_CURRENCY]" in result.stderr
    assert asyncio.run(_sku_count(service_env["DATABASE_URL"])) == 0


def test_add_list_retire_round_trip(service_env, engine) -> None:  # type: ignore[no-untyped-def]
    args = ["--gpu-model", "A100", "--gpu-count", "4", "--vcpus", "64", "--ram-gib", "512",
            "--disk-gib", "4000", "--region", "us-east", "--price-minor", "1032", "--currency", "usd"]  # fmt: skip
    assert gpucloud("sku", "add", "--name", "a100x4", *args, env=service_env).returncode == 0
    again = gpucloud("sku", "add", "--name", "A100X4", *args, env=service_env)
    assert again.returncode == 2 and "[NAME_TAKEN]" in again.stderr
    listed = gpucloud("sku", "list", env=service_env)
    assert "a100x4" in listed.stdout and "10.32 USD/h" in listed.stdout
    assert gpucloud("sku", "retire", "a100x4", env=service_env).returncode == 0
    twice = gpucloud("sku", "retire", "a100x4", env=service_env)
    assert twice.returncode == 2 and "[ALREADY_RETIRED]" in twice.stderr
    assert "a100x4" not in gpucloud("sku", "list", env=service_env).stdout
    assert "retired" in gpucloud("sku", "list", "--all", env=service_env).stdout
    missing = gpucloud("sku", "retire", "no-such-sku", env=service_env)
    assert missing.returncode == 2 and "[NOT_FOUND]" in missing.stderr
    assert "No SKU named 'no-such-sku'" in missing.stderr


def test_export_schema_check_detects_drift(tmp_path) -> None:
    assert gpucloud("export-schema", "--check", env={"PATH": "/usr/bin:/bin"}).returncode == 0
    stale = tmp_path / "schema.graphql"
    stale.write_text("type Query { old: Int }\n")
    drift = gpucloud(
        "export-schema", "--check", "--path", str(stale), env={"PATH": "/usr/bin:/bin"}
    )
    assert drift.returncode == 1 and "out of date" in drift.stderr
