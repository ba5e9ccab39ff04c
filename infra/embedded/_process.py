"""Process helpers shared by the embedded servers."""

import contextlib
import signal
import time
from pathlib import Path

import psutil

_ROOT_HOME = Path("/root")


def checked_state_dir(state_dir: Path) -> Path:
    """Resolve state_dir and refuse /root.

    As root, postgres must run as another user, and pgserver then chmods every parent of the data
    dir to o+rx; under /root that would open the root home directory to everyone.
    """
    resolved = state_dir.expanduser().resolve()
    if resolved == _ROOT_HOME or _ROOT_HOME in resolved.parents:
        raise ValueError(
            f"state dir {resolved} is under /root; pick one outside it, "
            "e.g. GPUCLOUD_STATE_DIR=/var/tmp/gpucloud-root"
        )
    return resolved


def leftover_process(pid_file: Path, name: str, cwd: Path) -> psutil.Process | None:
    """The live process named in pid_file, if it is `name` running in `cwd`.

    Both servers chdir into their data dir, so the cwd check tells our server from a process
    that merely reused the pid.
    """
    try:
        proc = psutil.Process(int(pid_file.read_text().split()[0]))
        if proc.name() == name and Path(proc.cwd()) == cwd and alive(proc):
            return proc
    except (OSError, ValueError, IndexError, psutil.Error):
        pass
    return None


def stop_tree(proc: psutil.Process, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Send `sig` to proc, wait for it and its children, then SIGKILL whatever is left."""
    try:
        procs = [proc, *proc.children(recursive=True)]
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        return
    if _wait_gone(procs, timeout):
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    if not _wait_gone(procs, 5.0):
        raise RuntimeError(f"processes survived SIGKILL: {[p.pid for p in procs if alive(p)]}")


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie: a zombie has exited, and waiting for it would hang when nobody
    reaps orphans (this sandbox's init does not)."""
    try:
        return proc.is_running() and bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
