"""`harness sweep`: the one orchestration function of a sweep.

Flow: `plan_sweep` checks everything and writes nothing (the story, the options, the backend,
the model, the LoRA against the model's UNet, the scorers by name, the output folder) ->
`execute_sweep` takes the folder's lock, renders every unfinished candidate through the render
path (`harness.render.path`, the one `harness render` and the judges' re-render use; one
pipeline per process, batch size 1 so a panel's pixels are those of a story render), scores
each chunk with the judges' scorers (one set per process), records each finished candidate,
then chooses the story (`harness.sweep.select`) and hands a typed `SweepResult` to the writers
(`harness.sweep.outputs`). Kolors and the scoring models take turns on the accelerator.

Backends: `local` renders in this process; `ray` on the Ray workers of the judging backend
(`harness.sweep.ray_backend`). Both run the same unit of work (`harness.sweep.work`: render and
score a chunk, write nothing) and only this process records candidates (`work.record`: PNG,
then its row). `BACKENDS` maps a name to a context manager taking the setup and yielding a
`work.Backend` (`start()`, `render(todo, on_done) -> ids rendered`); nothing is started while
every candidate is finished, and a backend that cannot start leaves no sweep folder behind.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator

from harness import __version__
from harness.errors import HarnessError
from harness.sweep import store
from harness.sweep.plan import Candidate, SweepOptions, SweepPlan, make_plan
from harness.sweep.result import SweepResult, SweepSetup
from harness.sweep.work import Backend

if TYPE_CHECKING:
    from harness.config.scoring import ScoringConfig


@contextlib.contextmanager
def _local(setup: SweepSetup) -> Iterator[Backend]:
    from harness.sweep.work import CandidateRenderer, SweepWork, chunks, record

    renderer: CandidateRenderer | None = None

    def render(todo: list[Candidate], on_done: Callable[[list[dict]], None]) -> list[str]:
        nonlocal renderer
        rendered: list[str] = []
        for chunk in chunks(todo, setup.opts.chunk):
            if renderer is None:
                work = SweepWork.of(setup)
                renderer = CandidateRenderer(work, model=setup.model, placement=setup.placement)
            rows = record(setup.out, renderer.render(chunk))
            rendered += [r["id"] for r in rows]
            on_done(rows)
        return rendered

    yield Backend(start=lambda: None, render=render)


@contextlib.contextmanager
def _ray(setup: SweepSetup) -> Iterator[Backend]:
    from harness.sweep.ray_backend import ray_backend

    with ray_backend(setup) as backend:
        yield backend


BACKENDS: dict[str, Callable[[SweepSetup], ContextManager[Backend]]] = {
    "local": _local,
    "ray": _ray,
}
RAY_FLAGS = ("address", "workers", "gpus_per_worker")


def plan_sweep(
    story_path: Path, out: Path, opts: SweepOptions, scoring: "ScoringConfig | None" = None
) -> SweepSetup:
    """Check a sweep request completely (module docstring); nothing is written."""
    from harness.config.scoring import scoring_for
    from harness.config.story import load_story
    from harness.models.scoring_registry import lookup
    from harness.render.run import story_sha256

    loaded = load_story(story_path)
    story = loaded.story
    sha = story_sha256(loaded)
    plan = make_plan(story, sha, opts)
    if opts.backend not in BACKENDS:
        raise HarnessError(f"--backend: {opts.backend!r} is not one of {', '.join(BACKENDS)}")
    given = [f"--{f.replace('_', '-')}" for f in RAY_FLAGS if getattr(opts, f) is not None]
    if given and opts.backend != "ray":
        raise HarnessError(f"{given[0]}: only with --backend ray")
    if opts.backend == "ray":  # before any model is resolved or any folder made
        import importlib.util

        from harness.cluster.connection import check_address
        from harness.cluster.workers import check_request

        check_request(opts.workers, opts.gpus_per_worker)
        check_address(opts.address)
        if importlib.util.find_spec("ray") is None:
            raise HarnessError("--backend ray needs Ray: pip install -c .ci/constraints.txt -e '.[cluster]'")
    out = Path(out)
    config = scoring_for(story.base_model, scoring)
    for kind, name in (
        ("aesthetic", config.aesthetic_model),
        ("open_clip", config.consistency_model),
        ("open_clip", config.alignment_model),
    ):
        lookup(name, kind)
    _cheap_folder_check(out, sha)

    from harness.hashing import sha256_file
    from harness.render.path import place, resolve_model
    from harness.render.run import check_lora_fits

    lora_path = loaded.lora_path
    if lora_path is None and loaded.lora_train_config is not None:
        from harness.train.api import ensure_trained

        lora_path = ensure_trained(
            loaded.lora_train_config, device=opts.device, progress=opts.progress, inside=loaded.folder
        )
    model = resolve_model(story.base_model)
    lora_sha = None
    if lora_path is not None:
        check_lora_fits(lora_path, model)
        lora_sha = sha256_file(lora_path)
    identity = {
        "story_sha256": sha,
        "model_sha256": model.sha256,
        "lora_sha256": lora_sha,
    }
    store.check_folder(out, identity)
    # Ray workers place the model on the device they have; this process may have none of it
    placement = place(model, opts.device) if opts.backend == "local" else None
    return SweepSetup(loaded, out, opts, plan, config, model, placement, lora_path, lora_sha, identity)


def _cheap_folder_check(out: Path, sha: str) -> None:
    """The folder refused before any model is resolved (a download) when it is not a sweep
    folder or holds another story's sweep."""
    from harness.ownership import inspect

    owned = inspect(out, store.PURPOSE, label=f"--out {out}")
    if owned.state == "ours" and (owned.marker or {}).get("story_sha256") != sha:
        store.check_folder(out, {"story_sha256": sha})


def run_sweep(
    story_path: Path, out: Path, opts: SweepOptions, scoring: "ScoringConfig | None" = None
) -> SweepResult:
    """Sweep `story_path` into `out` (module docstring); the writers are called here too."""
    return execute_sweep(plan_sweep(story_path, out, opts, scoring))


def execute_sweep(setup: SweepSetup) -> SweepResult:
    """Lock the folder, render and score what is missing, choose, write the outputs."""
    from harness.render import outdir

    with outdir.locked(setup.out):
        store.check_folder(setup.out, setup.identity)  # again, under the lock
        return _sweep_locked(setup)


def _marker(setup: SweepSetup) -> dict[str, Any]:
    from datetime import datetime, timezone

    story = setup.loaded.story
    return {
        "kind": store.KIND,
        "harness_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "story": f"{story.team}/{story.name}",
        "story_file": str(setup.loaded.path),
        **setup.identity,
        "model_ref": story.base_model,
    }


def _sweep_locked(setup: SweepSetup) -> SweepResult:
    from tqdm.auto import tqdm

    out, plan, opts = setup.out, setup.plan, setup.opts
    rows: dict[str, dict[str, Any]] = {}
    rendered: list[str] = []
    scoring = store.scoring_identity(setup.config)

    def split(phase: list[Candidate]) -> tuple[list[Candidate], list[dict[str, Any]]]:
        """(candidates to render, rows of those already finished in the folder)"""
        todo, found = [], []
        for c in phase:
            row = store.finished(out, c, scoring)
            if row is None:
                todo.append(c)
            else:
                found.append(row)
        return todo, found

    first = plan.originals() + plan.previews()
    full = plan.full() if plan.preview_steps is None else None
    total = len(first) + (len(full) if full is not None else _kept_count(plan))
    best: dict[int, float] = {}
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(BACKENDS[opts.backend](setup))
        todo, found = split(first)
        if todo:
            backend.start()  # a cluster that cannot be used fails here, before the folder is made
        if not (out / store.MARKER).is_file():
            store.prepare_folder(out, _marker(setup))
        else:
            store.prepare_folder(out, {**_marker(setup), **_kept_created(out)})
        bar = tqdm(total=total, desc="sweep", unit="cand", disable=not opts.progress, leave=True)
        stack.callback(bar.close)

        def on_done(done: list[dict[str, Any]]) -> None:
            for row in done:
                rows[row["id"]] = row
                if row["steps"] == plan.steps:
                    best[row["panel"]] = max(best.get(row["panel"], float("-inf")), row["aesthetic"])
            bar.update(len(done))
            swept = [p for p in plan.panels if p in best]
            bar.set_postfix_str(" ".join(f"p{p} {best[p]:.3f}" for p in swept[:8]))

        for phase in (first, None):
            if phase is None:
                todo, found = split(full if full is not None else _after_preview(plan, rows))
            if found:
                on_done(found)
            rendered += backend.render(todo, on_done)

    from harness.sweep.outputs import write_outputs
    from harness.sweep.select import choose

    selection = choose(
        _options(plan, rows),
        plan.scales[0],
        swept=plan.panels,
        min_consistency=opts.min_consistency,
        alignment_margin=opts.alignment_margin,
    )
    result = SweepResult(out, setup, rows, rendered, selection, _preview_correlation(plan, rows))
    write_outputs(result)
    return result


def _kept_created(out: Path) -> dict[str, Any]:
    from harness.safeio import read_json

    try:
        marker = read_json(out / store.MARKER, max_bytes=64 << 10)
    except HarnessError:
        return {}
    return {"created": marker["created"]} if isinstance(marker, dict) and "created" in marker else {}


def _kept_count(plan: SweepPlan) -> int:
    return len(plan.scales) * len(plan.panels) * (plan.keep or 0)


def _after_preview(plan: SweepPlan, rows: dict[str, dict[str, Any]]) -> list[Candidate]:
    """The derived seeds whose previews scored best (`--keep` per panel and strength), at
    full steps; the story's own seed is rendered in full anyway."""
    keep: list[Candidate] = []
    for s in plan.scales:
        for p in plan.panels:
            previews = [plan.candidate(p, r, s, plan.preview_steps) for r in range(1, len(plan.seeds[p]))]
            ranked = sorted(previews, key=lambda c: (-rows[c.id]["aesthetic"], c.rank))
            keep += [plan.candidate(p, c.rank, s, plan.steps) for c in ranked[: plan.keep]]
    return keep


def _options(plan: SweepPlan, rows: dict[str, dict[str, Any]]):
    """The full-step candidates as the choice sees them, by strength and panel, rank order."""
    from harness.sweep.select import Option

    by_scale: dict[Any, dict[int, list[Option]]] = {s: {} for s in plan.scales}
    for row in sorted(rows.values(), key=lambda r: (r["panel"], r["rank"])):
        if row["steps"] != plan.steps:
            continue
        by_scale[row["scale"]].setdefault(row["panel"], []).append(
            Option(
                id=row["id"],
                panel=row["panel"],
                rank=row["rank"],
                seed=row["seed"],
                scale=row["scale"],
                aesthetic=row["aesthetic"],
                clip_t=row["clip_t"],
                embedding=tuple(row["embedding"]),
            )
        )
    return by_scale


def _preview_correlation(plan: SweepPlan, rows: dict[str, dict[str, Any]]) -> float | None:
    """Spearman's rank correlation between preview and full aesthetic scores, over the
    candidates that have both (None with fewer than 3 or without a preview)."""
    if plan.preview_steps is None:
        return None
    pairs = []
    for s in plan.scales:
        for p in plan.panels:
            for r in range(len(plan.seeds[p])):
                a = rows.get(plan.candidate(p, r, s, plan.preview_steps).id)
                b = rows.get(plan.candidate(p, r, s, plan.steps).id)
                if a is not None and b is not None:
                    pairs.append((a["aesthetic"], b["aesthetic"]))
    if len(pairs) < 3:
        return None
    import numpy as np
    import pandas as pd

    df = pd.DataFrame(pairs, columns=["preview", "full"]).rank()
    if df["preview"].nunique() < 2 or df["full"].nunique() < 2:
        return None
    return float(np.corrcoef(df["preview"], df["full"])[0, 1])
