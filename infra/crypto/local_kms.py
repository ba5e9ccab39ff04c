"""A local KMS: key-encryption keys in a file of ours, several versions, AES-256-GCM wrapping.

The file is JSON, `{"current": "v2", "keys": {"v1": "<base64 of 32 bytes>", "v2": ...}}`, and
must be readable by its owner only (mode 0600): a file that group or others may read or write
is refused. Changes are written atomically (a 0600 temporary file, fsync, rename), under a lock
file beside it, so a reader sees the old file or the new one and two operators cannot lose one
another's version. Every operation checks whether the file changed and reloads it, so a running
API or worker wraps with a new version as soon as `gpucloud keys new-version` wrote it.

Key material appears in no message, log line or repr: errors name the path and the problem.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.secrets import (
    SecretError,
    SecretErrorCode,
    WrappedKey,
    decrypt_failed,
    unknown_version,
)

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
_TAG_BYTES = 16
_VERSION = re.compile(r"v[1-9][0-9]{0,8}")
_FORMAT = '{"current": "v1", "keys": {"v1": "<base64 of 32 bytes>"}}'


class KeyFileError(Exception):
    """The key file is missing, unsafe or malformed; the message names the path, never a key."""


def _order(version: str) -> int:
    return int(version[1:])


@dataclass(frozen=True)
class _Keyring:
    current: str
    keys: dict[str, bytes] = field(repr=False)
    stamp: tuple[int, ...]  # device, inode, size, mtime: a change means "read it again"
    aeads: dict[str, AESGCM] = field(repr=False, default_factory=dict)

    def aead(self, version: str) -> AESGCM:
        found = self.aeads.get(version)
        if found is None:
            key = self.keys.get(version)
            if key is None:
                raise unknown_version(version)
            found = self.aeads[version] = AESGCM(key)
        return found

    def versions(self) -> tuple[str, ...]:
        return tuple(sorted(self.keys, key=_order))


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: Path) -> _Keyring:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: no such key file; create it with `gpucloud keys init`"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: the key file is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"{path}: the key file may be read or written by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); refusing to use it. Run `chmod 600 {path}` "
                "if it was not exposed, else make new keys"
            )
        raw = f.read()
    return _parse(path, raw, _stamp(st))


def _parse(path: Path, raw: bytes, stamp: tuple[int, ...]) -> _Keyring:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise KeyFileError(f"{path}: not a key file (expected JSON like {_FORMAT})") from None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("current"), str)
        or not isinstance(doc.get("keys"), dict)
    ):
        raise KeyFileError(f"{path}: not a key file (expected JSON like {_FORMAT})")
    keys: dict[str, bytes] = {}
    for version, encoded in doc["keys"].items():
        if not _VERSION.fullmatch(version):
            raise KeyFileError(f"{path}: key version {version!r} is not named v1, v2, ...")
        try:
            key = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"{path}: key version {version} is not {KEY_BYTES} bytes of base64")
        keys[version] = key
    if doc["current"] not in keys:
        raise KeyFileError(f"{path}: the current version {doc['current']!r} has no key")
    return _Keyring(doc["current"], keys, stamp)


def _document(current: str, keys: dict[str, bytes]) -> bytes:
    body: dict[str, Any] = {
        "current": current,
        "keys": {v: base64.b64encode(keys[v]).decode() for v in sorted(keys, key=_order)},
    }
    return (json.dumps(body, indent=2) + "\n").encode()


def _write(path: Path, data: bytes, *, replace: bool) -> None:
    """Write `data` to `path` atomically with mode 0600; with `replace` False, fail (rather
    than overwrite) if the path exists, atomically too."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # refuses an existing path, unlike rename
            except FileExistsError:
                raise KeyFileError(
                    f"{path}: a key file already exists; refusing to overwrite it"
                ) from None
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise writers of one key file (readers need no lock: the file is replaced whole)."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise KeyFileError(f"{path}.lock: cannot open the lock file ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class LocalKms:
    """`KeyService` and `KeyAdmin` over a local key file. Raises `KeyFileError` when the file
    is missing, unsafe or malformed (at construction, or when it changes to such a state)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._ring = _read(self._path)

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> LocalKms:
        """Write a new key file with one random version, v1; never overwrites one."""
        target = Path(path)
        if not target.parent.is_dir():
            raise KeyFileError(f"{target}: the directory {target.parent} does not exist")
        try:
            _write(target, _document("v1", {"v1": os.urandom(KEY_BYTES)}), replace=False)
        except OSError as exc:
            raise KeyFileError(f"{target}: cannot write the key file ({exc.strerror})") from None
        return cls(target)

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        ring = self._ring
        return f"LocalKms(path={str(self._path)!r}, current={ring.current!r}, versions={ring.versions()!r})"

    def _fresh(self) -> _Keyring:
        """The keyring as the file now has it (re-read only when the file changed)."""
        try:
            current = _stamp(os.stat(self._path))
        except OSError:
            current = ()
        if current != self._ring.stamp:
            self._ring = _read(self._path)
        return self._ring

    # -- KeyService ------------------------------------------------------------------------

    async def current_version(self) -> str:
        return self._fresh().current

    async def versions(self) -> Sequence[str]:
        return self._fresh().versions()

    async def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey:
        ring = self._fresh()
        nonce = os.urandom(NONCE_BYTES)
        sealed = ring.aead(ring.current).encrypt(nonce, data_key, context)
        return WrappedKey(ring.current, nonce + sealed)

    async def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        aead = self._fresh().aead(wrapped.version)
        blob = wrapped.ciphertext
        if len(blob) < NONCE_BYTES + _TAG_BYTES:
            raise decrypt_failed("data key")
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context)
        except InvalidTag:
            raise decrypt_failed("data key") from None

    # -- KeyAdmin --------------------------------------------------------------------------

    async def add_version(self) -> str:
        return await asyncio.to_thread(self._add_version)

    async def remove_version(self, version: str) -> None:
        await asyncio.to_thread(self._remove_version, version)

    def _add_version(self) -> str:
        with _locked(self._path):
            ring = _read(self._path)
            new = f"v{max(map(_order, ring.keys)) + 1}"
            self._save({**ring.keys, new: os.urandom(KEY_BYTES)}, new)
            return new

    def _remove_version(self, version: str) -> None:
        with _locked(self._path):
            ring = _read(self._path)
            if version not in ring.keys:
                raise unknown_version(version)
            if version == ring.current:
                raise SecretError(
                    SecretErrorCode.KEY_VERSION_CURRENT,
                    f"Key version {version} is the current one and cannot be removed.",
                    "version",
                )
            self._save({v: k for v, k in ring.keys.items() if v != version}, ring.current)

    def _save(self, keys: dict[str, bytes], current: str) -> None:
        try:
            _write(self._path, _document(current, keys), replace=True)
        except OSError as exc:
            raise KeyFileError(
                f"{self._path}: cannot write the key file ({exc.strerror})"
            ) from None
        self._ring = _read(self._path)
