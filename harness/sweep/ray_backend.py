"""`harness sweep --backend ray`: a sweep's candidates rendered on the judging backend's Ray workers.

Owns: the sweep's worker actor (`SweepWorker`: one per GPU share, keeping one Kolors and one set
of scorers, running `harness.sweep.work.CandidateRenderer` on the chunks it is given), its
start-up check, and the driver's loop that hands chunks to idle workers and records what comes
back. The cluster is the judges' (`harness.cluster.connection.connect`: a private Ray on 127.0.0.1
without `--address`, else the one named) and so are the worker plan, the thread rule for CPU
workers and the start of the pool (`harness.cluster.workers`).

Workers write nothing: a chunk comes back as PNG bytes and score rows, and the driver records
them (`work.record`, after checking they are the chunk's candidates), so the sweep folder needs
to be on the driver only. What workers read is the LoRA file, by the path the driver has (a
filesystem every node mounts at the same path) and checked by content hash, the base model,
resolved on each node and checked by content hash, and the scoring models, loaded at start; a
worker that lacks any of them, or runs another harness version, stops the sweep at start with
one line naming its host. A worker process that dies is restarted by Ray and the chunk it was
rendering given out again, at most `MAX_ATTEMPTS` tries per chunk; the restarted worker gets
work again only once it answers (`_Pool`), and one that does not within STARTUP_TIMEOUT_S is
dropped. A chunk out of tries, a worker failing, or no worker left stops the sweep with one
line, keeping every candidate already recorded (a rerun continues from there). Nothing
Ray is started while every candidate is already finished. `import ray` happens only in functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
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
        from harness.cluster.workers import set_worker_threads

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
        from harness.cluster.workers import worker_info

        try:
            renderer = self._ready()
            problem, device = "", renderer.placement.device
        except Exception as e:  # noqa: BLE001 - reported to the driver as one line
            problem, device = first_line(e), None
        return {**worker_info(self.label), "device": device, "problem": problem}

    def render(self, chunk: "list[Candidate]") -> "list[Rendered]":
        """`CandidateRenderer.render` on this worker (made ready first after a restart)."""
        return self._ready().render(chunk)


def _check(infos: list[dict[str, Any]]) -> None:
    """Refuse a worker that cannot render this sweep; warn about CPU workers rendering with
    fewer torch threads than a plain process on their node would (pixels may differ: the
    thread count changes CPU results, docs/sweep.md)."""
    for i in infos:
        if i["problem"]:
            raise HarnessError(f"the Ray worker on {i['host']} cannot render this sweep: {i['problem']}")
    few = [
        i
        for i in infos
        if i["device"] == "cpu" and i["threads"] and i["plain_threads"] and i["threads"] < i["plain_threads"]
    ]
    if few:
        log.warning(
            "Ray CPU workers render with %d torch thread(s), a plain process on %s with %d: their "
            "candidates may not reproduce bit for bit with `harness render` there (on one machine "
            "use --workers 1 --gpus-per-worker 0)",
            few[0]["threads"],
            few[0]["host"],
            few[0]["plain_threads"],
        )


class _Pool:
    """The sweep's workers as the driver sees them, kept across `render` calls (a preview sweep
    renders twice): idle ones, and restarted ones being asked `info` before they get work
    again. A restarted worker that does not answer within STARTUP_TIMEOUT_S of its death is
    killed and dropped; with none left the sweep stops in one line."""

    def __init__(self, ray, actors: list[Any], infos: list[dict[str, Any]]):
        self.ray = ray
        self.idle = list(actors)
        self.hosts = {id(a): i["host"] for a, i in zip(actors, infos, strict=True)}
        self.probes: dict[Any, tuple[Any, float]] = {}  # info ref -> (actor, when it died)
        self.due: list[tuple[float, Any, float]] = []  # (ask again at, actor, when it died)

    def died(self, actor: Any, since: float | None = None) -> None:
        since = time.monotonic() if since is None else since
        self.probes[actor.info.remote()] = (actor, since)

    def waiting(self) -> list[Any]:
        now = time.monotonic()
        for entry in [d for d in self.due if d[0] <= now]:
            self.due.remove(entry)
            self.died(entry[1], entry[2])
        return list(self.probes)

    def answered(self, ref: Any, died: tuple) -> None:
        """A probe came back: the worker joins the idle ones, is asked again in a second, or is
        dropped (past STARTUP_TIMEOUT_S since it died)."""
        from harness.cluster.workers import STARTUP_TIMEOUT_S

        actor, since = self.probes.pop(ref)
        try:
            info = self.ray.get(ref)
        except died:
            if time.monotonic() - since < STARTUP_TIMEOUT_S:
                self.due.append((time.monotonic() + 1.0, actor, since))
            else:
                self.ray.kill(actor, no_restart=True)
            return
        self.hosts[id(actor)] = info["host"]  # Ray may have restarted it on another node
        if info["problem"]:
            why = info["problem"]
            raise HarnessError(f"the Ray worker on {info['host']} cannot render this sweep: {why}")
        self.idle.append(actor)

    def overdue(self) -> None:
        from harness.cluster.workers import STARTUP_TIMEOUT_S

        now = time.monotonic()
        for ref, (actor, since) in list(self.probes.items()):
            if now - since > STARTUP_TIMEOUT_S:
                del self.probes[ref]
                self.ray.kill(actor, no_restart=True)

    @property
    def alive(self) -> bool:
        return bool(self.idle or self.probes or self.due)


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
        from harness.cluster.connection import connect
        from harness.cluster.workers import plan_workers, start_actors

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
        state["pool"] = _Pool(ray, actors, infos)

    def render(todo: "list[Candidate]", on_done: Callable[[list[dict]], None]) -> list[str]:
        if not todo:
            return []
        start()
        pool: _Pool = state["pool"]
        ray = pool.ray
        from ray.exceptions import ObjectLostError, RayActorError, RayError, RayTaskError, WorkerCrashedError

        died = (RayActorError, WorkerCrashedError, ObjectLostError)
        queue = deque((chunk, 1) for chunk in chunks(todo, opts.chunk))
        inflight: dict[Any, tuple[Any, list, int]] = {}  # render ref -> (actor, chunk, attempt)
        rendered: list[str] = []

        def finish(actor: Any, chunk: list, done: list) -> None:
            ids = [c.id for c in chunk]
            if [r.id for r in done] != ids or [r.row.get("id") for r in done] != ids:
                raise HarnessError(
                    f"the Ray worker on {pool.hosts[id(actor)]} returned other candidates than "
                    f"{', '.join(ids)}"
                )
            rows = record(setup.out, done)
            rendered.extend(r["id"] for r in rows)
            on_done(rows)

        try:
            while queue or inflight:
                while pool.idle and queue:
                    actor, (chunk, attempt) = pool.idle.pop(), queue.popleft()
                    inflight[actor.render.remote(chunk)] = (actor, chunk, attempt)
                waiting = list(inflight) + pool.waiting()
                if not inflight and not pool.alive:
                    raise HarnessError(
                        "no Ray worker is left to render this sweep (none came back after dying); "
                        "every candidate recorded so far is kept: run the sweep again to continue"
                    )
                ready, _ = ray.wait(waiting, num_returns=1, timeout=1.0) if waiting else ([], [])
                if not waiting:
                    time.sleep(0.2)  # only workers to ask again later
                for ref in ready:
                    if ref in pool.probes:
                        pool.answered(ref, died)
                        continue
                    actor, chunk, attempt = inflight.pop(ref)
                    host = pool.hosts[id(actor)]
                    ids = ", ".join(c.id for c in chunk)
                    try:
                        done = ray.get(ref)
                    except died as e:  # the process died (a crash, an OOM kill): Ray restarts it
                        if attempt >= MAX_ATTEMPTS:
                            raise HarnessError(
                                f"Ray workers died {attempt} times rendering candidates {ids} (last on "
                                f"{host}: {first_line(e, 200)}); every candidate recorded so far is "
                                "kept: run the sweep again to continue"
                            ) from None
                        queue.appendleft((chunk, attempt + 1))
                        pool.died(actor)
                        continue
                    except RayTaskError as e:  # something the renderer raised (a HarnessError, a bug)
                        why = first_line(e.cause or e)
                        raise HarnessError(f"the Ray worker on {host} failed: {why}") from None
                    except RayError as e:  # the cluster itself: a node lost, out of memory or disk
                        why = first_line(e, 300)
                        raise HarnessError(f"Ray failed rendering candidates {ids}: {why}") from None
                    finish(actor, chunk, done)
                    pool.idle.append(actor)
                pool.overdue()
        except HarnessError:
            _salvage(ray, inflight, finish)  # chunks other workers finished meanwhile are kept
            raise
        return rendered

    with stack:
        yield Backend(start=start, render=render)


def _salvage(ray, inflight: dict[Any, tuple[Any, list, int]], finish: Callable) -> None:
    """Record the chunks in flight that have already come back whole; skip everything else."""
    if not inflight:
        return
    ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
    for ref in ready:
        actor, chunk, _ = inflight[ref]
        try:
            finish(actor, chunk, ray.get(ref))
        except Exception:  # noqa: BLE001 - the sweep is stopping with its own line already
            continue
