"""`harness sweep`: the one orchestration function of a sweep.

Flow: `plan_sweep` checks everything and writes nothing (the story, the options, the backend,
the model, the LoRA against the model's UNet, the scorers by name, the output folder) ->
`execute_sweep` takes the folder's lock, renders every unfinished candidate through the render
path (`harness.render.path`, the one `harness render` and the judges' re-render use; one
pipeline per process, batch size 1 so a panel's pixels are those of a story render), scores
each chunk with the judges' scorers (one set per process), records each finished candidate,
then chooses the story (`harness.sweep.select`) and hands a typed `SweepResult` to the writers
(`harness.sweep.outputs`). Kolors and the scoring models take turns on the accelerator.

Backends: `local` renders in this process. The seam for another (Ray workers of the judging
backend) is `BACKENDS`: a backend gets the setup, the candidates still to render and an
`on_done(rows)` callback, and returns the ids it rendered; it must leave each candidate finished
in the folder (PNG, then its row) as `_render_and_score` does, and report its rows to `on_done`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness import __version__
from harness.errors import HarnessError
from harness.sweep import store
from harness.sweep.plan import Candidate, SweepOptions, SweepPlan, make_plan, scale_text
from harness.sweep.result import SweepResult, SweepSetup

if TYPE_CHECKING:
    from harness.config.scoring import ScoringConfig

# Renders done by this process (all sweeps): tests and benchmarks read it to prove a resumed
# sweep rendered only what was missing.
RENDER_COUNT = [0]


def _local(setup: SweepSetup, todo: list[Candidate], on_done: Callable[[list[dict]], None]) -> list[str]:
    return _render_and_score(setup, todo, on_done)


BACKENDS: dict[str, Callable[..., list[str]] | None] = {"local": _local, "ray": None}


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
    if BACKENDS[opts.backend] is None:
        raise HarnessError(
            f"--backend {opts.backend}: not yet available for sweeps (the judges' Ray backend has no "
            "sweep task yet); use --backend local"
        )
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
    return SweepSetup(
        loaded, out, opts, plan, config, model, place(model, opts.device), lora_path, lora_sha, identity
    )


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
    if not (out / store.MARKER).is_file():
        store.prepare_folder(out, _marker(setup))
    else:
        store.prepare_folder(out, {**_marker(setup), **_kept_created(out)})
    rows: dict[str, dict[str, Any]] = {}
    rendered: list[str] = []
    backend = BACKENDS[opts.backend]
    assert backend is not None

    first = plan.originals() + plan.previews()
    full = plan.full() if plan.preview_steps is None else None
    total = len(first) + (len(full) if full is not None else _kept_count(plan))
    bar = tqdm(total=total, desc="sweep", unit="cand", disable=not opts.progress, leave=True)
    best: dict[int, float] = {}

    def on_done(done: list[dict[str, Any]]) -> None:
        for row in done:
            rows[row["id"]] = row
            if row["steps"] == plan.steps:
                best[row["panel"]] = max(best.get(row["panel"], float("-inf")), row["aesthetic"])
        bar.update(len(done))
        swept = [p for p in plan.panels if p in best]
        bar.set_postfix_str(" ".join(f"p{p} {best[p]:.3f}" for p in swept[:8]))

    scoring = store.scoring_identity(setup.config)
    try:
        for phase in (first, None):
            if phase is None:
                phase = full if full is not None else _after_preview(plan, rows)
            todo = []
            found = []
            for c in phase:
                row = store.finished(out, c, scoring)
                if row is None:
                    todo.append(c)
                else:
                    found.append(row)
            if found:
                on_done(found)
            rendered += backend(setup, todo, on_done)
    finally:
        bar.close()

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


def _render_and_score(
    setup: SweepSetup, todo: list[Candidate], on_done: Callable[[list[dict]], None]
) -> list[str]:
    """Render `todo` in chunks (grouped by strength and steps), score each chunk, record each
    candidate (PNG, then its row); returns the ids rendered."""
    from harness.hashing import sha256_file
    from harness.render.engine import PanelJob
    from harness.render.path import PipelineRequest, prepare_pipeline, render_panels
    from harness.render.pipelines import park_pipeline
    from harness.render.pngmeta import save_png
    from harness.render.records import LoraRecord, ModelRecord, PanelParams
    from harness.sweep.scoring import CandidateScorer

    if not todo:
        return []
    story, out, opts = setup.loaded.story, setup.out, setup.opts
    scorer = CandidateScorer(setup.config)
    model_rec = ModelRecord(ref=str(setup.model.ref), sha256=setup.model.sha256)
    groups: dict[tuple, list[Candidate]] = {}
    for c in todo:
        groups.setdefault((scale_text(c.scale), c.steps), []).append(c)
    rendered: list[str] = []
    for chunk_group in groups.values():
        c0 = chunk_group[0]
        request = PipelineRequest(
            setup.model,
            setup.placement,
            setup.lora_path,
            setup.lora_sha256,
            c0.scale if c0.scale is not None else 1.0,
        )
        sampling = story.sampling.model_copy(update={"steps": c0.steps})
        lora = (
            LoraRecord(file=setup.lora_path.name, sha256=setup.lora_sha256, scale=float(c0.scale))
            if setup.lora_path is not None and c0.scale is not None
            else None
        )
        for i in range(0, len(chunk_group), opts.chunk):
            chunk = chunk_group[i : i + opts.chunk]
            scorer.park()
            pipe = prepare_pipeline(request, progress=False)
            jobs = [
                PanelJob(c.panel, story.panels[c.panel - 1].prompt, story.negative_for(c.panel - 1), c.seed)
                for c in chunk
            ]
            t0 = time.perf_counter()
            drawn = render_panels(pipe, request, jobs, sampling, batch_size=1, progress=False)
            seconds = (time.perf_counter() - t0) / len(chunk)
            for c, (job, image) in zip(chunk, drawn, strict=True):
                params = PanelParams(
                    harness_version=__version__,
                    team=story.team,
                    name=story.name,
                    panel=c.panel,
                    prompt=job.prompt,
                    negative_prompt=job.negative_prompt,
                    seed=c.seed,
                    **sampling.model_dump(mode="json"),
                    model=model_rec,
                    lora=lora,
                    device=setup.placement.device,
                    dtype=setup.placement.dtype_name,
                    batch_size=1,
                )
                save_png(image, store.png_path(out, c.id), params)
                RENDER_COUNT[0] += 1
                rendered.append(c.id)
            park_pipeline()
            scores = scorer.score([im for _, im in drawn], [j.prompt for j in jobs])
            done = []
            for c, s in zip(chunk, scores, strict=True):
                row = {
                    "id": c.id,
                    "panel": c.panel,
                    "rank": c.rank,
                    "seed": c.seed,
                    "scale": c.scale,
                    "steps": c.steps,
                    "aesthetic": s["aesthetic"],
                    "clip_t": s["clip_t"],
                    "png": f"{store.CANDIDATES}/{c.id}.png",
                    "png_sha256": sha256_file(store.png_path(out, c.id)),
                    "story_sha256": c.story_sha256,
                    "model_sha256": setup.model.sha256,
                    "lora_sha256": setup.lora_sha256,
                    **store.scoring_identity(setup.config),
                    "render_s": round(seconds, 3),
                    "embedding": s["embedding"],
                }
                store.write_row(out, row)
                done.append(row)
            on_done(done)
    return rendered
