"""A GPU node for tests: a real OpenSSH `sshd` on 127.0.0.1 with its own config, host key and
port, and a stand-in `nvidia-smi` on the session PATH that prints real captured output.

sshd comes from the system when installed, else from `.tools/` (`make sshd` unpacks Debian's
package there). Nothing listens beyond loopback, and each node stops with its context.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import REPO, free_port

FIXTURES = REPO / "tests" / "fixtures" / "nvidia-smi"
ONE_H200 = {"query": FIXTURES / "h200" / "nvidia-smi-query.csv",
            "xml": FIXTURES / "h200" / "nvidia-smi-q.xml",
            "list": FIXTURES / "h200" / "nvidia-smi-L.txt"}  # fmt: skip
EIGHT_H200 = {**ONE_H200, "query": FIXTURES / "h200x8-repeated-nvidia-smi-query.csv"}

# Answers like the real tool for the three reports we read, and fails like it otherwise.
_NVIDIA_SMI = """#!/bin/sh
case "$*" in
  *--query-gpu=*) exec cat "{query}" ;;
  *"-q -x"*) exec cat "{xml}" ;;
  -L) exec cat "{list}" ;;
esac
echo "nvidia-smi stand-in: unsupported arguments: $*" >&2
exit 2
"""


def sshd_binary() -> Path:
    for candidate in (REPO / ".tools/openssh/usr/sbin/sshd", Path("/usr/sbin/sshd")):
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("no sshd: run `make sshd` (it unpacks openssh-server under .tools/)")


@dataclass(frozen=True)
class SshNode:
    host: str
    port: int
    user: str
    client_key: Path  # private key the platform logs in with
    host_key_public: str  # "ssh-ed25519 AAAA..." as the node presents it
    root: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def sshd_config(self) -> Path:
        return self.root / "sshd_config"

    @property
    def sshd_dropin_dir(self) -> Path:
        """Included by sshd_config, as sshd_config.d/ is on Debian and Ubuntu."""
        return self.root / "sshd_config.d"

    @property
    def pid_file(self) -> Path:
        return self.root / "sshd.pid"

    @property
    def trusted_ca_file(self) -> Path:
        return self.root / "trusted_ca_keys"

    def trust_ca_keys(self, keys: list[str]) -> None:
        """Rewrite the `TrustedUserCAKeys` file; sshd reads it on each login, no restart."""
        _write_lines(self.trusted_ca_file, keys)

    def set_nvidia_smi(self, script: str | None) -> None:
        """Replace the stand-in (`None` removes it: a node without the tool)."""
        target = self.bin_dir / "nvidia-smi"
        target.unlink(missing_ok=True)
        if script is not None:
            target.write_text(script)
            target.chmod(0o755)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True)  # fmt: skip


def _wait_for(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port}")


@contextmanager
def running_node(
    root: Path, report: dict[str, Path] = ONE_H200, trusted_ca_keys: list[str] | None = None
) -> Iterator[SshNode]:
    """Start one node under `root` (a fresh directory), logged into as the current user. With
    `trusted_ca_keys`, sshd also accepts user certificates signed by those CA public keys.

    sshd runs as a plain process (no init manages it: reloaded by SIGHUP to its PidFile), and
    includes `sshd_config.d/*.conf`, where bootstrap's drop-in goes. `sshd` is on the session
    PATH, so `sshd -T` can check the config as on a real host."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    (root / "sshd_config.d").mkdir(exist_ok=True)
    (root / "bin" / "sshd").symlink_to(sshd_binary())
    _keygen(root / "host_ed25519")
    _keygen(root / "client_ed25519")
    shutil.copy(root / "client_ed25519.pub", root / "authorized_keys")
    node_script = _NVIDIA_SMI.format(**{k: str(v) for k, v in report.items()})
    port = free_port()
    trusted_ca = ""
    if trusted_ca_keys is not None:
        _write_lines(root / "trusted_ca_keys", trusted_ca_keys)
        trusted_ca = f"TrustedUserCAKeys {root}/trusted_ca_keys\n"
    config = root / "sshd_config"
    config.write_text(f"""\
Include {root}/sshd_config.d/*.conf
Port {port}
ListenAddress 127.0.0.1
HostKey {root}/host_ed25519
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
SetEnv PATH={root}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
LogLevel VERBOSE
{trusted_ca}""")
    if os.geteuid() == 0:  # sshd as root separates privileges into this directory
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = root / "sshd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(sshd_binary()), "-D", "-e", "-f", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_for(port, proc, log)
        node = SshNode("127.0.0.1", port, os.environ.get("USER") or _whoami(),
                       root / "client_ed25519",
                       " ".join((root / "host_ed25519.pub").read_text().split()[:2]), root)  # fmt: skip
        node.set_nvidia_smi(node_script)
        yield node
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _whoami() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name
