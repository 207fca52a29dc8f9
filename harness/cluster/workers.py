"""Ray worker plumbing shared by the judging and the sweep backends.

Owns: how many workers a cluster gets and what each asks for (`plan_workers`), the torch thread
rule for CPU workers (`set_worker_threads`), what every worker says about itself
(`worker_info`), and starting a pool of actors with the start-up check every backend needs
(`start_actors`: up within STARTUP_TIMEOUT_S, the driver's harness version, the backend's own
check; on any refusal the actors are killed and one line names the host). `import ray` happens
only in functions.
"""

from __future__ import annotations

import math
import os
import socket
import sys
from typing import Any, Callable

from harness.errors import HarnessError, first_line

STARTUP_TIMEOUT_S = 300.0  # workers must be up (imports done, their check passed) within this


def plan_workers(
    resources: dict[str, float], workers: int | None, gpus_per_worker: float | None
) -> tuple[int, float, float]:
    """(workers, GPUs each, CPUs each) for a cluster with `resources` (ray.cluster_resources()).

    Defaults: one worker per GPU, or one worker on a cluster without GPUs. CPUs each: the
    cluster's CPUs shared out (at most 4 per GPU worker, at least 1 or the share that fits).
    A plan that cannot fit the cluster is refused in one line instead of waiting forever."""
    check_request(workers, gpus_per_worker)
    gpus = float(resources.get("GPU", 0.0))
    cpus = float(resources.get("CPU", 0.0))
    g = (1.0 if gpus >= 1 else 0.0) if gpus_per_worker is None else float(gpus_per_worker)
    if workers is None:
        workers = max(1, int(gpus / g + 1e-9)) if g > 0 else 1
    if g * workers > gpus + 1e-9:
        raise HarnessError(
            f"{workers} workers with {g:g} GPU each need {g * workers:g} GPUs; the Ray cluster has "
            f"{gpus:g} (use fewer --workers or a smaller --gpus-per-worker)"
        )
    if cpus <= 0:
        raise HarnessError("the Ray cluster has no CPUs to run workers on")
    share = cpus / workers
    c = min(4.0, max(1.0, int(share))) if g > 0 else max(1.0, int(share))
    if c * workers > cpus:
        c = int(share * 100) / 100  # fractional: several workers share a core
    if c <= 0:
        raise HarnessError(f"{workers} workers do not fit the Ray cluster's {cpus:g} CPUs")
    return workers, g, c


def check_request(workers: int | None, gpus_per_worker: float | None) -> None:
    """`--workers` and `--gpus-per-worker` as given, checked before anything is started."""
    if workers is not None and workers < 1:
        raise HarnessError(f"--workers: must be at least 1 (got {workers})")
    if gpus_per_worker is not None:
        g = float(gpus_per_worker)
        if not math.isfinite(g) or g < 0 or (g > 1 and g != int(g)):
            raise HarnessError(f"--gpus-per-worker: a fraction up to 1 or a whole number (got {g:g})")


def set_worker_threads() -> None:
    """Render with as many torch threads as a plain `harness` process on this node would, but no
    more than the worker's CPU share. Ray sets OMP_NUM_THREADS to the share; below a plain
    process's count that keeps CPU workers from fighting over cores (2 workers x 2 threads on 2
    cores made tiny bundles 5x slower), above it it would render with more threads than a
    plain process. On the CPU the thread count changes pixels (1 thread against 2 moved a
    tiny-model panel by 1/255: "reproducible", not "exact"), so a CPU worker with the whole
    node's CPUs gives the local loop's pixels byte for byte. A value the node's owner set
    (not Ray's) is kept. GPUs are unaffected."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    share = max(math.floor(cpus), 1) if cpus else 1
    if os.environ.get("OMP_NUM_THREADS") == str(share) and "torch" not in sys.modules:
        del os.environ["OMP_NUM_THREADS"]  # torch reads it once, when imported
        import torch

        _PLAIN_THREADS[0] = torch.get_num_threads()  # what a plain process here renders with
        torch.set_num_threads(min(_PLAIN_THREADS[0], share))


_PLAIN_THREADS: list[int | None] = [None]


def worker_info(label: str) -> dict[str, Any]:
    """Who and where a worker is: label, host, pid, harness version, the GPUs Ray gave it, its
    torch threads when torch is loaded (None before) and the threads a plain process on this
    node would use (`plain_threads`, when `set_worker_threads` capped them; else its own)."""
    import ray

    from harness import __version__

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    return {
        "label": label,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "harness": __version__,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "threads": threads,
        "plain_threads": _PLAIN_THREADS[0] or threads,
    }


def start_actors(
    ray,
    cls: type,
    n: int,
    gpus: float,
    cpus: float,
    *,
    init_args: Callable[[int], tuple],
    info_args: tuple = (),
    check: Callable[[list[dict[str, Any]]], None] | None = None,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Start `n` actors of `cls` (each `cls(*init_args(i))`, restarted by Ray when its process
    dies; the driver decides what to give it again) and ask each `info(*info_args)`, a dict with
    at least `worker_info`'s keys. Every worker must answer within STARTUP_TIMEOUT_S and run
    this harness version, then `check(infos)` may refuse; on any refusal the actors are killed
    (in a connected session they would keep their resources). Returns (actors, infos)."""
    from harness import __version__

    remote = ray.remote(cls).options(
        num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=0, max_concurrency=1
    )
    actors: list[Any] = []
    try:
        actors += [remote.remote(*init_args(i)) for i in range(n)]
        refs = [a.info.remote(*info_args) for a in actors]
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=STARTUP_TIMEOUT_S)
        if pending:
            raise HarnessError(
                f"{len(pending)} of {n} Ray workers did not start within {STARTUP_TIMEOUT_S:g} s "
                f"(each asks {gpus:g} GPU and {cpus:g} CPU; the cluster has {ray.available_resources()})"
            )
        try:
            infos = ray.get(refs)
        except Exception as e:  # noqa: BLE001 - a worker that cannot even start
            raise HarnessError(
                f"Ray workers could not start ({first_line(e)}); install the same harness with "
                "`pip install '.[cluster]'` on every node"
            ) from None
        for i in infos:
            if i["harness"] != __version__:
                raise HarnessError(
                    f"the Ray worker on {i['host']} runs harness {i['harness']}, this driver "
                    f"{__version__}: install the same version on every node"
                )
        if check is not None:
            check(infos)
    except BaseException:
        for a in actors:
            ray.kill(a, no_restart=True)
        raise
    return actors, infos
