"""Session fixtures: real PostgreSQL and Redis, a fresh database and Redis namespace per run."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra import migrate
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from infra.settings import Settings, load_settings
from tests.support.servers import ServerUrls, create_database, drop_database, running_servers

# Webhook secrets the app accepts in tests: the current one and one being rotated out.
WEBHOOK_SECRET = "whsec_test_current"
OLD_WEBHOOK_SECRET = "whsec_test_previous"

if TYPE_CHECKING:
    from tests.support.localstripe import LocalStripe

pytest_plugins = ["tests.support.localstripe"]  # the session-wide `localstripe` fixture

CLEARED_TABLES = ("notifications", "notification_counters", "allocation_events", "allocations", "gpu_assignments", "node_events", "node_gpus", "nodes", "ssh_ca_keys",
                  "secrets", "reconciliation_issues", "stripe_events", "refunds", "payments",
                  "idempotency_keys", "ledger_transfers", "ledger_holds", "ledger_balances",
                  "ledger_accounts", "skus", "outbox", "audit_events", "ssh_keys", "api_tokens", "sessions",
                  "user_identities", "users")  # fmt: skip


@pytest.fixture(scope="session")
def servers() -> Iterator[ServerUrls]:
    # Embedded PostgreSQL runs as an unprivileged user (pgserver's `pgserver`, when we are
    # root), and pgserver opens every parent of its data dir to it: keep that to a dir of ours.
    state = Path(tempfile.mkdtemp(prefix="gpucloud-test-"))
    state.chmod(0o755)
    try:
        with running_servers(state) as found:
            yield found
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(servers: ServerUrls) -> Iterator[str]:
    """A database of this run's own, migrated to head, dropped at the end."""
    name, url = create_database(servers.admin_database_url)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_database(servers.admin_database_url, name)


@pytest.fixture(scope="session")
def redis_namespace(servers: ServerUrls) -> Iterator[str]:
    namespace = f"gpucloud_test_{uuid.uuid4().hex[:10]}"
    yield namespace
    client = redis.Redis.from_url(servers.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def kms_key_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local KMS key file of this run's own (mode 0600), so the fleet can seal node keys."""
    from infra.crypto.local_kms import LocalKms

    return str(LocalKms.create(tmp_path_factory.mktemp("kms") / "kms-keys.json").path)


@pytest.fixture(scope="session")
def service_env(
    database_url: str, servers: ServerUrls, redis_namespace: str, localstripe: LocalStripe,
    kms_key_file: str,
) -> dict[str, str]:  # fmt: skip
    """Environment for child processes (CLI, serve, worker) pointed at this run's servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLOUD_")}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=servers.redis_url,
        GPUCLOUD_REDIS_NAMESPACE=redis_namespace,
        GPUCLOUD_LOG_LEVEL="info",
        GPUCLOUD_OUTBOX_POLL_SECONDS="0.5",
        # Plain-http test clients cannot hold Secure cookies; tests of the flag set it back.
        GPUCLOUD_COOKIE_SECURE="false",
        # A light Argon2 profile keeps hundreds of sign-ups fast; the default profile has its
        # own test. Limits are high so only the rate-limit tests meet them.
        GPUCLOUD_ARGON2_TIME_COST="1",
        GPUCLOUD_ARGON2_MEMORY_KIB="8192",
        GPUCLOUD_ARGON2_PARALLELISM="1",
        GPUCLOUD_LOGIN_LIMIT_PER_IP="100000",
        GPUCLOUD_LOGIN_FAILURES_PER_ACCOUNT="10000",
        GPUCLOUD_SIGNUP_LIMIT_PER_IP="100000",
        # Tests read their sockets between blocking steps (a CLI run, an HTTP call), so a
        # heartbeat ping can wait unanswered for as long as a step takes on a loaded machine;
        # real clients answer from their event loop. The heartbeat tests set their own values.
        GPUCLOUD_WS_PONG_TIMEOUT_SECONDS="120",
        PYTHONUNBUFFERED="1",
        STRIPE_SECRET_KEY=localstripe.api_key,
        STRIPE_API_BASE=localstripe.url,
        STRIPE_WEBHOOK_SECRETS=f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
        STRIPE_TIMEOUT_SECONDS="5",
        GPUCLOUD_KMS_KEY_FILE=kms_key_file,
    )
    return env


@pytest.fixture
def settings(service_env: dict[str, str]) -> Settings:
    return load_settings(service_env)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(database_url, pool_size=4)
    async with eng.begin() as conn:
        # The audit table refuses TRUNCATE through a trigger; as the superuser the tests run
        # as, replica mode skips triggers for this one statement's transaction.
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(f"TRUNCATE {', '.join(CLEARED_TABLES)} RESTART IDENTITY"))
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def uow(engine: AsyncEngine) -> object:
    return lambda: SqlUnitOfWork(engine)


@pytest.fixture
async def app(settings: Settings, engine: AsyncEngine) -> AsyncIterator[object]:
    """The real app in-process with its lifespan; `engine` cleans the tables first."""
    from gpucloud.app import create_app

    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as c:  # type: ignore[arg-type]
        yield c


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # CI must exercise every real server: a skipped test there is a failure, not a pass.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped:
        print(f"\nCI: {skipped} test(s) were skipped; every test must run in CI.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


REPO = Path(__file__).resolve().parent.parent
