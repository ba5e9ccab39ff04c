"""The dev supervisor (gpucloud.dev) with stand-in children: see standin_dev.py."""

import signal
import sys

import pytest

pytestmark = pytest.mark.slow  # starts real server processes


def _start(start_dev, worker_lifetime_s: float):  # type: ignore[no-untyped-def]
    return start_dev([sys.executable, "-m", "tests.e2e.standin_dev", str(worker_lifetime_s)])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_children_and_servers(start_dev, sig: signal.Signals) -> None:  # type: ignore[no-untyped-def]
    run = _start(start_dev, worker_lifetime_s=600)
    run.wait_for_output("GraphiQL: http://127.0.0.1:", timeout=120)
    output = run.output()
    assert "embedded Postgres: postgresql://" in output
    assert f"embedded Redis: redis://127.0.0.1:{run.redis_port}/0" in output
    assert "child env postgresql://postgres@/postgres?host=" in output
    run.remember_descendants()
    assert len(run.survivors()) >= 4, "postgres, redis, serve, its grandchild and worker run"

    run.proc.send_signal(sig)
    assert run.proc.wait(30) == 0, run.output()
    leftovers = run.survivors()
    assert not leftovers, run.describe(leftovers)


@pytest.mark.timeout(180)
def test_child_failure_stops_everything_and_fails(start_dev) -> None:  # type: ignore[no-untyped-def]
    run = _start(start_dev, worker_lifetime_s=3)
    run.wait_for_output("GraphiQL: http://127.0.0.1:", timeout=120)
    run.remember_descendants()

    assert run.proc.wait(60) == 3, run.output()
    assert "worker exited with code 3, stopping everything" in run.output()
    leftovers = run.survivors()
    assert not leftovers, run.describe(leftovers)
