"""`harness sweep --backend ray`: a sweep's candidates rendered on the judging backend's Ray workers.

Owns: the sweep's worker actor (`SweepWorker`: one per GPU share, keeping one Kolors and one set
of scorers, running `harness.sweep.work.CandidateRenderer` on the chunks it is given), its
start-up check, and the driver's loop that hands chunks to idle workers and records what comes
back. The cluster is the judges' (`harness.bundle.cluster.connect`: a private Ray on 127.0.0.1
without `--address`, else the one named) and so are the worker plan, the thread rule for CPU
workers and the start of the pool (`harness.bundle.ray_workers`).

Workers write nothing: a chunk comes back as PNG bytes and score rows, and the driver records
them (`work.record`, after checking they are the chunk's candidates), so the sweep folder needs
to be on the driver only. What workers read is the LoRA file, by the path the driver has (a
filesystem every node mounts at the same path) and checked by content hash, the base model,
resolved on each node and checked by content hash, and the scoring models, loaded at start; a
worker that lacks any of them, or runs another harness version, stops the sweep at start with
one line naming its host. A worker process that dies is restarted by Ray and the chunk it was
rendering given out again, at most `MAX_ATTEMPTS` tries per chunk; after that the sweep stops
with one line, keeping every candidate already recorded (a rerun continues from there). Nothing
Ray is started while every candidate is already finished. `import ray` happens only in functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterator

from harness.errors import HarnessError, first_line

if TYPE_CHECKING:
    from harness.sweep.plan import Candidate
    from harness.sweep.result import SweepSetup
    from harness.sweep.work import Backend, Rendered, SweepWork

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3  # tries of one chunk when the worker rendering it dies


class SweepWorker:
    """One Ray worker process of a sweep (a plain class, made an actor by the driver). Ray sets
    CUDA_VISIBLE_DEVICES to its GPUs first, so the model is placed on those, else on the CPU."""

    def __init__(self, label: str, work: "SweepWork", cwd: str):
        from harness.bundle.ray_workers import set_worker_threads

        self.label = label
        self.work = work
        self.renderer = None
        if os.path.isdir(cwd):  # a relative LoRA path means what it means on the driver
            os.chdir(cwd)
        set_worker_threads()

    def _ready(self):
        """The renderer, made once: the LoRA and the base model checked against the driver's
        sha256, the model placed, the scoring models loaded (so a missing one fails here)."""
        if self.renderer is None:
            from harness.hashing import sha256_file
            from harness.sweep.work import CandidateRenderer

            work = self.work
            if work.lora_path is not None:
                if not os.path.isfile(work.lora_path):
                    raise HarnessError(f"{work.lora_path}: no such LoRA file on this node")
                if sha256_file(work.lora_path) != work.lora_sha256:
                    raise HarnessError(f"{work.lora_path}: a different file than the driver's on this node")
            renderer = CandidateRenderer(work)
            renderer.scorer.load()
            self.renderer = renderer
        return self.renderer

    def info(self) -> dict[str, Any]:
        """`worker_info`, plus the device it renders on and why it cannot render this sweep
        ('' when it can)."""
        from harness.bundle.ray_workers import worker_info

        try:
            renderer = self._ready()
            problem, device = "", renderer.placement.device
        except Exception as e:  # noqa: BLE001 - reported to the driver as one line
            problem, device = first_line(e), None
        return {**worker_info(self.label), "device": device, "problem": problem}

    def render(self, chunk: "list[Candidate]") -> "list[Rendered]":
        return self._ready().render(chunk)


def _check(infos: list[dict[str, Any]]) -> None:
    """Refuse a worker that cannot render this sweep; warn about CPU workers with fewer torch
    threads than the driver's machine has cores (their pixels may differ: docs/sweep.md)."""
    for i in infos:
        if i["problem"]:
            raise HarnessError(f"the Ray worker on {i['host']} cannot render this sweep: {i['problem']}")
    cores = os.cpu_count() or 1
    few = [i for i in infos if i["device"] == "cpu" and i["threads"] and i["threads"] < cores]
    if few:
        log.warning(
            "Ray CPU workers render with %d torch thread(s), fewer than this machine's %d cores: their "
            "candidates may not reproduce bit for bit with `harness render` (on one machine use "
            "--workers 1 --gpus-per-worker 0)",
            few[0]["threads"],
            cores,
        )


@contextlib.contextmanager
def ray_backend(setup: "SweepSetup") -> "Iterator[Backend]":
    """The `ray` entry of `harness.sweep.run.BACKENDS`: yields a `work.Backend` whose `render`
    spreads `todo` over the workers in chunks and records each chunk as it comes back. Ray is
    connected and the workers started by `start()` or the first `render` with something to
    render; they are stopped when the block ends."""
    from harness.sweep.work import Backend, SweepWork, chunks, record

    opts = setup.opts
    work = SweepWork.of(setup)
    stack = contextlib.ExitStack()
    state: dict[str, Any] = {}

    def start() -> None:
        if state:
            return
        from harness.bundle.cluster import connect
        from harness.bundle.ray_workers import plan_workers, start_actors

        ray = stack.enter_context(connect(opts.address))
        n, gpus, cpus = plan_workers(ray.cluster_resources(), opts.workers, opts.gpus_per_worker)
        actors, infos = start_actors(
            ray,
            SweepWorker,
            n,
            gpus,
            cpus,
            init_args=lambda i: (f"w{i}", work, os.getcwd()),
            check=_check,
        )
        stack.callback(lambda: [ray.kill(a, no_restart=True) for a in actors])
        hosts = {id(a): i["host"] for a, i in zip(actors, infos, strict=True)}
        state.update(ray=ray, actors=actors, hosts=hosts)

    def render(todo: "list[Candidate]", on_done: Callable[[list[dict]], None]) -> list[str]:
        if not todo:
            return []
        start()
        ray = state["ray"]
        from ray.exceptions import ObjectLostError, RayActorError, RayError, RayTaskError, WorkerCrashedError

        died = (RayActorError, WorkerCrashedError, ObjectLostError)
        queue = deque((chunk, 1) for chunk in chunks(todo, opts.chunk))
        idle = list(state["actors"])
        # ref -> (actor, chunk, attempt); chunk None: asking a restarted worker `info` first
        inflight: dict[Any, tuple[Any, list | None, int]] = {}
        rendered: list[str] = []
        while queue or any(chunk is not None for _, chunk, _ in inflight.values()):
            while idle and queue:
                actor, (chunk, attempt) = idle.pop(), queue.popleft()
                inflight[actor.render.remote(chunk)] = (actor, chunk, attempt)
            if not inflight:  # every worker failed to come back
                raise HarnessError(
                    f"no Ray worker is left to render this sweep (each failed to restart {MAX_ATTEMPTS} "
                    "times); every candidate recorded so far is kept: run the sweep again to continue"
                )
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                actor, chunk, attempt = inflight.pop(ref)
                host = state["hosts"][id(actor)]
                if chunk is None:  # a restarted worker: back in the pool once it answers
                    try:
                        ray.get(ref)
                        idle.append(actor)
                    except died:
                        if attempt + 1 < MAX_ATTEMPTS:
                            inflight[actor.info.remote()] = (actor, None, attempt + 1)
                    continue
                ids = ", ".join(c.id for c in chunk)
                try:
                    done = ray.get(ref)
                except died as e:  # the process died (a crash, an OOM kill): Ray restarts it
                    if attempt >= MAX_ATTEMPTS:
                        raise HarnessError(
                            f"the Ray worker on {host} died {attempt} times rendering candidates {ids} "
                            f"(last: {first_line(e, 200)}); every candidate recorded so far is kept: "
                            "run the sweep again to continue"
                        ) from None
                    queue.appendleft((chunk, attempt + 1))
                    inflight[actor.info.remote()] = (actor, None, 0)
                    continue
                except RayTaskError as e:  # something the renderer raised (a HarnessError, a bug)
                    why = first_line(e.cause or e)
                    raise HarnessError(f"the Ray worker on {host} failed: {why}") from None
                except RayError as e:  # the cluster itself: a node lost, out of memory or disk
                    why = first_line(e, 300)
                    raise HarnessError(f"Ray failed rendering candidates {ids}: {why}") from None
                if [r.id for r in done] != [c.id for c in chunk]:
                    raise HarnessError(f"the Ray worker on {host} returned other candidates than {ids}")
                rows = record(setup.out, done)
                rendered += [r["id"] for r in rows]
                on_done(rows)
                idle.append(actor)
        return rendered

    with stack:
        yield Backend(start=start, render=render)
