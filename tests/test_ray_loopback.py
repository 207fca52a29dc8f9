"""Every Ray server a test or a judge's private cluster starts listens on 127.0.0.1 only: the
session's Ray (tests/conftest.py) and `harness.cluster.connection.connect(None)` in a process
whose environment says nothing about Ray (the CLI's case)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from tests.netinfo import descendants, listening, not_loopback

pytest_plugins = ["tests.ray_fixtures"]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or not os.path.exists("/proc/net/tcp"),
    reason="needs ray (pip install -e '.[cluster]') and Linux /proc",
)


def test_the_session_ray_listens_on_loopback_only(ray_cluster):
    ray = ray_cluster
    assert ray.get(ray.remote(lambda: os.getpid()).remote()) > 0  # a worker is up too
    found = listening(descendants(os.getpid()))
    servers = {a for _, a in found}
    assert len(servers) >= 3, found  # gcs_server, raylet, a worker at least
    assert not_loopback(found) == []


PRIVATE = """
import json, os, sys
from harness.cluster.connection import connect
from tests.netinfo import descendants, listening
with connect(None) as ray:
    ray.get(ray.remote(lambda: 1).remote())
    print(json.dumps(listening(descendants(os.getpid()))))
"""


def test_the_judges_private_ray_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(TMPDIR=str(tmp_path), PYTHONPATH=os.getcwd())  # too long a path: /tmp (cluster.py)
    proc = subprocess.run(
        [sys.executable, "-c", PRIVATE],
        cwd=os.getcwd(),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = [tuple(x) for x in json.loads(proc.stdout.strip().splitlines()[-1])]
    assert len({a for _, a in found}) >= 3, found
    assert not_loopback(found) == []


JOIN = """
import sys
from harness.cluster import connection as cluster
from harness.cli import main
cluster.CONNECT_TIMEOUT_S = float(sys.argv[1])
sys.exit(main(sys.argv[2:]))
"""


def _join(tmp_path, address: str, timeout_s: float) -> subprocess.CompletedProcess:
    """`harness verify --all EMPTY-ISH ROOT --backend ray --address ADDRESS` in a fresh process."""
    root = tmp_path / "subs"
    (root / "t000").mkdir(parents=True, exist_ok=True)
    (root / "t000" / "manifest.json").write_text("{}", encoding="utf-8")  # a broken bundle
    args = [sys.executable, "-c", JOIN, str(timeout_s), "verify", "--all", str(root), "--quiet"]
    args += ["--backend", "ray", "--address", address, "--workers", "1", "--gpus-per-worker", "0"]
    return subprocess.run(args, cwd=os.getcwd(), capture_output=True, text=True, timeout=180)


def test_an_address_where_no_cluster_answers_is_one_line_in_bounded_time(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc = _join(tmp_path, f"127.0.0.1:{port}", 5)
    assert time.monotonic() - start < 60  # Ray alone retries such an address for minutes
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("harness")]
    assert len(lines) == 1 and "no Ray cluster answered within 5 s" in lines[0], proc.stderr[-2000:]


def test_the_cli_joins_a_running_cluster_by_its_address(tmp_path, ray_cluster):
    """The session's Ray, joined from another process with its address and token."""
    address = ray_cluster.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:")
    proc = _join(tmp_path, address, 60)
    # t000's manifest is empty: judged and failed (exit 1) by a worker on the joined cluster
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert (tmp_path / "subs" / "t000" / "verdict.json").is_file()


REFUSE = """
import ray
from harness.cluster.connection import connect
from harness.errors import HarnessError
if ray.util.get_node_ip_address().startswith("127."):
    print("loopback anyway")  # a machine with no other address: nothing to refuse
else:
    try:
        with connect(None):
            print("started")
    except HarnessError as e:
        print(f"refused: {e}")
"""


def test_a_private_ray_that_would_listen_beyond_loopback_is_refused_before_it_starts(tmp_path):
    """ray imported with clusters enabled (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1) before connect."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(TMPDIR=str(tmp_path), PYTHONPATH=os.getcwd(), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")
    proc = subprocess.run(
        [sys.executable, "-c", REFUSE], cwd=os.getcwd(), env=env, capture_output=True, text=True, timeout=120
    )
    out = proc.stdout.strip()
    if out == "loopback anyway":
        pytest.skip("this machine has no address but loopback")
    assert out.startswith("refused: a private Ray here would listen on "), (out, proc.stderr[-2000:])
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in out
    assert not (tmp_path / f"harness-ray-{os.getuid()}").exists() or not any(
        (tmp_path / f"harness-ray-{os.getuid()}").iterdir()
    )  # nothing was started


def test_a_ray_client_address_where_nothing_answers_is_one_line(tmp_path):
    """`--address ray://host:port` needs ray[client] (in the cluster extra) and is bounded too."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _join(tmp_path, f"ray://127.0.0.1:{port}", 10)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("harness")]
    assert len(lines) == 1 and f"--address ray://127.0.0.1:{port}" in lines[0], proc.stderr[-2000:]
    assert "requires pip package" not in lines[0]  # Ray Client is installed


LATE = """
import sys, time
from harness.cluster import connection as cluster
from harness.errors import HarnessError
import ray
cluster.CONNECT_TIMEOUT_S = 0.0005  # gives up before the join can finish
try:
    with cluster.connect(sys.argv[1]):
        print("joined in time")
except HarnessError as e:
    print("gave up:", e)
try:
    with cluster.connect(sys.argv[1]):
        print("second join started")
except HarnessError as e:
    print("second:", e)
deadline = time.monotonic() + 60
while cluster._joining.is_set() and time.monotonic() < deadline:
    time.sleep(0.1)
print("left connected:", ray.is_initialized())
"""


def test_a_join_that_succeeds_after_the_driver_gave_up_is_shut_down(tmp_path, ray_cluster):
    address = ray_cluster.get_runtime_context().gcs_address
    proc = subprocess.run(
        [sys.executable, "-c", LATE, address], cwd=os.getcwd(), capture_output=True, text=True, timeout=180
    )
    out = proc.stdout
    assert "gave up: --address" in out and "no Ray cluster answered within" in out, (out, proc.stderr[-2000:])
    assert "second: an earlier attempt to join a Ray cluster is still running" in out, out
    assert "left connected: False" in out, out
