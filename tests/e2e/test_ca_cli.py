"""`gpucloud ca init|rotate|retire|status` as an operator runs them, against the test database:
rotation keeps the old key until every node has the new one, and each refusal names why."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncEngine

from infra.db.uow import SqlUnitOfWork
from tests.support.fleet import seed_node
from tests.support.processes import gpucloud


def _ok(result: object) -> str:
    out = result.stdout + result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 0, out  # type: ignore[attr-defined]
    assert "Traceback" not in out
    return str(result.stdout)  # type: ignore[attr-defined]


async def _give_node_the_keys(engine: AsyncEngine, keys: list[str]) -> None:
    async with SqlUnitOfWork(engine) as uow:
        node = await uow.nodes.get(1)
        assert node is not None
        await uow.nodes.save(replace(node, ca_keys=tuple(keys), version=node.version + 1))
        await uow.commit()


async def test_ca_lifecycle(service_env: dict[str, str], engine: AsyncEngine) -> None:
    missing = gpucloud("ca", "status", env=service_env)
    assert missing.returncode == 1 and "[CA_NOT_FOUND]" in missing.stderr

    first = _ok(gpucloud("ca", "init", env=service_env))
    assert "current CA key 1: SHA256:" in first and "ssh-ed25519 AAAA" in first
    again = gpucloud("ca", "init", env=service_env)
    assert again.returncode == 2 and "[CA_EXISTS]" in again.stderr

    await seed_node(SqlUnitOfWork(engine), "gpu-a")
    rotated = _ok(gpucloud("ca", "rotate", env=service_env))
    assert "current CA key 2" in rotated
    status = _ok(gpucloud("ca", "status", env=service_env))
    assert "   2  current" in status and "   1  previous" in status
    assert "not yet trusting the current key: gpu-a" in status

    held = gpucloud("ca", "retire", "1", env=service_env)
    assert held.returncode == 2 and "[CA_NODES_NOT_UPDATED]" in held.stderr
    assert "gpu-a" in held.stderr
    current = gpucloud("ca", "retire", "2", env=service_env)
    assert current.returncode == 2 and "[CA_KEY_CURRENT]" in current.stderr

    keys = [line.split("  ")[0] for line in rotated.splitlines() if line.startswith("ssh-")]
    await _give_node_the_keys(engine, keys)  # as its next probe would
    assert "retired CA key 1" in _ok(gpucloud("ca", "retire", "1", env=service_env))
    final = _ok(gpucloud("ca", "status", env=service_env))
    assert "previous" not in final and "every node trusts the current key" in final


def test_ca_commands_need_the_kms(service_env: dict[str, str]) -> None:
    env = {k: v for k, v in service_env.items() if k != "GPUCLOUD_KMS_KEY_FILE"}
    result = gpucloud("ca", "init", env=env)
    assert result.returncode == 2
    assert "GPUCLOUD_KMS_KEY_FILE: required for `gpucloud ca init`" in result.stderr
