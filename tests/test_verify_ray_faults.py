"""verify --all --backend ray, the faults a judge meets on a real cluster:

- a worker node that cannot see ROOT (another mount namespace: ROOT's parent hidden under an
  empty tmpfs) and a worker node running another harness version (PYTHONPATH shadows the
  installed package with a copy whose `__version__` differs) are each refused at start with one
  line naming the host (each node has its own hostname, a UTS namespace), no hang, no verdict.
  They run on a small cluster of their own: a head without CPUs started with `ray start`, and
  nodes started inside `unshare -mu`, all on 127.0.0.1 with token auth, killed by process group.
- a bundle that hangs where SIGALRM cannot reach it (its worker SIGSTOPped as it is handed out,
  as a hang in native code would be) is stopped by the driver's backstop: a failed row for the
  time limit, the worker restarted by Ray, the other bundles judged normally, in bounded time.
- a worker killed mid-bundle whose restart never answers (stopped) is retired, and the bundles
  left are failed rows ("no Ray worker is left") in bounded time.

Skipped without ray; the cluster faults also without `unshare` (util-linux) or the right to
make mount and UTS namespaces (as root, or in a user namespace)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness import __version__
from harness.bundle.batch import read_ledger
from tests.test_verify_ray import _teams, needs_ray

# demo_bundle: rendered once per session; ray_cluster: the session's local Ray
pytest_plugins = ["tests.bundle_fixtures", "tests.ray_fixtures"]
CLI_TIMEOUT = 120  # a refusal comes within seconds; a hang is what these tests rule out
NODE_START_S = 60
RAY_CLI = str(Path(sys.executable).parent / "ray")

# A worker node on 127.0.0.1: what `ray start --address` does, minus its refusal to join a
# cluster while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (without that setting it would resolve
# 127.0.0.1 to the machine's public address and listen there). Lives until SIGTERM.
_NODE = """
import signal, sys
import ray._private.node
from ray._private.parameter import RayParams

params = RayParams(
    gcs_address=sys.argv[1], node_ip_address="127.0.0.1", num_cpus=1, num_gpus=0,
    object_store_memory=80 << 20, min_worker_port=0, max_worker_port=0, node_manager_port=0,
    include_log_monitor=False,
)
node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
print("node up", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
"""


def _unshare() -> list[str] | None:
    """The `unshare` command that makes mount and UTS namespaces here: as root, or in a user
    namespace of its own (`-r`) for anyone else; None where neither is allowed."""
    if shutil.which("unshare") is None:
        return None
    for flags in ("-mu", "-rmu"):
        try:
            if subprocess.run(["unshare", flags, "true"], capture_output=True, timeout=10).returncode == 0:
                return ["unshare", flags]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None


UNSHARE = _unshare()
needs_unshare = pytest.mark.skipif(
    UNSHARE is None, reason="needs `unshare -mu` or `unshare -rmu` (util-linux, namespaces allowed)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_groups(pgids: list[int]) -> None:
    """SIGTERM each process group this test started, then SIGKILL what is left after 3 s."""
    for sig, pause in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)):
        for g in pgids:
            try:
                os.killpg(g, sig)
            except ProcessLookupError:
                pass
        time.sleep(pause)


class SideCluster:
    """A Ray head without CPUs on 127.0.0.1 and the worker nodes added to it."""

    def __init__(self, temp: Path):
        self.temp = temp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(32),
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
            RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
            RAY_USAGE_STATS_ENABLED="0",
        )
        self.address = f"127.0.0.1:{_free_port()}"
        self.pgids: list[int] = []
        self.cpus = 0

    def start_head(self) -> None:
        port = self.address.split(":")[1]
        args = [RAY_CLI, "start", "--head", "--port", port, "--node-ip-address", "127.0.0.1"]
        args += ["--num-cpus", "0", "--num-gpus", "0", "--temp-dir", str(self.temp), "--disable-usage-stats"]
        args += ["--include-dashboard", "false", "--dashboard-port", str(_free_port())]
        args += ["--dashboard-agent-listen-port", "0", "--object-store-memory", str(80 << 20)]
        head = subprocess.Popen(
            args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # the head's processes stay in this group after `ray start` returns
        )
        self.pgids.append(head.pid)
        _, err = head.communicate(timeout=NODE_START_S)
        assert head.returncode == 0, err.decode(errors="replace")[-2000:]

    def add_node(self, hostname: str, hide: Path | None = None, pythonpath: Path | None = None) -> None:
        """A worker node with 1 CPU in its own UTS namespace (`hostname`) and mount namespace
        (`hide`, if given, covered by an empty tmpfs there), with PYTHONPATH=`pythonpath`."""
        env = dict(self.env)
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        script = 'hostname "$1" && { [ -z "$2" ] || mount -t tmpfs none "$2"; } && exec "$3" -c "$4" "$5"'
        node = subprocess.Popen(
            [*UNSHARE, "sh", "-c", script, "sh", hostname, str(hide or ""), sys.executable]
            + [_NODE, self.address],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pgids.append(node.pid)
        line = [b""]
        reader = threading.Thread(target=lambda: line.__setitem__(0, node.stdout.readline()), daemon=True)
        reader.start()
        reader.join(NODE_START_S)
        assert line[0] == b"node up\n", f"the node {hostname} did not start"
        self.cpus += 1
        deadline = time.monotonic() + NODE_START_S
        while self._cluster_cpus() < self.cpus:  # registered with the head, its CPU schedulable
            assert time.monotonic() < deadline, f"the node {hostname} did not join the cluster"
            time.sleep(0.5)

    def _cluster_cpus(self) -> float:
        status = [RAY_CLI, "status", "--address", self.address]
        out = subprocess.run(status, env=self.env, capture_output=True, text=True, timeout=60).stdout
        m = re.search(r"/([\d.]+) CPU", out)
        return float(m.group(1)) if m else 0.0

    def verify(self, root: Path, *extra: str) -> subprocess.CompletedProcess:
        """The CLI, as a judge runs it against this cluster."""
        args = [sys.executable, "-m", "harness.cli", "verify", "--all", str(root), "--quiet"]
        args += ["--backend", "ray", "--address", self.address, *extra]
        return subprocess.run(
            args, cwd=root.parent, env=self.env, capture_output=True, text=True, timeout=CLI_TIMEOUT
        )


@pytest.fixture(scope="module")
def side_cluster():
    temp = Path(tempfile.mkdtemp(prefix="rf-", dir="/tmp"))  # Ray's socket paths must stay short
    cluster = SideCluster(temp)
    try:
        cluster.start_head()
        yield cluster
    finally:
        _kill_groups(cluster.pgids)
        shutil.rmtree(temp, ignore_errors=True)


def _submissions(tmp_path: Path) -> Path:
    """ROOT with one folder that looks like a bundle (never judged: the run must stop before)."""
    root = tmp_path / "subs"
    (root / "a" / "story").mkdir(parents=True)
    (root / "a" / "story" / "manifest.json").write_text("{}", encoding="utf-8")
    return root


def _nothing_written(root: Path) -> None:
    assert not list(root.rglob("verdict.json")) and not read_ledger(root)
    assert not (root / ".verify-ray-probe").exists()


@needs_ray
@needs_unshare
def test_a_worker_that_cannot_see_root_is_refused_at_start_in_one_line(tmp_path, side_cluster):
    root = _submissions(tmp_path)
    side_cluster.add_node("blind-node", hide=tmp_path)  # ROOT's parent is an empty tmpfs there

    start = time.monotonic()
    run = side_cluster.verify(root)
    assert run.returncode == 2, run.stderr[-3000:]
    assert time.monotonic() - start < CLI_TIMEOUT
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr[-3000:]
    assert lines[0].startswith(f"harness: error: {root}: the Ray workers on blind-node cannot see this")
    assert "put the submissions on a filesystem every node mounts at the same path" in lines[0]
    _nothing_written(root)


@needs_ray
@needs_unshare
def test_a_worker_running_another_harness_version_is_refused_at_start_in_one_line(tmp_path, side_cluster):
    """The other node's workers import a copy of the harness whose version differs. With the
    blind node of the test above still in the cluster, 2 workers take one node each; alone,
    both land on this one: the version is checked first, so the refusal is the same."""
    other = tmp_path / "other"
    shutil.copytree(
        Path(__file__).resolve().parents[1] / "harness",
        other / "harness",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    init = other / "harness" / "__init__.py"
    text = init.read_text(encoding="utf-8")
    assert f'__version__ = "{__version__}"' in text
    init.write_text(text.replace(f'__version__ = "{__version__}"', '__version__ = "0.0.0+other"'), "utf-8")
    root = _submissions(tmp_path)
    side_cluster.add_node("other-node", pythonpath=other)

    run = side_cluster.verify(root, "--workers", "2")
    assert run.returncode == 2, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert lines == [
        f"harness: error: the Ray worker on other-node runs harness 0.0.0+other, this driver {__version__}: "
        "install the same version on every node"
    ], run.stderr[-3000:]
    _nothing_written(root)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@needs_ray
def test_a_hang_sigalrm_cannot_cut_is_stopped_by_the_drivers_backstop(
    tmp_path, demo_bundle, ray_cluster, monkeypatch
):
    """One worker; bundle b's worker is SIGSTOPped as b is handed out (a stopped process runs no
    signal handler, like one stuck in native code). Past the limit plus the (lowered) grace the
    driver kills it: b is a failed row for the time limit, Ray restarts the worker, and a and c
    are judged normally, a by the first process and c by the restarted one."""
    from harness.bundle import ray_backend

    limit, grace = 15.0, 0.5  # a fresh worker judged a in 5 s, c in 2 s
    monkeypatch.setattr(ray_backend, "BACKSTOP_GRACE_S", grace)
    root = tmp_path / "subs"
    bundles = _teams(demo_bundle, root, tmp_path, "abc")
    stopped: list[int] = []
    watchdogs: list[threading.Timer] = []

    def on_dispatch(bundle: Path, worker: dict) -> None:
        if bundle.name == "b" and not stopped:  # its first try only
            pid = worker["pid"]
            name = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert b"ray::" in name or b"JudgeWorker" in name or b"default_worker" in name
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
            # should the backstop fail, end the hang anyway (the row then says "died", not "stopped")
            dog = threading.Timer(limit + 45, lambda: _alive(pid) and os.kill(pid, signal.SIGKILL))
            dog.start()
            watchdogs.append(dog)

    start = time.monotonic()
    try:
        rows = ray_backend.verify_all_ray(
            root, rerun=False, workers=1, gpus_per_worker=0, time_limit_s=limit, on_dispatch=on_dispatch
        )
    finally:
        for dog in watchdogs:
            dog.cancel()
    took = time.monotonic() - start

    assert len(stopped) == 1
    by_name = {r.bundle.name: r for r in rows}
    assert by_name["b"].verdict["verdict"] == "fail" and by_name["b"].attempts == 1
    assert by_name["b"].verdict["problems"] == [
        f"stopped: verifying took longer than the limit of {limit:g} s"
    ], by_name["b"].verdict["problems"]
    assert by_name["b"].seconds >= limit + grace
    assert [by_name[t].verdict["verdict"] for t in "ac"] == ["pass", "pass"]
    assert by_name["a"].worker.endswith(f":{stopped[0]}")  # the process that was stopped
    assert not by_name["c"].worker.endswith(f":{stopped[0]}")  # a new one, started by Ray
    assert not _alive(stopped[0])  # killed, not left stopped
    assert took < limit + 45  # the backstop, not the watchdog, ended the hang
    assert {k: v["verdict"]["verdict"] for k, v in read_ledger(root).items()} == {
        "a": "pass",
        "b": "fail",
        "c": "pass",
    }
    assert json.loads((bundles["b"] / "verdict.json").read_text())["verdict"] == "fail"


def _stop_next_judge(old: int, stopped: list[int], stop: threading.Event) -> None:
    """SIGSTOP the first JudgeWorker process other than `old` (Ray's restart of it), so the
    restart never answers, as on a node that is gone."""
    while not stop.is_set():
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != old:
                try:
                    cmd = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if cmd.startswith(b"ray::JudgeWorker"):
                    os.kill(int(entry.name), signal.SIGSTOP)
                    stopped.append(int(entry.name))
                    return
        time.sleep(0.02)


@needs_ray
def test_a_worker_whose_restart_never_answers_is_retired_and_the_rest_fail_in_bounded_time(
    tmp_path, demo_bundle, ray_cluster
):
    """Bundle a's worker is killed mid-bundle and its restart is stopped before it answers: the
    driver's questions to it fail, it is retired, and with no worker left a and b are failed
    rows saying so, instead of a driver waiting forever. (A restart that stays pending, its
    node gone, is cut by RESTART_TIMEOUT_S instead; that path is not reproduced here.)"""
    from harness.bundle import ray_backend

    root = tmp_path / "subs"
    _teams(demo_bundle, root, tmp_path, "ab")
    stopped: list[int] = []
    stop = threading.Event()

    def on_dispatch(bundle: Path, worker: dict) -> None:
        if bundle.name == "a" and not stopped:
            args = (worker["pid"], stopped, stop)
            threading.Thread(target=_stop_next_judge, args=args, daemon=True).start()
            threading.Timer(0.5, lambda: os.kill(worker["pid"], signal.SIGKILL)).start()

    def unstick() -> None:  # should the driver not give up, end the hang: the test then fails
        for pid in stopped:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    dog = threading.Timer(60, unstick)
    dog.start()
    start = time.monotonic()
    try:
        rows = ray_backend.verify_all_ray(
            root, rerun=False, workers=1, gpus_per_worker=0, on_dispatch=on_dispatch
        )
    finally:
        dog.cancel()
        stop.set()
        for pid in stopped:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    took = time.monotonic() - start
    assert len(stopped) == 1
    assert took < 55  # the driver gave up on the worker, not the watchdog
    for row in rows:
        assert row.verdict["verdict"] == "fail", row.verdict
        assert any("no Ray worker is left" in p for p in row.verdict["problems"]), row.verdict["problems"]
    assert {k: v["verdict"]["verdict"] for k, v in read_ledger(root).items()} == {"a": "fail", "b": "fail"}
