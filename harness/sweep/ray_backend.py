"""`harness sweep --backend ray`: a sweep's candidates rendered on the judging backend's Ray workers.

Owns: the sweep's worker actor (`SweepWorker`: one per GPU share, keeping one Kolors and one set
of scorers, running `harness.sweep.work.CandidateRenderer` on the chunks it is given), its
start-up check, and the driver's loop that hands chunks to idle workers and records what comes
back. The cluster itself is the judges' (`harness.bundle.cluster.connect`: a private Ray without
`--address`, else the one named) and so are the worker plan (`plan_workers`: one worker per GPU
by default) and the thread rule for CPU workers.

Workers write nothing: a chunk comes back as PNG bytes and score rows, and the driver records
them (`work.record`), so the sweep folder needs to be on the driver only. What workers read is
the LoRA file, by the path the driver has (a filesystem every node mounts at the same path) and
checked by content hash, and the base model, resolved on each node and checked by content hash;
a worker that lacks either, or runs another harness version, stops the sweep at start with one
line naming its host. A worker process that dies is restarted by Ray and its chunk given to it
again, at most `MAX_ATTEMPTS` tries; after that the sweep stops with one line, keeping every
candidate already recorded (a rerun continues from there). Nothing Ray is started while every
candidate is already finished. `import ray` happens only in functions.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterator

from harness.errors import HarnessError, first_line

if TYPE_CHECKING:
    from harness.sweep.plan import Candidate
    from harness.sweep.result import SweepSetup
    from harness.sweep.work import Rendered, SweepWork

MAX_ATTEMPTS = 3  # tries of one chunk when the worker rendering it dies


class SweepWorker:
    """One Ray worker process of a sweep (a plain class, made an actor by the driver). Ray sets
    CUDA_VISIBLE_DEVICES to its GPUs first, so the model is placed on those, else on the CPU."""

    def __init__(self, label: str, work: "SweepWork", cwd: str):
        from harness.bundle.ray_backend import set_worker_threads

        self.label = label
        self.work = work
        self.renderer = None
        if os.path.isdir(cwd):  # a relative LoRA path means what it means on the driver
            os.chdir(cwd)
        set_worker_threads()

    def _ready(self):
        if self.renderer is None:
            from harness.hashing import sha256_file
            from harness.sweep.work import CandidateRenderer

            work = self.work
            if work.lora_path is not None:
                if not os.path.isfile(work.lora_path):
                    raise HarnessError(f"{work.lora_path}: no such LoRA file on this node")
                if sha256_file(work.lora_path) != work.lora_sha256:
                    raise HarnessError(f"{work.lora_path}: a different file than the driver's on this node")
            self.renderer = CandidateRenderer(work)
        return self.renderer

    def info(self) -> dict[str, Any]:
        """Who and where this worker is, and why it cannot render this sweep ('' when it can):
        the base model and the LoRA must have the driver's content here."""
        import ray

        from harness import __version__

        try:
            renderer = self._ready()
            problem, device = "", renderer.placement.device
        except Exception as e:  # noqa: BLE001 - reported to the driver as one line
            problem, device = first_line(e), None
        return {
            "label": self.label,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "harness": __version__,
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "device": device,
            "problem": problem,
        }

    def render(self, chunk: "list[Candidate]") -> "list[Rendered]":
        return self._ready().render(chunk)


def _start(ray, work: "SweepWork", opts) -> list[Any]:
    """Start the workers and check each one (same harness version, the model and the LoRA
    readable with the driver's content); on any refusal they are killed again."""
    from harness import __version__
    from harness.bundle.ray_backend import STARTUP_TIMEOUT_S, plan_workers

    n, gpus, cpus = plan_workers(ray.cluster_resources(), opts.workers, opts.gpus_per_worker)
    remote = ray.remote(SweepWorker).options(
        num_cpus=cpus,
        num_gpus=gpus,
        max_restarts=MAX_ATTEMPTS - 1,
        max_task_retries=MAX_ATTEMPTS - 1,
        max_concurrency=1,
    )
    actors: list[Any] = []
    try:
        actors += [remote.remote(f"w{i}", work, os.getcwd()) for i in range(n)]
        refs = [a.info.remote() for a in actors]
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
            if i["problem"]:
                raise HarnessError(f"the Ray worker on {i['host']} cannot render this sweep: {i['problem']}")
    except BaseException:
        for a in actors:
            ray.kill(a, no_restart=True)
        raise
    return actors


@contextlib.contextmanager
def ray_backend(setup: "SweepSetup") -> Iterator[Callable[..., list[str]]]:
    """The `ray` entry of `harness.sweep.run.BACKENDS`: yields `render(todo, on_done)`, which
    spreads `todo` over the workers in chunks and records each chunk as it comes back. Ray is
    connected and the workers started on the first call with something to render; they are
    stopped when the block ends."""
    from harness.sweep.work import SweepWork, chunks, record

    opts = setup.opts
    work = SweepWork.of(setup)
    stack = contextlib.ExitStack()
    state: dict[str, Any] = {}

    def start() -> None:
        from harness.bundle.cluster import connect

        ray = stack.enter_context(connect(opts.address))
        actors = _start(ray, work, opts)
        stack.callback(lambda: [ray.kill(a, no_restart=True) for a in actors])
        state.update(ray=ray, actors=actors)

    def render(todo: "list[Candidate]", on_done: Callable[[list[dict]], None]) -> list[str]:
        if not todo:
            return []
        if not state:
            start()
        ray = state["ray"]
        from ray.exceptions import ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

        queue = deque(chunks(todo, opts.chunk))
        idle = list(state["actors"])
        inflight: dict[Any, tuple[Any, list]] = {}
        rendered: list[str] = []
        while queue or inflight:
            while idle and queue:
                actor, chunk = idle.pop(), queue.popleft()
                inflight[actor.render.remote(chunk)] = (actor, chunk)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                actor, chunk = inflight.pop(ref)
                try:
                    done = ray.get(ref)
                except (RayActorError, WorkerCrashedError, ObjectLostError) as e:
                    raise HarnessError(
                        f"a Ray worker died {MAX_ATTEMPTS} times rendering candidates "
                        f"{', '.join(c.id for c in chunk)} ({first_line(e, 200)}); every candidate "
                        "recorded so far is kept: run the sweep again to continue"
                    ) from None
                except RayTaskError as e:
                    raise HarnessError(f"a Ray worker failed: {first_line(e.cause or e)}") from None
                rows = record(setup.out, done)
                rendered += [r["id"] for r in rows]
                on_done(rows)
                idle.append(actor)
        return rendered

    with stack:
        yield render
