"""`harness run`: the whole story in one call: train (if declared) -> render -> score -> bundle.

Owns the order of the stages and what passes between them; each stage is its own package
(train, render, score, bundle) and never calls back into this one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.layout import LORA_DIR, TRAINING_JSON

if TYPE_CHECKING:
    from harness.bundle.writer import BundleResult
    from harness.config.scoring import ScoringConfig
    from harness.render.run import RenderResult
    from harness.score.api import ScoreRun

# Where a run keeps the LoRA it trained, in every format (read by bundle), and the training record.
RUN_LORA_DIR, RUN_TRAINING = LORA_DIR, TRAINING_JSON


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
    """Copy the trained LoRA (all its formats) and its training manifest into the run folder.

    Written with `harness.safeio` (a link planted in the run folder is replaced, not followed).
    """
    from harness.safeio import read_json, write_atomic

    train_dir = lora_file.parent
    dest = run_dir / RUN_LORA_DIR
    if not dest.is_dir() or dest.is_symlink():
        dest.mkdir()
    for f in sorted(train_dir.glob("*.safetensors")):
        write_atomic(dest / f.name, f.read_bytes())
    manifest = train_dir / RUN_TRAINING
    if manifest.is_file():
        data = read_json(manifest)
        write_atomic(run_dir / RUN_TRAINING, manifest.read_bytes())
        return data if isinstance(data, dict) else None
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
    """Validate, train when `lora.train` is declared, render, score and bundle one story.

    Every input is checked before anything is written: the story (team and name under the
    bundle's naming rule), the bundle's namespace, the output folder, the scorers and scoring
    models by name, (in `plan_render`) the model and the LoRA's content, and whether the bundle
    folder may be replaced. The run folder is locked from the render to the bundle.
    """
    from harness.config.story import load_story
    from harness.render import outdir
    from harness.render.run import plan_render, story_sha256

    loaded = load_story(story_path)
    story = loaded.story
    out = Path(out)
    if bundle:
        from harness.bundle.plan import NAMESPACE_ENV
        from harness.config.naming import model_id

        model_id(namespace or os.environ.get(NAMESPACE_ENV) or story.team, story.team, story.name)
    outdir.check_out_dir(out, {"story_sha256": story_sha256(loaded)}, force=force)
    config = None
    if score:  # an unknown scorer or scoring model is refused now, not after the render
        from harness.config.scoring import scoring_for
        from harness.models.scoring_registry import lookup
        from harness.score.registry import models_used

        config = scoring_for(story.base_model, scoring)
        for kind, name in models_used(config):
            lookup(name, kind)
    lora_file = None
    if loaded.lora_train_config is not None:
        from harness.train.api import ensure_trained

        lora_file = ensure_trained(
            loaded.lora_train_config, device=device, progress=progress, inside=loaded.folder
        )

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
    if bundle:  # a bundle the run may not replace is refused now, not after the render
        from harness.bundle.plan import check_target
        from harness.hashing import sha256_bytes, sha256_file

        shas = {plan.lora.sha256} if plan.lora else set()
        if lora_file is not None:  # every format the training wrote is bundled
            shas |= {sha256_file(f) for f in lora_file.parent.glob("*.safetensors")}
        source = loaded.source if loaded.source is not None else loaded.path.read_bytes()
        check_target(Path(submissions) / story.team / story.name, sha256_bytes(source), shas, force=force)
    with outdir.locked(plan.out):
        return _run_locked(plan, loaded, lora_file, config, bundle, submissions, namespace)


def _run_locked(plan, loaded, lora_file, config, bundle, submissions, namespace) -> RunOutcome:
    from harness.render.run import execute_render

    out = plan.out
    training = None
    result = execute_render(plan)
    outcome = RunOutcome(render=result, lora=lora_file or loaded.lora_path)
    if lora_file is not None:
        training = _keep_training_outputs(lora_file, out)

    if config is not None:
        from harness.score.api import score_run
        from harness.score.report import write_scores

        outcome.score = score_run(out, story=loaded, config=config, lora=lora_file)
        write_scores(outcome.score)

    if not bundle:
        outcome.bundle_skipped = "--no-bundle"
    elif result.manifest.status != "complete":
        outcome.bundle_skipped = "only some panels were rendered"
    else:
        from harness.bundle.writer import write_bundle

        outcome.bundle = write_bundle(
            out, out_root=submissions, namespace=namespace, training=training, force=plan.force
        )
    return outcome
