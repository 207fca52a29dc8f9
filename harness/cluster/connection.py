"""The Ray connection of a cluster run (judging, sweeps): join a cluster, or start a private one
and clean it away.

Owns: `connect(address)`, the one place `ray.init` and `ray.shutdown` are called,
and the private cluster's temp folder. A private cluster (no `--address`) is always a new one
(`ray.init("local")`), never whatever Ray session a crashed run left behind, in a fresh folder
under `$TMPDIR/harness-ray-<uid>/` held with an flock while it runs; folders of runs that died
(their lock free) are removed by the next run. Its servers listen on 127.0.0.1 only (Ray takes
the loopback address as the node's when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set before
`import ray`; otherwise its gRPC ports listen on every interface), it uses token authentication
with a random token kept in this process's environment (nothing is written to ~/.ray), and its
workers run at the judge's own priority (Ray starts workers at nice 15, which on a busy machine
halved their throughput). Imports ray inside functions only.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from harness.errors import HarnessError, first_line

LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is 127.0.0.1
_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9.\-_\[\]:]+:[0-9]{1,5}")
_joining = threading.Event()  # a join thread that gave up on is still running
CONNECT_TIMEOUT_S = 60.0  # joining a running cluster takes well under a second
OBJECT_STORE_BYTES = 128 << 20  # paths, verdicts and a sweep chunk's PNGs (MBs), never weights
_SOCKET_ROOM = 60  # Ray appends session_<date>_<pid>/sockets/plasma_store; unix sockets hold 107


def _temp_parent() -> Path:
    base = Path(tempfile.gettempdir())
    if len(str(base)) > 107 - _SOCKET_ROOM - 30:
        base = Path("/tmp")
    parent = base / f"harness-ray-{os.getuid()}"
    try:
        parent.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"{parent}: cannot create Ray's temp folder ({e.strerror})") from None
    st = os.lstat(parent)
    if not os.path.isdir(parent) or os.path.islink(parent) or st.st_uid != os.getuid():
        raise HarnessError(f"{parent}: not a folder of this user; remove it or set TMPDIR")
    return parent


def _prune(parent: Path) -> None:
    """Remove the temp folders of private clusters whose run died (their lock is free)."""
    for entry in sorted(parent.iterdir())[:1000]:
        lock = entry / ".lock"
        if not entry.is_dir() or entry.is_symlink() or not lock.is_file():
            continue
        try:
            fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live run holds it
        os.close(fd)
        shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _private_temp() -> Iterator[Path]:
    parent = _temp_parent()
    _prune(parent)
    folder = Path(tempfile.mkdtemp(prefix="r-", dir=parent))
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def check_address(address: str | None) -> None:
    """`--address` as given: None (a private Ray), "auto", "ray://host:port" or "host:port".
    Ray reads "local" (or RAY_ADDRESS=local with "auto") as "start a new cluster", one without
    the private cluster's guards (loopback only, its own temp folder and token): refused."""
    if address is None:
        return
    if address == "auto":
        if os.environ.get("RAY_ADDRESS", "").strip() == "local":
            raise HarnessError(
                "--address auto: RAY_ADDRESS=local starts a new cluster; leave --address out for a "
                "private Ray on 127.0.0.1"
            )
        return
    if not _ADDRESS.fullmatch(address):
        raise HarnessError(
            f"--address {address!r}: give auto, ray://host:port or host:port (leave it out for a "
            "private Ray on 127.0.0.1)"
        )


@contextlib.contextmanager
def connect(address: str | None) -> Iterator[object]:
    """The `ray` module, connected for the duration of the block.

    None: a private Ray on this machine with its CPUs and GPUs, on 127.0.0.1 only, stopped at the
    end (on kill -9 its GCS and raylet die with this process, Ray's agents within minutes, and
    the next run removes the folder); the Ray variables it sets in this process's environment
    are taken back after. "auto", "ray://host:port" or "host:port": the existing cluster; a
    cluster that does not answer within CONNECT_TIMEOUT_S is one line. Already connected (a test
    session, a notebook): that connection, left open."""
    check_address(address)
    if _joining.is_set():
        raise HarnessError("an earlier attempt to join a Ray cluster is still running; start a new process")
    set_here: list[str] = []

    def setenv(key: str, value: str) -> None:
        if key not in os.environ:
            os.environ[key] = value
            set_here.append(key)

    setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if address is None:  # before `import ray`: its constants and config are read then
        setenv(LOOPBACK_ONLY, "0")
        if "RAY_AUTH_MODE" not in os.environ and "RAY_AUTH_TOKEN" not in os.environ:
            setenv("RAY_AUTH_MODE", "token")
            setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    try:
        with _connected(address) as ray:
            yield ray
    finally:
        for key in set_here:
            os.environ.pop(key, None)


@contextlib.contextmanager
def _connected(address: str | None) -> Iterator[object]:
    try:
        import ray
    except ImportError:
        raise HarnessError(
            "--backend ray needs Ray: pip install -c .ci/constraints.txt -e '.[cluster]'"
        ) from None
    if ray.is_initialized():
        yield ray
        return
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "include_dashboard": False}
    if address is None:
        node_ip = ray.util.get_node_ip_address()  # the address Ray would give this node
        if not ipaddress.ip_address(node_ip).is_loopback:  # ray was imported before connect
            raise HarnessError(
                f"a private Ray here would listen on {node_ip}, not only on 127.0.0.1: set "
                f"{LOOPBACK_ONLY}=0 before anything imports ray, or start a cluster and pass --address"
            )
        with _private_temp() as temp:
            try:
                ray.init(
                    "local",
                    _temp_dir=str(temp),
                    object_store_memory=OBJECT_STORE_BYTES,
                    _system_config={"worker_niceness": 0},  # Ray's default 15 starves them beside others
                    **quiet,
                )
            except Exception as e:  # noqa: BLE001 - Ray's start-up errors are long; one line
                raise HarnessError(f"cannot start a local Ray ({first_line(e)})") from None
            try:
                yield ray
            finally:
                ray.shutdown()
        return
    _join(ray, address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
    try:
        yield ray
    finally:
        ray.shutdown()


def _join(ray, address: str, **options) -> None:
    """`ray.init(address)` within CONNECT_TIMEOUT_S, else one line. Ray retries an address where
    no cluster answers for as long as it is left to (minutes and more), so it runs in a daemon
    thread the driver stops waiting for. A join that succeeds after the driver gave up is shut
    down by that thread, and while it still runs no other connect starts (`_joining`); a process
    that gives up exits without it."""
    box: dict[str, BaseException] = {}
    lock = threading.Lock()
    gave_up = threading.Event()

    def init() -> None:
        try:
            ray.init(address, **options)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = e
        finally:
            with lock:
                if gave_up.is_set() and ray.is_initialized():
                    ray.shutdown()  # nobody owns this connection
                _joining.clear()

    hint = (
        f"check the address, that RAY_AUTH_TOKEN is the cluster's (~/.ray/auth_token on its head), "
        f"and for a cluster started with {LOOPBACK_ONLY}=0 set it here too"
    )
    worker_log = logging.getLogger("ray._private.worker")  # "SIGTERM handler is not set" from a thread
    level = worker_log.level
    worker_log.setLevel(logging.ERROR)
    _joining.set()
    try:
        thread = threading.Thread(target=init, name="ray-connect", daemon=True)
        thread.start()
        thread.join(CONNECT_TIMEOUT_S)
        with lock:
            late = thread.is_alive()
            if late:
                gave_up.set()
    finally:
        worker_log.setLevel(level)
    if late:
        raise HarnessError(
            f"--address {address}: no Ray cluster answered within {CONNECT_TIMEOUT_S:g} s ({hint})"
        )
    if "error" in box:
        why = first_line(box["error"])
        raise HarnessError(f"--address {address}: cannot connect to a Ray cluster ({why}; {hint})")
