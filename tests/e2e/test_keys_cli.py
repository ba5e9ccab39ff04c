"""`gpucloud keys init|new-version|rotate|retire|status` as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

from domain.secret_services import open_secret, seal
from domain.secrets import SecretPurpose, SecretRef
from infra.crypto.envelope import AesGcmCipher
from infra.crypto.local_kms import LocalKms
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork
from tests.support.processes import gpucloud

CIPHER = AesGcmCipher()
SECRETS = [f"node admin key {i}".encode() for i in range(3)]


async def _seal(database_url: str, key_file: Path) -> list[SecretRef]:
    engine = make_engine(database_url, pool_size=1)
    try:
        async with SqlUnitOfWork(engine) as uow:
            kms = LocalKms(key_file)
            refs = [await seal(uow, kms, CIPHER, SecretPurpose.NODE_ADMIN_KEY, s) for s in SECRETS]
            await uow.commit()
            return refs
    finally:
        await engine.dispose()


async def _open(database_url: str, key_file: Path, refs: list[SecretRef]) -> list[bytes]:
    engine = make_engine(database_url, pool_size=1)
    try:
        async with SqlUnitOfWork(engine) as uow:
            kms = LocalKms(key_file)
            return [await open_secret(uow, kms, CIPHER, ref.id) for ref in refs]
    finally:
        await engine.dispose()


def _clean(result: object) -> None:
    assert "Traceback" not in result.stderr + result.stdout  # type: ignore[attr-defined]


def _material(key_file: Path) -> list[str]:
    return list(json.loads(key_file.read_text())["keys"].values())


def test_init_new_version_rotate_retire_round_trip(service_env, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    key_file = tmp_path / "keys.json"
    env = {**service_env, "GPUCLOUD_KMS_KEY_FILE": str(key_file)}
    url = service_env["DATABASE_URL"]

    init = gpucloud("keys", "init", env=env)
    assert init.returncode == 0, init.stderr
    assert f"created key file {key_file} (mode 0600) with key version v1" in init.stdout
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = gpucloud("keys", "init", env=env)
    assert again.returncode == 2 and "already exists; refusing to overwrite it" in again.stderr
    _clean(again)

    refs = asyncio.run(_seal(url, key_file))
    status = gpucloud("keys", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "current version: v1" in status.stdout
    assert "v1  3 secret(s)  (current)" in status.stdout

    new = gpucloud("keys", "new-version", env=env)
    assert new.returncode == 0, new.stderr
    assert "added key version v2" in new.stdout

    refused = gpucloud("keys", "retire", "v1", env=env)
    assert refused.returncode == 2
    assert ("gpucloud keys retire: error: Key version v1 still wraps 3 secret(s); run "
            "`gpucloud keys rotate` first. [KEY_VERSION_IN_USE]") in refused.stderr  # fmt: skip
    assert refused.stderr.count("\n") == 1  # one line
    _clean(refused)
    current = gpucloud("keys", "retire", "v2", env=env)
    assert current.returncode == 2 and "[KEY_VERSION_CURRENT]" in current.stderr

    rotated = gpucloud("keys", "rotate", "--batch", "2", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert "re-wrapped 3 data key(s) under v2" in rotated.stdout
    status = gpucloud("keys", "status", env=env)
    assert "v1  0 secret(s)" in status.stdout and "v2  3 secret(s)  (current)" in status.stdout

    retired = gpucloud("keys", "retire", "v1", env=env)
    assert retired.returncode == 0, retired.stderr
    assert f"retired key version v1: removed from {key_file}" in retired.stdout
    assert list(json.loads(key_file.read_text())["keys"]) == ["v2"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # Every secret still decrypts with v1 gone.
    assert asyncio.run(_open(url, key_file, refs)) == SECRETS

    # No command ever printed key material.
    material = _material(key_file)
    for result in (init, again, status, new, refused, rotated, retired):
        assert not any(m in result.stdout + result.stderr for m in material)


def test_bad_inputs_are_one_line_errors(service_env, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    unset = {k: v for k, v in service_env.items() if k != "GPUCLOUD_KMS_KEY_FILE"}
    for action in (["init"], ["new-version"], ["retire", "v1"]):
        missing = gpucloud("keys", *action, env=unset)
        assert missing.returncode == 2, action
        assert (f"GPUCLOUD_KMS_KEY_FILE: required for `gpucloud keys {action[0]}`, not set"
                in missing.stderr)  # fmt: skip
        _clean(missing)

    key_file = tmp_path / "keys.json"
    env = {**service_env, "GPUCLOUD_KMS_KEY_FILE": str(key_file)}
    absent = gpucloud("keys", "status", env=env)
    assert absent.returncode == 2
    assert f"{key_file}: no such key file; create it with `gpucloud keys init`" in absent.stderr
    _clean(absent)

    assert gpucloud("keys", "init", env=env).returncode == 0
    unknown = gpucloud("keys", "retire", "v9", env=env)
    assert unknown.returncode == 2
    assert "No key version 'v9' in the KMS. [KEY_VERSION_UNKNOWN]" in unknown.stderr
    _clean(unknown)

    os.chmod(key_file, 0o644)
    for action in (["status"], ["new-version"]):
        exposed = gpucloud("keys", *action, env=env)
        assert exposed.returncode == 2, action
        assert (f"{key_file}: the key file may be read or written by group or others "
                "(mode 0644); refusing to use it") in exposed.stderr  # fmt: skip
        assert not any(m in exposed.stderr for m in _material(key_file))
        _clean(exposed)

    os.chmod(key_file, 0o600)
    no_dir = {**service_env, "GPUCLOUD_KMS_KEY_FILE": str(tmp_path / "nope" / "keys.json")}
    bad_dir = gpucloud("keys", "init", env=no_dir)
    assert bad_dir.returncode == 2 and "does not exist" in bad_dir.stderr
    _clean(bad_dir)
    no_db = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    needs_db = gpucloud("keys", "rotate", env=no_db)
    assert needs_db.returncode == 2 and "DATABASE_URL: required, not set" in needs_db.stderr
