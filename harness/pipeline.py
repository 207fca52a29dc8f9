"""`harness run`: the whole story in one call: train (if declared) -> render -> score -> bundle.

Owns the order of the stages and what passes between them; each stage is its own package
(train, render, score, bundle) and never calls back into this one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.bundle.writer import BundleResult
    from harness.config.scoring import ScoringConfig
    from harness.render.run import RenderResult
    from harness.score.api import ScoreRun

RUN_LORA_DIR = "lora"  # where a run keeps the LoRA it trained, in every format (read by bundle)
RUN_TRAINING = "training.json"


@dataclass
class RunOutcome:
    render: "RenderResult"
    lora: Path | None = None
    score: "ScoreRun | None" = None
    bundle: "BundleResult | None" = None
    bundle_skipped: str | None = None  # why no bundle was written

    @property
    def exit_code(self) -> int:
        """0 all good; 1 when the aesthetic gate or the reproducibility check failed."""
        return self.score.exit_code if self.score is not None else 0


def _keep_training_outputs(lora_file: Path, run_dir: Path) -> dict[str, Any] | None:
    """Copy the trained LoRA (all its formats) and its training manifest into the run folder."""
    import json

    train_dir = lora_file.parent
    dest = run_dir / RUN_LORA_DIR
    dest.mkdir(exist_ok=True)
    for f in sorted(train_dir.glob("*.safetensors")):
        shutil.copyfile(f, dest / f.name)
    manifest = train_dir / RUN_TRAINING
    if manifest.is_file():
        shutil.copyfile(manifest, run_dir / RUN_TRAINING)
        return json.loads(manifest.read_text(encoding="utf-8"))
    return None


def run_story(
    story_path: Path,
    out: Path,
    *,
    panels: str | None = None,
    batch_size: int = 1,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    scoring: "ScoringConfig | None" = None,
    score: bool = True,
    bundle: bool = True,
    submissions: Path = Path("submissions"),
    namespace: str | None = None,
) -> RunOutcome:
    """Validate, train when `lora.train` is declared, render, score and bundle one story."""
    from harness.config.story import load_story
    from harness.render.run import render_story

    loaded = load_story(story_path)
    lora_file = None
    training = None
    if loaded.lora_train_config is not None:
        from harness.train.api import ensure_trained

        lora_file = ensure_trained(loaded.lora_train_config, device=device, progress=progress)

    result = render_story(
        loaded,
        out,
        panels=panels,
        batch_size=batch_size,
        device=device,
        force=force,
        progress=progress,
        lora_file=lora_file,
    )
    outcome = RunOutcome(render=result, lora=lora_file or loaded.lora_path)
    if lora_file is not None:
        training = _keep_training_outputs(lora_file, out)

    if score:
        from harness.config.scoring import scoring_for
        from harness.score.api import score_run
        from harness.score.report import write_scores

        config = scoring_for(loaded.story.base_model, scoring)
        outcome.score = score_run(out, story=loaded, config=config, lora=lora_file)
        write_scores(outcome.score)

    if not bundle:
        outcome.bundle_skipped = "--no-bundle"
    elif result.manifest["status"] != "complete":
        outcome.bundle_skipped = "only some panels were rendered"
    else:
        from harness.bundle.writer import write_bundle

        outcome.bundle = write_bundle(
            out, out_root=submissions, namespace=namespace, training=training, force=force
        )
    return outcome
