"""`gpucloud dev`'s supervisor with stand-in children, so it can be tested without the real app.

Run as `python -m tests.e2e.standin_dev WORKER_LIFETIME_S` from the repository root. Every
stand-in gets the state dir as an argument, so survivors can be found by their cmdline.
"""

import os
import sys

import gpucloud.dev as dev

PRINT_URLS = "import os; print('child env', os.environ['DATABASE_URL'], os.environ['REDIS_URL'])"
# Ignores SIGTERM, so only the supervisor's final SIGKILL of the process group stops it.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
SERVE = (
    "import subprocess, sys, time\n"
    f"subprocess.Popen([sys.executable, '-c', {STUBBORN!r}, sys.argv[1]])\n"
    "time.sleep(600)"
)
WORKER = "import sys, time; time.sleep(float(sys.argv[2])); sys.exit(3)"


def standin_commands() -> tuple[list[list[str]], dict[str, list[str]]]:
    py, state = sys.executable, os.environ["GPUCLOUD_STATE_DIR"]
    setup = [[py, "-c", PRINT_URLS, state]]
    services = {
        "serve": [py, "-c", SERVE, state],
        "worker": [py, "-c", WORKER, state, sys.argv[1]],
    }
    return setup, services


if __name__ == "__main__":
    dev.dev_commands = standin_commands
    sys.exit(dev.run_dev())
