"""EmbeddedPostgres and EmbeddedRedis with real clients; nothing may outlive stop()."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infra.embedded import EmbeddedPostgres, EmbeddedRedis, alive

pytestmark = pytest.mark.slow  # starts real server processes
REPO_ROOT = Path(__file__).resolve().parents[2]


def _postgres_family(pgdata: Path) -> list[psutil.Process]:
    """Live postmasters of pgdata (their cmdline names it) and all their backends."""
    family = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(pgdata) in (proc.info["cmdline"] or []):
            family += [proc, *proc.children(recursive=True)]
    return [p for p in family if alive(p)]


def _start_and_crash(kind: str, state_dir: Path, port: int = 0) -> dict[str, int]:
    """Start a server in a child process that is then SIGKILLed, leaving the server orphaned."""
    script = textwrap.dedent(
        f"""
        import json, os, signal, sys
        from pathlib import Path
        from infra.embedded import EmbeddedPostgres, EmbeddedRedis, alive
        if {kind!r} == "redis":
            server = EmbeddedRedis(Path({str(state_dir)!r}), port={port} or None)
            server.start()
            info = {{"pid": server._proc.pid, "port": server.port}}
        else:
            server = EmbeddedPostgres(Path({str(state_dir)!r}))
            server.start()
            pid_file = server.pgdata / "postmaster.pid"
            info = {{"pid": int(pid_file.read_text().split()[0])}}
        print(json.dumps(info), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    info: dict[str, int] = json.loads(done.stdout.splitlines()[-1])
    return info


async def test_postgres_answers_asyncpg_and_sqlalchemy_then_stops(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    url = server.start()
    try:
        assert url.startswith("postgresql://postgres@/postgres?host=/")
        family = _postgres_family(server.pgdata)
        assert family, "the postmaster should be running"

        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

        # The form our SQLAlchemy engine gets.
        engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
        try:
            async with engine.connect() as sa_conn:
                assert (await sa_conn.execute(text("SELECT 1"))).scalar() == 1
        finally:
            await engine.dispose()
    finally:
        server.stop()

    assert not [p for p in family if alive(p)]
    assert not _postgres_family(server.pgdata)


async def test_postgres_stops_a_server_left_by_a_crashed_run(tmp_path: Path) -> None:
    orphan = psutil.Process(_start_and_crash("postgres", tmp_path)["pid"])
    assert alive(orphan)

    server = EmbeddedPostgres(tmp_path)
    url = server.start()
    try:
        assert not alive(orphan)
        conn = await asyncpg.connect(url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
    finally:
        server.stop()
    assert not _postgres_family(server.pgdata)


def test_state_dir_under_root_home_is_refused() -> None:
    with pytest.raises(ValueError, match="/root"):
        EmbeddedPostgres(Path("/root/gpucloud-state"))


def test_redis_answers_and_stops(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        assert url == f"redis://127.0.0.1:{server.port}/0"
        assert server._proc is not None
        proc = psutil.Process(server._proc.pid)
        listening = {c.laddr.ip for c in proc.net_connections() if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        client = redis.Redis.from_url(url)
        try:
            assert client.ping()
            assert client.set("greeting", "hello")
            assert client.get("greeting") == b"hello"
        finally:
            client.close()
    finally:
        server.stop()
    assert not alive(proc)
    assert not (tmp_path / "redis" / "redis.pid").exists()


def test_redis_stops_a_server_left_by_a_crashed_run(tmp_path: Path) -> None:
    crashed = _start_and_crash("redis", tmp_path)
    orphan = psutil.Process(crashed["pid"])
    assert alive(orphan) and orphan.name() == "redis-server"

    # Same port too: it is only free once the orphan is gone.
    server = EmbeddedRedis(tmp_path, port=crashed["port"])
    url = server.start()
    try:
        assert not alive(orphan)
        assert redis.Redis.from_url(url).ping()
        assert server._proc is not None
        assert int((tmp_path / "redis" / "redis.pid").read_text()) == server._proc.pid
    finally:
        server.stop()


def test_redis_leaves_a_live_unrelated_pid_alone(tmp_path: Path) -> None:
    # A pid file naming a process that is not our redis-server (pid reuse) must not kill it.
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "redis.pid").write_text(f"{os.getpid()}\n")
    server = EmbeddedRedis(tmp_path)
    server.start()
    server.stop()
