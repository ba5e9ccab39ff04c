"""The local KMS: a 0600 key file with several versions, written atomically, never shown."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from pathlib import Path

import pytest

from domain.secrets import SecretError, SecretErrorCode, WrappedKey
from gpucloud.dev import dev_key_file
from infra.crypto.local_kms import KeyFileError, LocalKms

DATA_KEY = bytes(range(32))
CONTEXT = b"secret-context"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _material(path: Path) -> list[str]:
    return list(json.loads(path.read_text())["keys"].values())


def _write_file(path: Path, doc: object, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(doc))
    path.chmod(mode)
    return path


def test_create_makes_one_version_with_mode_0600(tmp_path: Path) -> None:
    kms = LocalKms.create(tmp_path / "keys.json")
    assert run(kms.current_version()) == "v1"
    assert list(run(kms.versions())) == ["v1"]
    assert _mode(kms.path) == 0o600
    doc = json.loads(kms.path.read_text())
    assert doc["current"] == "v1" and len(base64.b64decode(doc["keys"]["v1"])) == 32
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temporary file left


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    kms = LocalKms.create(tmp_path / "keys.json")
    before = kms.path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists; refusing to overwrite"):
        LocalKms.create(kms.path)
    assert kms.path.read_bytes() == before


def test_new_versions_wrap_and_old_ones_still_unwrap(tmp_path: Path) -> None:
    kms = LocalKms.create(tmp_path / "keys.json")
    old = run(kms.wrap(DATA_KEY, context=CONTEXT))
    assert run(kms.add_version()) == "v2"
    assert run(kms.add_version()) == "v3"
    assert list(run(kms.versions())) == ["v1", "v2", "v3"]
    new = run(kms.wrap(DATA_KEY, context=CONTEXT))
    assert (old.version, new.version) == ("v1", "v3")
    assert run(kms.unwrap(old, context=CONTEXT)) == DATA_KEY
    assert run(kms.unwrap(new, context=CONTEXT)) == DATA_KEY
    # Bytes wrapped by one version do not unwrap when labelled as another.
    with pytest.raises(SecretError) as caught:
        run(kms.unwrap(WrappedKey("v2", old.ciphertext), context=CONTEXT))
    assert caught.value.code is SecretErrorCode.DECRYPT_FAILED


def test_removed_version_is_unknown_and_current_cannot_be_removed(tmp_path: Path) -> None:
    kms = LocalKms.create(tmp_path / "keys.json")
    old = run(kms.wrap(DATA_KEY, context=CONTEXT))
    run(kms.add_version())
    with pytest.raises(SecretError) as current:
        run(kms.remove_version("v2"))
    assert current.value.code is SecretErrorCode.KEY_VERSION_CURRENT
    with pytest.raises(SecretError) as unknown:
        run(kms.remove_version("v9"))
    assert unknown.value.code is SecretErrorCode.KEY_VERSION_UNKNOWN

    run(kms.remove_version("v1"))
    assert list(run(kms.versions())) == ["v2"]
    with pytest.raises(SecretError) as gone:
        run(kms.unwrap(old, context=CONTEXT))
    assert gone.value.code is SecretErrorCode.KEY_VERSION_UNKNOWN
    # Version names are never reused: the next one is v3 even though v1 is gone.
    assert run(kms.add_version()) == "v3"


def test_writes_are_atomic_and_keep_mode_0600(tmp_path: Path) -> None:
    kms = LocalKms.create(tmp_path / "keys.json")
    inode = kms.path.stat().st_ino
    run(kms.add_version())
    # Replaced whole by a rename (a new inode), never rewritten in place.
    assert kms.path.stat().st_ino != inode
    assert _mode(kms.path) == 0o600
    run(kms.remove_version("v1"))
    assert _mode(kms.path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json", "keys.json.lock"]
    assert _mode(tmp_path / "keys.json.lock") == 0o600


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kms = LocalKms.create(tmp_path / "keys.json")
    before = kms.path.read_bytes()

    def disk_full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)  # fails after the temporary file is written
    with pytest.raises(KeyFileError, match="cannot write the key file"):
        run(kms.add_version())
    monkeypatch.undo()
    assert kms.path.read_bytes() == before
    assert run(kms.current_version()) == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json", "keys.json.lock"]


def test_another_process_adding_a_version_is_seen_at_once(tmp_path: Path) -> None:
    serving = LocalKms.create(tmp_path / "keys.json")  # the API's instance
    operator = LocalKms(serving.path)  # `gpucloud keys new-version`
    before = run(serving.wrap(DATA_KEY, context=CONTEXT))
    run(operator.add_version())
    after = run(serving.wrap(DATA_KEY, context=CONTEXT))
    assert (before.version, after.version) == ("v1", "v2")
    assert run(operator.unwrap(after, context=CONTEXT)) == DATA_KEY


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_group_or_world_access_is_refused_naming_the_path(tmp_path: Path, mode: int) -> None:
    kms = LocalKms.create(tmp_path / "keys.json")
    material = _material(kms.path)
    kms.path.chmod(mode)
    with pytest.raises(KeyFileError) as caught:
        LocalKms(kms.path)
    message = str(caught.value)
    assert str(kms.path) in message and f"mode {mode:04o}" in message
    assert f"chmod 600 {kms.path}" in message
    assert not any(m in message for m in material)
    # A running instance refuses too, once the file turns unsafe under it.
    kms.path.chmod(0o600)
    serving = LocalKms(kms.path)
    kms.path.chmod(mode)
    os.utime(kms.path, ns=(1, 1))
    with pytest.raises(KeyFileError):
        run(serving.wrap(DATA_KEY, context=CONTEXT))


def test_missing_and_malformed_files_are_named_without_key_material(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such key file; create it with `gpucloud keys init`"):
        LocalKms(tmp_path / "absent.json")
    good = base64.b64encode(b"k" * 32).decode()
    cases = {
        "not json": "not a key file",
        json.dumps([1, 2]): "not a key file",
        json.dumps({"current": "v1", "keys": {"v1": base64.b64encode(b"short").decode()}}):
            "key version v1 is not 32 bytes of base64",
        json.dumps({"current": "v1", "keys": {"v1": "%%%not-base64%%%"}}):
            "key version v1 is not 32 bytes of base64",
        json.dumps({"current": "v2", "keys": {"v1": good}}): "current version 'v2' has no key",
        json.dumps({"current": "k", "keys": {"k": good}}): "is not named v1, v2",
    }  # fmt: skip
    for i, (content, expected) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.json"
        path.write_text(content)
        path.chmod(0o600)
        with pytest.raises(KeyFileError) as caught:
            LocalKms(path)
        assert str(path) in str(caught.value) and expected in str(caught.value)
        assert good not in str(caught.value) and "short" not in str(caught.value)


def test_repr_hides_key_material(tmp_path: Path) -> None:
    kms = LocalKms.create(tmp_path / "keys.json")
    run(kms.add_version())
    run(kms.wrap(DATA_KEY, context=CONTEXT))  # fills the cipher cache
    shown = repr(kms) + str(kms) + repr(kms._ring)
    assert "current='v2'" in shown and "('v1', 'v2')" in shown
    for encoded in _material(kms.path):
        assert encoded not in shown
        assert repr(base64.b64decode(encoded)) not in shown


def test_dev_makes_a_key_file_in_its_state_dir_once(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    path = dev_key_file(env, tmp_path)
    assert env["GPUCLOUD_KMS_KEY_FILE"] == str(path) == str(tmp_path / "kms-keys.json")
    assert _mode(path) == 0o600
    content = path.read_bytes()
    assert dev_key_file({}, tmp_path) == path and path.read_bytes() == content  # kept
    # A configured file is used as it is, never replaced.
    own = LocalKms.create(tmp_path / "own.json").path
    env = {"GPUCLOUD_KMS_KEY_FILE": str(own)}
    assert dev_key_file(env, tmp_path) == own and env["GPUCLOUD_KMS_KEY_FILE"] == str(own)
