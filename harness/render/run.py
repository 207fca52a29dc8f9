"""Render a validated story into a run folder: the one orchestration function for rendering.

Flow: `plan_render` checks the whole request and writes nothing (panels, batch size, output
folder, model, the LoRA's content against this model's UNet, device) -> `execute_render` takes
the folder's lock, checks the folder again, then loads and renders through the one render path
(`harness.render.path`, which the judges' re-render shares) and writes PNGs, the manifest and
the contact sheet; both records are the typed ones of `harness.render.records`. A refusal at
any check leaves the output folder (and everything above it) as it
was, so correcting the input and running again needs no --force.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import __version__
from harness.config.story import LoadedStory
from harness.errors import HarnessError
from harness.layout import CONTACT_SHEET, IMAGES, STORY_COPY, panel_file
from harness.render import outdir
from harness.render.records import (
    RENDER_KIND,
    LoraRecord,
    ModelRecord,
    PanelParams,
    PanelRecord,
    PlacementRecord,
    RunIdentity,
    RunManifest,
    SamplingRecord,
    StoryRecord,
)


@dataclass
class RenderResult:
    out: Path
    manifest: RunManifest
    rendered: list[int] = field(default_factory=list)  # panel numbers rendered by this call

    @property
    def images(self) -> list[Path]:
        return [self.out / p.file for p in self.manifest.panels]

    @property
    def contact_sheet(self) -> Path:
        return self.out / CONTACT_SHEET


def parse_panels(spec: str | None, count: int) -> list[int]:
    """'1,3' -> [1, 3]; None -> all panels. Refuses panels the story does not have."""
    if spec is None:
        return list(range(1, count + 1))
    chosen: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part.isdigit():
            raise HarnessError(f"--panels: {part!r} is not a panel number (use e.g. --panels 1,3)")
        n = int(part)
        if not 1 <= n <= count:
            raise HarnessError(f"--panels: panel {n} does not exist (the story has panels 1-{count})")
        if n not in chosen:
            chosen.append(n)
    return sorted(chosen)


def story_sha256(loaded: LoadedStory) -> str:
    """Hash of the story's validated content (comments and formatting do not count)."""
    from harness.hashing import sha256_bytes

    canonical = json.dumps(loaded.story.model_dump(mode="json"), ensure_ascii=False, sort_keys=True)
    return sha256_bytes(canonical.encode())


@dataclass
class RenderPlan:
    """Everything checked about one render request; `execute_render` writes it."""

    loaded: LoadedStory
    out: Path
    chosen: list[int]
    batch_size: int
    force: bool
    progress: bool
    request: Any  # harness.render.path.PipelineRequest: model, placement, LoRA
    lora: LoraRecord | None
    identity: RunIdentity

    @property
    def model(self):
        return self.request.model

    @property
    def placement(self):
        return self.request.placement


_shapes_cache: dict[str, dict[str, tuple[int, int]]] = {}


def check_lora_fits(path: Path, model) -> None:
    """The judges' LoRA check (keys, finite values, ranks, shapes against this model's UNet),
    run before anything is written; the same line `harness.lora.apply.apply_lora` would give at load time."""
    from harness.lora.checks import check_lora, unet_linear_shapes

    if model.sha256 not in _shapes_cache:
        _shapes_cache[model.sha256] = unet_linear_shapes(model.folder / "unet" / "config.json")
    problems, facts = check_lora(path, _shapes_cache[model.sha256])
    if not problems and facts.get("format") == "diffsynth":
        problems = ["DiffSynth naming; convert it with `harness lora import FILE --out DIR` first"]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise HarnessError(f"{path}: cannot be applied as a Kolors LoRA: {problems[0]}{more}")


def plan_render(
    loaded: LoadedStory,
    out: Path,
    *,
    panels: str | None = None,
    batch_size: int = 1,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    lora_file: Path | None = None,
) -> RenderPlan:
    """Check a render request completely (see module docstring); nothing is written."""
    story = loaded.story
    out = Path(out)
    if out.is_symlink():  # a link the user typed as --out: the folder it names is the run folder
        out = Path(os.path.realpath(out))
    chosen = parse_panels(panels, story.panel_count)
    if batch_size < 1:
        raise HarnessError(f"--batch-size: must be at least 1, got {batch_size}")
    lora_path = lora_file or loaded.lora_path
    if lora_path is None and loaded.lora_train_config is not None:
        raise HarnessError(
            f"{loaded.path}: lora.train names a LoRA still to be trained; "
            "`harness run` trains it first (or `harness train` it and set lora.path)"
        )
    early = {"story_sha256": story_sha256(loaded)}
    outdir.check_out_dir(out, early, force=force)  # cheap check before any download

    from harness.hashing import sha256_file
    from harness.render.path import PipelineRequest, place, resolve_model

    model = resolve_model(story.base_model)
    lora = None
    if lora_path is not None and story.lora is not None:
        check_lora_fits(lora_path, model)
        lora = LoraRecord(file=lora_path.name, sha256=sha256_file(lora_path), scale=story.lora.scale)
    request = PipelineRequest(
        model,
        place(model, device),
        lora_path if lora else None,
        lora.sha256 if lora else None,
        lora.scale if lora else 1.0,
    )
    identity = RunIdentity(
        **early,
        model_sha256=model.sha256,
        lora_sha256=lora.sha256 if lora else None,
        lora_scale=lora.scale if lora else None,
        device=request.placement.device,
        dtype=request.placement.dtype_name,
        batch_size=batch_size,
    )
    outdir.check_out_dir(out, identity.to_json(), force=force)
    return RenderPlan(loaded, out, chosen, batch_size, force, progress, request, lora, identity)


def render_story(
    loaded: LoadedStory,
    out: Path,
    *,
    panels: str | None = None,
    batch_size: int = 1,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    lora_file: Path | None = None,
) -> RenderResult:
    """Render all or some panels of `loaded` into `out` (see module docstring).

    `lora_file` is the trained LoRA for a story that declares `lora.train` (`harness run`
    trains it first); a story that names `lora.path` needs none.
    """
    plan = plan_render(
        loaded,
        out,
        panels=panels,
        batch_size=batch_size,
        device=device,
        force=force,
        progress=progress,
        lora_file=lora_file,
    )
    return execute_render(plan)


def execute_render(plan: RenderPlan) -> RenderResult:
    """Write a checked plan: lock the folder, check it again, render, write (module docstring)."""
    with outdir.locked(plan.out):
        return _write_run(plan)


def _write_run(plan: RenderPlan) -> RenderResult:
    from harness.safeio import write_atomic

    loaded, story, out = plan.loaded, plan.loaded.story, plan.out
    model, placement, lora = plan.model, plan.placement, plan.lora
    batch_size, progress = plan.batch_size, plan.progress
    existing = outdir.check_out_dir(out, plan.identity.to_json(), force=plan.force)  # again, locked

    # From here on the output folder is ours.
    t0 = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"{out}: cannot create the run folder ({e.strerror})") from None
    if existing is None:
        outdir.clear_run(out)  # --force, or the record of a render that stopped before panel 1
    images = out / IMAGES
    if not images.is_dir():
        images.mkdir()
    source = loaded.source if loaded.source is not None else loaded.path.read_bytes()
    write_atomic(out / STORY_COPY, source)
    from harness.versions import library_versions

    model_rec = ModelRecord(ref=str(model.ref), sha256=model.sha256)
    sampling = SamplingRecord(**story.sampling.model_dump(mode="json"))
    if existing is not None:  # the same run, continued: its record must be one the harness reads
        manifest = outdir.parse_manifest(out, existing)
    else:
        manifest = RunManifest(
            kind=RENDER_KIND,
            harness_version=__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            identity=plan.identity,
            story=StoryRecord(
                file=STORY_COPY,
                source=str(loaded.path),
                team=story.team,
                name=story.name,
                title=story.title,
                panel_count=story.panel_count,
            ),
            model=model_rec,
            lora=lora,
            sampling=sampling,
            placement=PlacementRecord(device=placement.device, dtype=placement.dtype_name),
            batch_size=batch_size,
            libraries=library_versions(),
            panels=[],
            contact_sheet=None,
            status="rendering",
        )
    manifest = manifest.model_copy(update={"status": "rendering"})
    outdir.write_manifest(out, manifest)

    from harness.hashing import sha256_file
    from harness.render.engine import PanelJob
    from harness.render.path import prepare_pipeline, render_panels

    pipe = prepare_pipeline(plan.request, progress=progress)
    t_load = time.perf_counter() - t0

    jobs = [
        PanelJob(i, story.panels[i - 1].prompt, story.negative_for(i - 1), story.panels[i - 1].seed)
        for i in plan.chosen
    ]
    from harness.render.pngmeta import save_png

    by_index = {p.index: p for p in manifest.panels}

    def write_batch(done) -> None:
        nonlocal manifest
        for job, image in done:
            rel = panel_file(job.index)
            params = PanelParams.for_job(story, job, sampling, model_rec, lora, placement, batch_size)
            save_png(image, out / rel, params)
            by_index[job.index] = PanelRecord(
                index=job.index,
                file=rel,
                sha256=sha256_file(out / rel),
                seed=job.seed,
                prompt=job.prompt,
                negative_prompt=job.negative_prompt,
            )
        manifest = manifest.model_copy(update={"panels": [by_index[k] for k in sorted(by_index)]})
        outdir.write_manifest(out, manifest)

    t1 = time.perf_counter()
    render_panels(
        pipe,
        plan.request,
        jobs,
        story.sampling,
        batch_size=batch_size,
        progress=progress,
        on_batch=write_batch,
    )
    t_render = time.perf_counter() - t1

    from harness.render.contact import contact_sheet

    title = f"{story.title or story.name} · {story.team}/{story.name}"
    contact_sheet([(p.index, p.prompt, out / p.file) for p in manifest.panels], title, out / CONTACT_SHEET)
    complete = len(manifest.panels) == story.panel_count
    manifest = manifest.model_copy(
        update={
            "contact_sheet": CONTACT_SHEET,
            "status": "complete" if complete else "partial",
            "timings_s": {"load": round(t_load, 3), "render": round(t_render, 3)},
        }
    )
    outdir.write_manifest(out, manifest)
    return RenderResult(out, manifest, plan.chosen)
