"""`verify --all --backend ray`: judge a folder of bundles on a Ray cluster.

Owns: the judging actors (`JudgeWorker`: one per GPU share, each keeping one Kolors and
swapping LoRAs through `pipeline_for`), the start-up check that every worker sees ROOT, handing
bundles out grouped by base model, bounded retries when a worker process dies, the driver-side
backstop for a bundle past its time limit, and the progress bar. The connection, the worker
plan, the thread rule and the start of the pool (version check included) are
`harness.cluster`'s, shared with `harness sweep --backend ray`.

The work on a bundle is `batch.assess`, the very call the local loop makes, so the two backends
cannot judge differently. Workers only read: verdict.json and the ledger are written by the
driver through `batch.save_verdict`, `batch.record` and `batch.LedgerSaver`, as locally. Bundles
reach the workers as paths: ROOT must be on a filesystem every node mounts at the same path (the
driver checks this at start with a probe file it writes in ROOT). `import ray` happens only in
functions here and in `harness.cluster`, never when the CLI starts.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.bundle.batch import (
    DEFAULT_TIME_LIMIT,
    LedgerSaver,
    Row,
    _failed,
    check_root,
    clear_stale_temps,
    expected_for,
    judge_settings,
    ledger_lock,
    read_ledger,
    record,
    recorded_row,
    save_verdict,
    start_batch,
)
from harness.cluster.workers import (
    STARTUP_TIMEOUT_S,
    plan_workers,
    set_worker_threads,
    start_actors,
    worker_info,
)
from harness.errors import HarnessError, first_line

MAX_ATTEMPTS = 3  # tries of one bundle when the worker judging it dies (a crash, an OOM kill)
RESTART_TIMEOUT_S = STARTUP_TIMEOUT_S  # a dead worker must be back (answering `info`) within this
BACKSTOP_GRACE_S = 60.0  # past the time limit plus this, the driver kills the worker itself
PROBE = ".verify-ray-probe"  # written by the driver in ROOT at start, read by every worker


class JudgeWorker:
    """One Ray worker process: judges one bundle at a time on the device Ray gave it.

    Ray sets CUDA_VISIBLE_DEVICES to the GPU(s) it assigned before this runs, so the harness's
    device policy sees exactly those (and the CPU on a CPU-only node). The Kolors pipeline and
    the scoring models are loaded by the first bundle and kept (`pipeline_for`: one base per
    process, each bundle's LoRA swapped in). A plain class, made a Ray actor by the driver."""

    def __init__(self, label: str, cwd: str):
        self.label = label
        if os.path.isdir(cwd):  # relative bundle paths mean what they mean on the driver
            os.chdir(cwd)
        set_worker_threads()

    def info(self, root: str, token: str) -> dict[str, Any]:
        """Who and where this worker is, and whether it sees the driver's ROOT (the probe file)."""
        from harness.safeio import read_bytes

        try:
            seen = read_bytes(Path(root) / PROBE, max_bytes=256).decode("ascii", "replace") == token
            why = "" if seen else "a different folder is at that path here"
        except (HarnessError, OSError) as e:
            seen, why = False, first_line(e)
        return {**worker_info(self.label), "sees_root": seen, "why": why}

    def judge(self, bundle: str, expected, rerun: bool, scoring, time_limit_s) -> tuple[Any, float, int]:
        """`batch.assess` on one bundle: (verdict, seconds, this process's pid). Writes nothing."""
        from harness.bundle.batch import assess

        start = time.monotonic()
        v = assess(Path(bundle), rerun=rerun, scoring=scoring, time_limit_s=time_limit_s, expected=expected)
        return v, time.monotonic() - start, os.getpid()


@dataclass
class _Worker:
    actor: Any
    info: dict[str, Any]
    base: str | None = None  # the base model of the bundles it was last given
    job: _Job | None = None
    restarting: bool = False  # died; waiting for Ray's restart to answer `info` again
    died_at: float = 0.0  # when it died (monotonic); a restart not answered in RESTART_TIMEOUT_S retires it
    failed_restarts: int = 0
    retired: bool = False

    @property
    def name(self) -> str:
        return f"{self.info['label']}@{self.info['host']}:{self.info['pid']}"


@dataclass
class _Job:
    bundle: Path
    base: str
    attempt: int = 1
    started: float = 0.0
    timed_out: bool = False
    deaths: list[str] = field(default_factory=list)


def base_of(bundle: Path) -> str:
    """The base model a bundle's story names (its group: a worker keeps one base loaded). Only
    a scheduling hint: read with the safe YAML reader, '' when unreadable; the worker checks it."""
    try:
        from harness.config.yamlio import read_yaml

        data = read_yaml(bundle / "story.yaml")
        ref = data.get("base_model") if isinstance(data, dict) else None
    except Exception:  # noqa: BLE001 - an unreadable story is judged (and failed) by the worker
        return ""
    return ref[:300] if isinstance(ref, str) else ""


class _Queue:
    """Bundles waiting, grouped by base model: a worker gets its current base's next bundle, else
    the largest group's (so a base is loaded by as few workers as possible)."""

    def __init__(self, jobs: list[_Job]):
        self.groups: dict[str, deque[_Job]] = {}
        for j in jobs:
            self.groups.setdefault(j.base, deque()).append(j)

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def take(self, base: str | None) -> _Job | None:
        group = self.groups.get(base) if base is not None else None
        if not group:
            live = [(len(g), k) for k, g in self.groups.items() if g]
            if not live:
                return None
            group = self.groups[max(live)[1]]
        return group.popleft()

    def retry(self, job: _Job) -> None:
        self.groups.setdefault(job.base, deque()).appendleft(job)


def _start_workers(ray, root: Path, n: int, gpus: float, cpus: float) -> list[_Worker]:
    """Start `n` judges (`harness.cluster.workers.start_actors`) and check that each reads the probe file
    the driver writes in ROOT (the same folder at the same path on every node)."""
    from harness.safeio import write_atomic

    token = secrets.token_hex(16)
    write_atomic(root / PROBE, token)
    try:
        actors, infos = start_actors(
            ray,
            JudgeWorker,
            n,
            gpus,
            cpus,
            init_args=lambda i: (f"w{i}", os.getcwd()),
            info_args=(str(root), token),
            check=lambda infos: _check_workers(root, infos),
        )
    finally:
        try:
            os.unlink(root / PROBE)
        except OSError:
            pass
    return [_Worker(a, i) for a, i in zip(actors, infos, strict=True)]


def _check_workers(root: Path, infos: list[dict[str, Any]]) -> None:
    """Every worker read the driver's probe in ROOT."""
    blind = [i for i in infos if not i["sees_root"]]
    if blind:
        hosts = ", ".join(sorted({i["host"] for i in blind}))
        raise HarnessError(
            f"{root}: the Ray workers on {hosts} cannot see this folder ({blind[0]['why']}); put the "
            "submissions on a filesystem every node mounts at the same path"
        )


def _died_verdict(job: _Job, time_limit_s):
    from harness.bundle.verdict import Verdict

    v = Verdict(str(job.bundle))
    if job.timed_out:
        v.add("bundle", [f"stopped: verifying took longer than the limit of {time_limit_s:g} s"])
    else:
        last = job.deaths[-1] if job.deaths else "no reason given"
        n = len(job.deaths)
        v.add("bundle", [f"the worker judging it died {n} time{'s' if n != 1 else ''} (last: {last})"])
    return v


def verify_all_ray(
    root: str | Path,
    *,
    force: bool = False,
    rerun: bool = True,
    scoring=None,
    progress: bool = False,
    time_limit_s: float | None = DEFAULT_TIME_LIMIT,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    on_dispatch: Callable[[Path, dict[str, Any]], None] | None = None,
) -> list[Row]:
    """`verify_all` on a Ray cluster: the same rows, verdict files and ledger, judged in parallel.

    `address`: None starts a private Ray on this machine (fresh temp folder, removed after);
    "auto" joins the cluster `ray start` runs here; "ray://host:port" a remote one through Ray
    Client. Inside a process already connected to Ray (`ray.init` done), that connection is used.
    `workers`, `gpus_per_worker`: see `plan_workers`. Unchanged bundles are taken from the ledger
    before any worker starts. A worker that dies mid-bundle is restarted by Ray and the bundle is
    given out again, at most `max_attempts` times in all. `on_dispatch(bundle, worker_info)` is
    called as each bundle is handed out (progress displays, tests).
    """
    from tqdm.auto import tqdm

    from harness.cluster.connection import connect

    root = check_root(root)
    done: dict[Path, Row] = {}
    with ledger_lock(root):
        ledger = read_ledger(root)
        bundles = start_batch(root)
        settings = judge_settings(rerun=rerun, scoring=scoring)
        saver = LedgerSaver(root, ledger)
        todo: list[_Job] = []
        for b in bundles:
            row = (
                None if force else recorded_row(root, b, ledger, settings=settings, time_limit_s=time_limit_s)
            )
            if row is not None:
                done[b] = row
            else:
                todo.append(_Job(b, base_of(b)))
        if todo:
            with connect(address) as ray:
                n, g, c = plan_workers(ray.cluster_resources(), workers, gpus_per_worker)
                pool = _start_workers(ray, root, n, g, c)
                bar = tqdm(
                    total=len(bundles),
                    initial=len(done),
                    desc="judging",
                    unit="bundle",
                    disable=not progress,
                    file=sys.stderr,
                )
                try:
                    _run(
                        ray,
                        root,
                        pool,
                        _Queue(todo),
                        done,
                        ledger,
                        saver,
                        bar,
                        settings=settings,
                        rerun=rerun,
                        scoring=scoring,
                        time_limit_s=time_limit_s,
                        max_attempts=max_attempts,
                        on_dispatch=on_dispatch,
                    )
                finally:
                    bar.close()
                    saver.now()
                    for w in pool:
                        ray.kill(w.actor, no_restart=True)
        else:
            saver.now()
    return [done[b] for b in bundles]


def _run(
    ray,
    root,
    pool,
    queue,
    done,
    ledger,
    saver,
    bar,
    *,
    settings,
    rerun,
    scoring,
    time_limit_s,
    max_attempts,
    on_dispatch,
) -> None:
    """The driver's loop: hand bundles to idle workers, collect verdicts, write them, retry."""
    from ray.exceptions import ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

    from harness.bundle.verdict import Verdict

    died = (RayActorError, WorkerCrashedError, ObjectLostError)
    inflight: dict[Any, tuple[_Worker, str]] = {}  # ref -> (worker, "judge" | "info")
    failed = 0
    limit = time_limit_s if time_limit_s and time_limit_s > 0 else None
    token = ""  # the probe is gone by now; `info` after a restart reports who and where only

    def finish(w: _Worker, job: _Job, v, seconds: float) -> None:
        nonlocal failed
        path = save_verdict(job.bundle, v)
        data = record(root, job.bundle, ledger, v, path, settings=settings)
        done[job.bundle] = Row(job.bundle, data, False, worker=w.name, seconds=seconds, attempts=job.attempt)
        failed += _failed(done[job.bundle])
        saver.maybe()
        bar.update(1)

    def restart(w: _Worker) -> None:  # Ray restarts the process; ask who it is before reusing it
        if not w.restarting:
            w.died_at = time.monotonic()
        w.restarting = True
        inflight[w.actor.info.remote(str(root), token)] = (w, "info")

    while len(queue) or any(kind == "judge" for _, kind in inflight.values()):
        live = [w for w in pool if not w.retired]
        if not live:  # every worker failed to come back: the rest cannot be judged
            while len(queue):
                job = queue.take(None)
                job.deaths.append("no Ray worker is left")
                finish(
                    _Worker(None, {"label": "-", "host": "-", "pid": 0}), job, _died_verdict(job, limit), 0.0
                )
            break
        for w in live:
            if w.job is None and not w.restarting and len(queue):
                job = queue.take(w.base)
                w.base, w.job, job.started = job.base, job, time.monotonic()
                clear_stale_temps(job.bundle)  # the driver is the only one writing in bundles
                ref = w.actor.judge.remote(
                    str(job.bundle), expected_for(root, job.bundle), rerun, scoring, time_limit_s
                )
                inflight[ref] = (w, "judge")
                if on_dispatch is not None:
                    on_dispatch(job.bundle, dict(w.info))
        busy = sum(kind == "judge" for _, kind in inflight.values())
        bar.set_postfix_str(f"{failed} failed, {busy}/{len(live)} workers busy", refresh=False)
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
        if ready:  # collect everything finished by now, not just the first
            ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0)
        for ref in ready:
            w, kind = inflight.pop(ref)
            if kind == "info":
                try:
                    w.info.update(pid=ray.get(ref)["pid"])
                    w.restarting, w.failed_restarts = False, 0
                except died:
                    w.failed_restarts += 1
                    if w.failed_restarts >= max_attempts:
                        w.retired = True
                    else:
                        restart(w)
                continue
            job, w.job = w.job, None
            elapsed = time.monotonic() - job.started
            try:
                v, seconds, pid = ray.get(ref)
                w.info["pid"] = pid
            except died as e:  # the process died (a crash, an OOM kill, the driver's backstop)
                restart(w)
                if not job.timed_out:
                    job.deaths.append(first_line(e, 200))
                    if len(job.deaths) < max_attempts:
                        job.attempt += 1
                        queue.retry(job)
                        continue
                v, seconds = _died_verdict(job, time_limit_s), elapsed
            except RayTaskError as e:  # something escaped `assess` (it catches every Exception)
                v = Verdict(str(job.bundle))
                v.add("bundle", [f"internal error in the worker: {first_line(e.cause or e)}"])
                seconds = elapsed
            finish(w, job, v, seconds)
        now = time.monotonic()
        for ref, (w, kind) in list(inflight.items()):  # a restart that never comes back (node gone)
            if kind == "info" and now - w.died_at > RESTART_TIMEOUT_S:
                del inflight[ref]
                w.retired = True
                ray.kill(w.actor, no_restart=True)
        if limit is not None:  # a hang SIGALRM cannot cut (native code): the driver kills the worker
            now = time.monotonic()
            for w, kind in inflight.values():
                if kind == "judge" and not w.job.timed_out:
                    if now - w.job.started > limit + max(BACKSTOP_GRACE_S, 0.1 * limit):
                        w.job.timed_out = True
                        ray.kill(w.actor, no_restart=False)
        bar.set_description(f"judging ({failed} failed)" if failed else "judging", refresh=True)
