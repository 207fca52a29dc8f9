"""Score a rendered run (or any folder of images): the one orchestration function for scoring.

Flow: load and check the images -> find prompts (story, else embedded parameters) -> optionally
re-render (reproducibility; Kolors then parked off the GPU) -> load each scorer's models once ->
score all panels in batches -> compare the re-renders -> a typed `ScoreRun`. Writing scores.json
and printing are `report.py`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    from harness.config.story import LoadedStory, Story
    from harness.config.yamlio import parse_model, read_yaml
    from harness.render.outdir import STORY_COPY

    if isinstance(story, LoadedStory):
        return story.story, story.path
    path = Path(story) if story is not None else folder / STORY_COPY
    if story is None and not path.is_file():
        return None, None
    # Validated, but without the LoRA-file and token checks: scoring needs only prompts.
    return parse_model(read_yaml(path), Story), path


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
    lora: Path | None = None,
) -> ScoreRun:
    """Score the images in `folder` (a run folder or a plain folder of images).

    Raises HarnessError when nothing is usable (no folder, no image). Every other problem is
    recorded in the result: skipped files, too few panels, missing parameters, a refused
    reproducibility check.
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
    rerendered = None
    if config.reproduce:
        if any(p.params is not None for p in run.panels):
            from harness.models.loader import park_pipeline
            from harness.score.reproduce import rerender

            try:
                rerendered = rerender(
                    run.panels,
                    run_dir=folder if images.folder != folder else None,
                    story_path=story_path if story is not None else None,
                    lora=lora,
                )
            except HarnessError as e:
                run.repro_error = str(e)
            finally:
                park_pipeline()  # kept in host memory: the next story on this base reuses it
        else:
            run.notes.append("no panel has embedded parameters: no reproducibility check possible")

    scorers = [registry.get(name)(config, models) for name in config.scorers]
    for scorer in scorers:
        scorer.load()
    ctx = ScoreContext(run.panels, run.prompts, config, models, required)
    for scorer in scorers:
        run.metrics[scorer.name] = scorer.score(ctx)

    if rerendered is not None:
        from harness.score.reproduce import judge_rerenders, reproduce_model

        run.reproducibility = judge_rerenders(
            run.panels,
            rerendered,
            config.tolerances,
            clip_model=models.get(*reproduce_model(config)),
            batch_size=config.batch_size,
        )
    return run


def summary(run: ScoreRun) -> dict[str, Any]:
    """The story-level numbers, flat, for tables and leaderboards."""
    out: dict[str, Any] = {
        "panels": len(run.panels),
        "required_panels": run.required_panels,
        "valid": run.valid,
    }
    for metric in run.metrics.values():
        out.update(
            {k: v for k, v in metric.summary.items() if k not in ("panels", "required_panels", "valid")}
        )
    if run.reproducibility is not None:
        out["reproducibility"] = run.reproducibility.verdict
    elif run.repro_error is not None:
        out["reproducibility"] = "refused"
    return out
