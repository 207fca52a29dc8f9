"""Score a rendered run (or any folder of images): the one orchestration function for scoring.

Flow: load and check the images -> find prompts (story, else embedded parameters) -> optionally
re-render (reproducibility; Kolors then parked off the GPU) -> load each scorer's models once ->
score all panels in batches -> compare the re-renders -> a typed `ScoreRun`. Writing scores.json
and printing are `report.py`'s job.

Which pixels are scored: when a panel was re-rendered here, every score and the aesthetic gate
rest on the re-render, not on the file. The file is only evidence to compare the re-render
with, so a submitted edit that stays within the reproducibility tolerance (say, one steered by
the aesthetic predictor's gradient) changes no score. Panels that could not be re-rendered are
scored on their file's pixels, and the run says which (`ScoreRun.pixels`, `scored_pixels`).
When some re-render differs from its file, the files are scored as well (`submitted_metrics`):
the judges hold a team's own scores.json against those, and show both.

A bundle folder (its manifest says kind `harness.bundle`) is untrusted: the re-render looks for
its LoRA only among the bundle's own lora/ files (or `lora`), never where its story or images
point (see `harness.score.reproduce`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config.scoring import ScoringConfig
from harness.errors import HarnessError
from harness.score.images import Panel, Skipped, load_images
from harness.score.registry import MetricResult

if TYPE_CHECKING:
    from harness.config.story import LoadedStory, Story
    from harness.score.reproduce import ReproResult

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2
# Which pixels a panel's scores rest on.
RERENDERED, SUBMITTED, MIXED = "re-rendered", "submitted", "mixed"


@dataclass
class ScoreRun:
    """Everything one scoring run found; `exit_code` is what the CLI returns."""

    folder: Path
    image_folder: Path
    config: ScoringConfig
    panels: list[Panel]
    skipped: list[Skipped]
    prompts: list[str | None]
    required_panels: int
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    reproducibility: "ReproResult | None" = None
    repro_error: str | None = None  # the check was refused (model or LoRA not the recorded one)
    notes: list[str] = field(default_factory=list)
    pixels: list[str] = field(default_factory=list)  # per panel: RERENDERED or SUBMITTED
    # The same scorers on the files' own pixels, only when some re-render differs from its file.
    submitted_metrics: dict[str, MetricResult] | None = None

    @property
    def scored_pixels(self) -> str:
        """RERENDERED when every score rests on re-rendered pixels, SUBMITTED when none, else MIXED."""
        kinds = set(self.pixels) or {SUBMITTED}
        return kinds.pop() if len(kinds) == 1 else MIXED

    @property
    def valid(self) -> bool:
        """The competition gate: enough panels, and (when scored) the aesthetic mean reached."""
        aesthetic = self.metrics.get("aesthetic")
        if aesthetic is not None:
            return bool(aesthetic.passed)
        return len(self.panels) >= self.required_panels

    @property
    def exit_code(self) -> int:
        if self.repro_error is not None:
            return EXIT_UNUSABLE
        if not self.valid or (self.reproducibility is not None and self.reproducibility.failed):
            return EXIT_FAILED
        return EXIT_OK


def _story_of(story: "Path | LoadedStory | None", folder: Path) -> tuple["Story | None", Path | None]:
    """The story to take prompts and the panel count from: --story, else the run's copy."""
    from harness.config.story import LoadedStory, load_story
    from harness.layout import STORY_COPY

    if isinstance(story, LoadedStory):
        return story.story, story.path
    path = Path(story) if story is not None else folder / STORY_COPY
    if story is None and not path.is_file():
        return None, None
    # Validated, but without the file and token checks: scoring needs only prompts.
    return load_story(path, check_files=False, check_tokens=False, follow_links=False).story, path


def _prompts(panels: list[Panel], story: "Story | None") -> list[str | None]:
    out: list[str | None] = []
    for p in panels:
        number = (p.params or {}).get("panel")
        number = number if isinstance(number, int) else p.index
        if story is not None:
            out.append(story.panels[number - 1].prompt if 1 <= number <= len(story.panels) else None)
        else:
            prompt = (p.params or {}).get("prompt")
            out.append(prompt if isinstance(prompt, str) and prompt else None)
    return out


def score_run(
    folder: str | Path,
    story: "Path | LoadedStory | None" = None,
    config: ScoringConfig | None = None,
    *,
    lora: Path | list[Path] | None = None,
    untrusted: bool | None = None,
) -> ScoreRun:
    """Score the images in `folder` (a run folder, a bundle or a plain folder of images).

    Raises HarnessError when nothing is usable (no folder, no image). Every other problem is
    recorded in the result: skipped files, too few panels, missing parameters, a refused
    reproducibility check. `lora`: LoRA file(s) to re-render with. `untrusted`: the folder was
    made by someone else (see the module docstring); None: True for a bundle folder.
    """
    from harness.score import registry
    from harness.score.models import shared_cache
    from harness.score.registry import ScoreContext

    config = config or ScoringConfig()
    folder = Path(folder)
    images = load_images(folder, max_pixels=config.max_pixels)
    if not images.panels:
        listed = "; ".join(f"{s.path.name}: {s.reason}" for s in images.skipped[:5])
        raise HarnessError(f"{images.folder}: no usable images" + (f" ({listed})" if listed else ""))
    parsed_story, story_path = _story_of(story, folder)
    required = max(config.min_panels, parsed_story.panel_count) if parsed_story else config.min_panels
    run = ScoreRun(
        folder=folder,
        image_folder=images.folder,
        config=config,
        panels=images.panels,
        skipped=images.skipped,
        prompts=_prompts(images.panels, parsed_story),
        required_panels=required,
    )
    if len(run.panels) < required:
        run.notes.append(f"only {len(run.panels)} usable panels, {required} required: invalid")

    # Re-render first: Kolors (kept from the render when `harness run` rendered in this process)
    # leaves the GPU before the scoring models arrive, so the two are never resident together.
    models = shared_cache(config.device, config.pins)
    models.park()  # still on the GPU from a previous story of this process
    if untrusted is None:
        untrusted = is_bundle(folder)
    if untrusted and lora is None:
        from harness.layout import LORA_DIR
        from harness.score.reproduce import folder_loras

        lora = folder_loras(folder / LORA_DIR)
    rerendered = None
    if config.reproduce:
        if any(p.params is not None for p in run.panels):
            from harness.render.pipelines import park_pipeline
            from harness.score.reproduce import rerender

            try:
                rerendered = rerender(
                    run.panels,
                    run_dir=folder if images.folder != folder else None,
                    story_path=story_path if story is not None else None,
                    lora=lora,
                    untrusted=untrusted,
                )
            except HarnessError as e:
                run.repro_error = str(e)
            finally:
                park_pipeline()  # kept in host memory: the next story on this base reuses it
        else:
            run.notes.append("no panel has embedded parameters: no reproducibility check possible")

    scored, run.pixels = _scored_panels(run.panels, rerendered)
    scorers = [registry.get(name)(config, models) for name in config.scorers]
    for scorer in scorers:
        scorer.load()
    ctx = ScoreContext(scored, run.prompts, config, models, required)
    for scorer in scorers:
        run.metrics[scorer.name] = scorer.score(ctx)
    if scorers and any(_differs(a, b) for a, b in zip(run.panels, scored, strict=True)):
        ctx = ScoreContext(run.panels, run.prompts, config, models, required)
        run.submitted_metrics = {scorer.name: scorer.score(ctx) for scorer in scorers}

    if rerendered is not None:
        from harness.config.scoring import reproduce_model
        from harness.score.reproduce import judge_rerenders

        run.reproducibility = judge_rerenders(
            run.panels,
            rerendered,
            config.tolerances,
            clip_model=models.get(*reproduce_model(config)),
            batch_size=config.batch_size,
        )
    return run


def is_bundle(folder: Path) -> bool:
    """True when `folder` holds a bundle manifest (read with safeio's caps; a link is not one)."""
    from harness.safeio import read_json

    try:
        data = read_json(Path(folder) / "manifest.json", max_bytes=1 << 20, max_depth=8)
    except HarnessError:
        return False
    return isinstance(data, dict) and data.get("kind") == "harness.bundle"


def _scored_panels(panels: list[Panel], rerendered) -> tuple[list[Panel], list[str]]:
    """(the panels as scored, RERENDERED/SUBMITTED per panel): a re-render replaces its file."""
    if rerendered is None:
        return panels, [SUBMITTED] * len(panels)
    out, kinds = [], []
    for p in panels:
        again = rerendered.images.get(p.index)
        if again is None:
            out.append(p)
            kinds.append(SUBMITTED)
        else:
            out.append(replace(p, image=again.convert("RGB")))
            kinds.append(RERENDERED)
    return out, kinds


def _differs(a: Panel, b: Panel) -> bool:
    if a.image is b.image:
        return False
    import numpy as np

    return a.image.size != b.image.size or not np.array_equal(np.asarray(a.image), np.asarray(b.image))


def summary(run: ScoreRun, metrics: dict[str, MetricResult] | None = None) -> dict[str, Any]:
    """The story-level numbers, flat, for tables and leaderboards. `metrics`: other metrics of
    the same run (`submitted_metrics`) in the same layout; default the scored ones."""
    own = metrics is None
    metrics = run.metrics if metrics is None else metrics
    aesthetic = metrics.get("aesthetic")
    out: dict[str, Any] = {
        "panels": len(run.panels),
        "required_panels": run.required_panels,
        "valid": bool(aesthetic.passed) if aesthetic is not None else run.valid,
        "scored_pixels": run.scored_pixels if own else SUBMITTED,
    }
    for metric in metrics.values():
        out.update(
            {k: v for k, v in metric.summary.items() if k not in ("panels", "required_panels", "valid")}
        )
    if run.reproducibility is not None:
        out["reproducibility"] = run.reproducibility.verdict
    elif run.repro_error is not None:
        out["reproducibility"] = "refused"
    return out
