"""Allocation accounts on test nodes: a node directory other users can enter, a random user-name
prefix whose users are deleted afterwards, and an sshd that reads each user's own keys.

Running the suite as root, `ensure_account` makes real Linux users on this machine; their names
carry the test's random prefix and their homes live in the node's directory, so nothing stays.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import string
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ssh_node import SshNode


@contextmanager
def open_node_root() -> Iterator[Path]:
    """A fresh directory for a node, mode 0755: pytest's tmp dirs are 0700 to others, and the
    node's users must reach their homes and (fake) GPU devices inside it."""
    root = Path(tempfile.mkdtemp(prefix="gpucloud-node-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def user_prefix() -> Iterator[str]:
    """A random account-name prefix ("t" and four letters); its users (and their own groups)
    are deleted afterwards, processes first."""
    prefix = "t" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4))
    try:
        yield prefix
    finally:
        remove_users(prefix)


def remove_users(prefix: str) -> None:
    for line in Path("/etc/passwd").read_text().splitlines():
        name = line.split(":", 1)[0]
        if name.startswith(prefix):
            subprocess.run(["pkill", "-KILL", "-u", name], check=False, capture_output=True)
            subprocess.run(["userdel", "-r", name], check=False, capture_output=True)
    for line in Path("/etc/group").read_text().splitlines():
        name = line.split(":", 1)[0]
        if name.startswith(prefix):
            subprocess.run(["groupdel", name], check=False, capture_output=True)


def serve_user_keys(node: SshNode, timeout: float = 15) -> None:
    """Make the node's sshd read each user's ~/.ssh/authorized_keys, as a stock sshd does (the
    harness names one file for every login); the harness's own login keeps its file. sshd
    restarts itself in place on SIGHUP; this returns once it listens again."""
    config = node.root / "sshd_config"
    shared = f"AuthorizedKeysFile {node.root}/authorized_keys\n"
    text = config.read_text()
    assert shared in text, "the harness's sshd_config changed"
    # Match blocks run to the end of the file, so this one goes last.
    config.write_text(text.replace(shared, "AuthorizedKeysFile .ssh/authorized_keys\n")
                      + f"Match User {node.user}\n    {shared}")  # fmt: skip
    log = node.root / "sshd.log"
    listening = log.read_text(errors="replace").count("Server listening on")
    os.kill(int((node.root / "sshd.pid").read_text()), signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count("Server listening on") <= listening:
        if time.monotonic() > deadline:
            raise RuntimeError("sshd did not come back after SIGHUP")
        time.sleep(0.05)


def sshd_children(node: SshNode) -> list[int]:
    """The processes serving the node's open connections (the listener's children)."""
    listener = (node.root / "sshd.pid").read_text().strip()
    found = subprocess.run(["pgrep", "-P", listener], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]
