"""`gpucloud admin create` and `gpucloud audit verify` as an operator runs them."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.support.processes import gpucloud

PASSWORD = "operator password 1\n"


async def _sql(database_url: str, *statements: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        rows: list[asyncpg.Record] = []
        for statement in statements:
            rows = await conn.fetch(statement)
        return rows
    finally:
        await conn.close()


def test_admin_create_makes_an_audited_administrator(service_env, engine) -> None:  # type: ignore[no-untyped-def]
    result = gpucloud("admin", "create", "--email", "Ops@Example.com", "--password-stdin",
                      env=service_env, stdin=PASSWORD)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "created administrator ops@example.com" in result.stdout
    url = service_env["DATABASE_URL"]
    users = asyncio.run(_sql(url, "SELECT email, role, password_hash FROM users"))
    assert [(u["email"], u["role"]) for u in users] == [("ops@example.com", "admin")]
    assert users[0]["password_hash"].startswith("$argon2id$")
    audit = asyncio.run(_sql(url, "SELECT action, actor_type, request_id FROM audit_events"))
    assert [tuple(a) for a in audit] == [("account.created", "system", "cli")]

    again = gpucloud("admin", "create", "--email", "ops@example.com", "--password-stdin",
                     env=service_env, stdin=PASSWORD)  # fmt: skip
    assert again.returncode == 2
    assert "--email: An account with this email exists. [EMAIL_TAKEN]" in again.stderr


def test_admin_create_names_every_bad_input_and_writes_nothing(service_env, engine) -> None:  # type: ignore[no-untyped-def]
    result = gpucloud("admin", "create", "--email", "nope", "--password-stdin",
                      env=service_env, stdin="short\n")  # fmt: skip
    assert result.returncode == 2
    assert "--email: Enter a valid email address. [INVALID_EMAIL]" in result.stderr
    assert "password: Use at least 12 characters. [PASSWORD_TOO_SHORT]" in result.stderr
    assert "Traceback" not in result.stderr
    rows = asyncio.run(_sql(service_env["DATABASE_URL"], "SELECT count(*) AS n FROM users"))
    assert rows[0]["n"] == 0


def test_audit_verify_names_the_first_altered_row(service_env, engine) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        made = gpucloud("admin", "create", "--email", f"ops{i}@example.com", "--password-stdin",
                        env=service_env, stdin=PASSWORD)  # fmt: skip
        assert made.returncode == 0, made.stderr
    ok = gpucloud("audit", "verify", "--batch", "2", env=service_env)
    assert ok.returncode == 0, ok.stderr
    assert "audit chain intact: 3 rows verified" in ok.stdout

    url = service_env["DATABASE_URL"]
    ids = [r["id"] for r in asyncio.run(_sql(url, "SELECT id FROM audit_events ORDER BY id"))]
    # Someone with superuser rights disables the trigger and edits the second row.
    asyncio.run(_sql(url, "SET session_replication_role = replica",
                     f"UPDATE audit_events SET action = 'account.viewed' WHERE id = {ids[1]}"))  # fmt: skip
    broken = gpucloud("audit", "verify", env=service_env)
    assert broken.returncode == 1
    assert f"audit chain BROKEN at row {ids[1]}" in broken.stderr
    assert "1 rows before it verified" in broken.stderr
