"""The one seam between verifying a bundle and the scoring package: re-render and re-score.

Owns: `Rerun` (what the re-render and re-score found) and `rerun_checks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.layout import STORY
from harness.score.reproduce import allowed_base

if TYPE_CHECKING:
    from harness.config.scoring import ScoringConfig

from harness.bundle.verdict import SKIPPED


@dataclass
class Rerun:
    gate: str  # pass / fail / skipped
    reproducibility: str  # exact / reproducible / not reproducible / unchecked / refused / skipped
    problems: list[str]
    summary: dict[str, Any] | None = None  # on `scored_pixels`
    models: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # metric -> weights used
    scored_pixels: str | None = None  # re-rendered / submitted / mixed
    submitted_summary: dict[str, Any] | None = None  # the team's files, when they differ


def rerun_checks(bundle: Path, loras: Path | list[Path] | None, config: "ScoringConfig | None") -> Rerun:
    """THE seam to the scoring package: re-render for reproducibility and re-score the gate.

    Calls `harness.score.api.score_run` on the bundle as an untrusted folder: its images/ and
    story.yaml, and only `loras` (the bundle's own intact LoRA files) as LoRA candidates. The
    gate and every score rest on the judges' re-rendered pixels whenever the re-render ran
    (`scored_pixels`); the team's files are scored too when they differ, for the claims check.
    """
    from harness.config.scoring import scoring_for
    from harness.config.story import load_story
    from harness.score.api import score_run, summary

    # Schema only: the story's own lora.path is never followed (its LoRA is in lora/).
    story = load_story(bundle / STORY, check_files=False, check_tokens=False, follow_links=False)
    base_model = story.story.base_model
    if not allowed_base(base_model):  # _story_checks refused it already; never reached
        raise HarnessError(f"{STORY}: base_model {base_model!r} is not allowed")
    given = [] if loras is None else [loras] if isinstance(loras, Path) else list(loras)
    config = scoring_for(base_model, config)
    run = score_run(bundle, bundle / STORY, config, lora=given, untrusted=True)
    problems: list[str] = []
    aesthetic = run.metrics.get("aesthetic")
    gate = SKIPPED if aesthetic is None else ("pass" if run.valid else "fail")
    if aesthetic is not None and not run.valid:
        problems += [f"gate: {r}" for r in aesthetic.notes] or ["gate: the aesthetic gate failed"]
    if run.repro_error is not None:
        repro = "refused"
        problems.append(f"reproducibility: {run.repro_error}")
    elif run.reproducibility is not None:
        repro = run.reproducibility.verdict
        if run.reproducibility.failed:
            bad = [p for p in run.reproducibility.panels if p.verdict == "not reproducible"]
            problems += [f"reproducibility: {p.file}: {p.reason}" for p in bad[:8]]
    else:
        repro = SKIPPED
    if config.reproduce and run.repro_error is None and run.scored_pixels != "re-rendered":
        problems.append(
            f"scoring: only {sum(k == 're-rendered' for k in run.pixels)} of {len(run.panels)} panels "
            "were re-rendered; the judges score their own pixels only"
        )
    return Rerun(
        gate,
        repro,
        problems,
        summary(run),
        {n: m.models for n, m in run.metrics.items()},
        run.scored_pixels,
        summary(run, run.submitted_metrics) if run.submitted_metrics is not None else None,
    )
