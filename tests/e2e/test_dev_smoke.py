"""`gpucloud dev` end to end: embedded servers, migrations, demo SKUs, GraphQL, clean Ctrl-C."""

import signal
import sys

import httpx
import pytest

from tests.support.processes import wait_ready

pytestmark = pytest.mark.slow  # starts real server processes
SKUS_QUERY = "{ skus(first: 10) { edges { node { id name gpuModel } } } }"


@pytest.mark.timeout(300)
def test_dev_serves_demo_skus_and_leaves_nothing_running(start_dev) -> None:  # type: ignore[no-untyped-def]
    run = start_dev([sys.executable, "-m", "gpucloud", "dev"])
    base = f"http://127.0.0.1:{run.http_port}"

    wait_ready(base, run.proc, run.output, timeout=120)
    assert f"GraphiQL: http://127.0.0.1:{run.http_port}/graphql" in run.output()

    response = httpx.post(f"{base}/graphql", json={"query": SKUS_QUERY}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("errors"), body
    nodes = [edge["node"] for edge in body["data"]["skus"]["edges"]]
    assert nodes, "the demo SKUs should have been seeded"
    assert all(node["id"] and node["name"] and node["gpuModel"] for node in nodes), nodes

    run.remember_descendants()
    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(30) == 0, run.output()
    leftovers = run.survivors()
    assert not leftovers, run.describe(leftovers)
