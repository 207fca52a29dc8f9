"""Every Ray server a test or a judge's private cluster starts listens on 127.0.0.1 only: the
session's Ray (tests/conftest.py) and `harness.bundle.cluster.connect(None)` in a process
whose environment says nothing about Ray (the CLI's case)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

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
from harness.bundle.cluster import connect
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
