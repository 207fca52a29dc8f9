"""The session's one local Ray (2 CPUs, 2 pretend GPUs), shared by every test that needs Ray:
`pytest_plugins = ["tests.ray_fixtures"]` in the test module."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile

import pytest


@pytest.fixture(scope="session")
def ray_cluster(harness_cache, tmp_path_factory):
    """One local Ray for the session: its temp folder in the session's tmp dir (a short one under
    /tmp when that path is too long for Ray's unix sockets), listening on 127.0.0.1 only
    (conftest), token auth with a random token kept in the environment (nothing written to
    ~/.ray), stopped and removed at the end. Workers inherit HARNESS_CACHE."""
    env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import ray

    temp = str(tmp_path_factory.mktemp("ray"))
    if len(temp) > 107 - 70:  # Ray's unix sockets: <temp>/session_<date>_<pid>/sockets/plasma_store
        temp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
    ray.init(
        "local",
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        _temp_dir=temp,
        object_store_memory=100 << 20,
        log_to_driver=False,
        _system_config={"worker_niceness": 0},  # as the harness's private Ray: no starving on a busy CI box
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
