"""Render a validated story into a run folder: the one orchestration function for rendering.

Flow: check the request (panels, batch size, output folder) -> resolve model and LoRA ->
check the folder again with their hashes -> load -> render -> write PNGs, manifest and contact
sheet. All input checks happen before anything is written into the output folder.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import __version__
from harness.config.story import LoadedStory
from harness.errors import HarnessError
from harness.render import outdir
from harness.render.outdir import CONTACT_SHEET, IMAGES, STORY_COPY


@dataclass
class RenderResult:
    out: Path
    manifest: dict[str, Any]
    rendered: list[int] = field(default_factory=list)  # panel numbers rendered by this call

    @property
    def images(self) -> list[Path]:
        return [self.out / p["file"] for p in self.manifest["panels"]]

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


def panel_file(index: int) -> str:
    return f"{IMAGES}/{index:02d}.png"


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
    story = loaded.story
    out = Path(out)
    chosen = parse_panels(panels, story.panel_count)
    if batch_size < 1:
        raise HarnessError(f"--batch-size: must be at least 1, got {batch_size}")
    lora_path = lora_file or loaded.lora_path
    if lora_path is None and loaded.lora_train_config is not None:
        raise HarnessError(
            f"{loaded.path}: lora.train names a LoRA still to be trained; "
            "`harness run` trains it first (or `harness train` it and set lora.path)"
        )
    identity: dict[str, Any] = {"story_sha256": story_sha256(loaded)}
    outdir.check_out_dir(out, identity, force=force)  # cheap check before any download

    from harness import device as dev
    from harness.hashing import sha256_file
    from harness.models.refs import parse_ref
    from harness.models.resolve import resolve

    t0 = time.perf_counter()
    model = resolve(parse_ref(story.base_model))
    lora = None
    if lora_path is not None and story.lora is not None:
        lora = {"file": lora_path.name, "sha256": sha256_file(lora_path), "scale": story.lora.scale}
    placement = dev.choose(model.ref.source, device)  # type: ignore[arg-type]
    identity.update(
        model_sha256=model.sha256,
        lora_sha256=lora["sha256"] if lora else None,
        lora_scale=lora["scale"] if lora else None,
        device=placement.device,
        dtype=placement.dtype_name,
        batch_size=batch_size,
    )
    existing = outdir.check_out_dir(out, identity, force=force)

    # From here on the output folder is ours.
    out.mkdir(parents=True, exist_ok=True)
    if force:
        outdir.clear_run(out)
        existing = None
    (out / IMAGES).mkdir(exist_ok=True)
    shutil.copyfile(loaded.path, out / STORY_COPY)
    from harness.versions import library_versions

    manifest: dict[str, Any] = existing or {
        "kind": "harness.render",
        "harness_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "identity": identity,
        "story": {
            "file": STORY_COPY,
            "source": str(loaded.path),
            "team": story.team,
            "name": story.name,
            "title": story.title,
            "panel_count": story.panel_count,
        },
        "model": {"ref": str(model.ref), "sha256": model.sha256},
        "lora": lora,
        "sampling": story.sampling.model_dump(mode="json"),
        "placement": {"device": placement.device, "dtype": placement.dtype_name},
        "batch_size": batch_size,
        "libraries": library_versions(),
        "panels": [],
        "contact_sheet": None,
        "status": "rendering",
    }
    manifest["status"] = "rendering"
    outdir.write_manifest(out, manifest)

    from harness.models.loader import pipeline_for
    from harness.render.engine import PanelJob, render

    dev.make_deterministic(placement)
    pipe = pipeline_for(
        model.folder,
        model.sha256,
        placement,
        lora_path if lora else None,
        lora["sha256"] if lora else None,
        lora["scale"] if lora else 1.0,
        progress=progress,
    )
    t_load = time.perf_counter() - t0

    jobs = [
        PanelJob(i, story.panels[i - 1].prompt, story.negative_for(i - 1), story.panels[i - 1].seed)
        for i in chosen
    ]
    common = {
        "harness_version": __version__,
        "team": story.team,
        "name": story.name,
        **story.sampling.model_dump(mode="json"),
        "model": {"ref": str(model.ref), "sha256": model.sha256},
        "lora": lora,
        "device": placement.device,
        "dtype": placement.dtype_name,
        "batch_size": batch_size,
    }
    from harness.render.pngmeta import save_png

    by_index = {p["index"]: p for p in manifest["panels"]}

    def write_batch(done) -> None:
        for job, image in done:
            rel = panel_file(job.index)
            params = {
                **common,
                "panel": job.index,
                "prompt": job.prompt,
                "negative_prompt": job.negative_prompt,
                "seed": job.seed,
            }
            save_png(image, out / rel, params)
            by_index[job.index] = {
                "index": job.index,
                "file": rel,
                "sha256": sha256_file(out / rel),
                "seed": job.seed,
                "prompt": job.prompt,
                "negative_prompt": job.negative_prompt,
            }
        manifest["panels"] = [by_index[k] for k in sorted(by_index)]
        outdir.write_manifest(out, manifest)

    t1 = time.perf_counter()
    render(
        pipe,
        jobs,
        story.sampling,
        device=placement.device,
        batch_size=batch_size,
        progress=progress,
        on_batch=write_batch,
    )
    t_render = time.perf_counter() - t1

    from harness.render.contact import contact_sheet

    title = f"{story.title or story.name} · {story.team}/{story.name}"
    contact_sheet(
        [(p["index"], p["prompt"], out / p["file"]) for p in manifest["panels"]], title, out / CONTACT_SHEET
    )
    manifest["contact_sheet"] = CONTACT_SHEET
    complete = len(manifest["panels"]) == story.panel_count
    manifest["status"] = "complete" if complete else "partial"
    manifest["timings_s"] = {"load": round(t_load, 3), "render": round(t_render, 3)}
    outdir.write_manifest(out, manifest)
    return RenderResult(out, manifest, chosen)
