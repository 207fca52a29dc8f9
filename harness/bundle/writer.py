"""Write a submission bundle from a planned run folder: `submissions/<team>/<name>/`.

Owns: what goes into a bundle and under which name (images, contact sheet, the exact story
file, the run's manifest as run.json, prompts.json, scores.json when the run was scored, the
LoRA files, configuration.json, README.md and manifest.json). Every check comes first, in
`plan.plan_bundle` (the model id, the run's completeness, the LoRA's hash and content, the folder
the bundle goes to); the bundle is then assembled in a temporary sibling folder and moved into
place at the end. An existing folder there is replaced only when it is a bundle the harness
wrote (its manifest.json, nothing unlisted beside it) and either of the same story (same
story.yaml bytes, and every LoRA it holds kept) or `force` is given; a link, a file or someone's
folder is refused whatever `force` says (see `harness.ownership`). Must not render or score.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.bundle import manifest as mf
from harness.bundle.plan import BundlePlan, check_target, plan_bundle
from harness.config.naming import ModelId
from harness.errors import HarnessError
from harness.layout import (
    CARD,
    CONFIGURATION,
    CONTACT_SHEET,
    LORA_DIR,
    PROMPTS,
    RUN_JSON,
    RUN_MANIFEST,
    SCORES,
    STORY,
)
from harness.layout import IMAGES as IMAGES_DIR
from harness.ownership import swap_in
from harness.render.records import PanelRecord
from harness.safeio import write_atomic, write_json


@dataclass
class BundleResult:
    path: Path
    model_id: ModelId
    manifest: mf.BundleManifest

    @property
    def scored(self) -> bool:
        return self.manifest.scored


def _diffsynth_alpha(rank: Any, scale: float, training: dict[str, Any] | None) -> tuple[Any, str]:
    alpha = (training or {}).get("lora_alpha")
    if isinstance(alpha, (int, float)):
        return round(float(alpha) * scale, 6), f"training lora_alpha {alpha} x strength {scale}"
    if isinstance(rank, int):
        return round(rank * scale, 6), (
            f"lora_alpha was not recorded, so alpha = rank ({rank}) is assumed, as diffusers does; "
            f"times strength {scale}"
        )
    return "ALPHA", "lora_alpha and rank were not recorded: fill in the training alpha times the strength"


def write_bundle(
    run_dir: str | Path,
    *,
    out_root: str | Path = "submissions",
    namespace: str | None = None,
    loras: list[Path] | tuple[Path, ...] = (),
    training: dict[str, Any] | None = None,
    license: str = "apache-2.0",
    force: bool = False,
) -> BundleResult:
    """Bundle the complete run in `run_dir` into `<out_root>/<team>/<name>/`: `plan_bundle`
    (every check, nothing written), then `write_plan`."""
    return write_plan(
        plan_bundle(
            run_dir,
            out_root=out_root,
            namespace=namespace,
            loras=loras,
            training=training,
            license=license,
            force=force,
        )
    )


def write_plan(plan: BundlePlan) -> BundleResult:
    """Write a planned bundle: assembled in a temporary sibling folder, checked again and moved
    into place at the end (see the module docstring)."""
    from harness.bundle.card import render_card, score_rows
    from harness.versions import library_versions

    run_dir, run, story, mid, target = plan.run_dir, plan.run, plan.story, plan.model_id, plan.target
    lora_files, facts, scores = plan.lora_files, plan.lora_facts, plan.scores
    training_settings, license, force = plan.training, plan.license, plan.force
    story_sha, lora_shas = plan.story_sha256, plan.lora_sha256
    scores_path = run_dir / SCORES
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{story.name}.", dir=target.parent))
    except OSError as e:
        raise HarnessError(f"{target}: cannot be created ({e.strerror}); nothing written") from None
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        (tmp / IMAGES_DIR).mkdir()
        panels = []
        for p in run.panels:
            shutil.copyfile(run_dir / p.file, tmp / IMAGES_DIR / Path(p.file).name)
            panels.append(_prompt_row(p))
        if (run_dir / CONTACT_SHEET).is_file():
            shutil.copyfile(run_dir / CONTACT_SHEET, tmp / CONTACT_SHEET)
        shutil.copyfile(run_dir / STORY, tmp / STORY)
        shutil.copyfile(run_dir / RUN_MANIFEST, tmp / RUN_JSON)
        _write_json(tmp / PROMPTS, panels)
        if scores is not None:
            shutil.copyfile(scores_path, tmp / SCORES)
        lora_paths = []
        if lora_files:
            (tmp / LORA_DIR).mkdir()
        for p in lora_files:
            shutil.copyfile(p, tmp / LORA_DIR / p.name)
            lora_paths.append(f"{LORA_DIR}/{p.name}")
        _write_json(
            tmp / CONFIGURATION,
            {
                "framework": "Pytorch",
                "task": "text-to-image-synthesis",
                "model": {"type": "kolors-lora", "base_model": "Kwai-Kolors/Kolors"},
                "lora": lora_paths,
                "lora_scale": story.lora.scale if story.lora else None,
            },
        )

        files_so_far = [mf.entry_for(tmp, rel) for rel in mf.walk(tmp)[0]]
        by_path = {e.path: e for e in files_so_far}
        lora_rows = [
            {
                "path": rel,
                "sha256": by_path[rel].sha256,
                **{k: facts[Path(rel).name].get(k) for k in ("format", "rank", "tensors")},
            }
            for rel in lora_paths
        ]
        scale = story.lora.scale if story.lora else 1.0
        diffusers_lora = next(
            (
                r["path"]
                for r in lora_rows
                if r["format"] == "diffusers" and r["path"].endswith(".safetensors")
            ),
            None,
        )
        ds = next((r for r in lora_rows if r["format"] == "diffsynth"), None)
        alpha, why = _diffsynth_alpha(ds["rank"] if ds else None, scale, training_settings)
        trigger = (training_settings or {}).get("trigger_words") or (training_settings or {}).get("trigger")
        card = render_card(
            {
                "license": license,
                "tags": ["Kolors", "LoRA", "可图Kolors训练", "text-to-image", story.team],
                "title": story.title or str(mid),
                "story_title": story.title,
                "model_id": str(mid),
                "team": story.team,
                "name": story.name,
                "harness_version": library_versions()["harness"],
                "panels": panels,
                "negative_prompt": story.negative_prompt,
                "trigger_words": [trigger] if isinstance(trigger, str) else list(trigger or []),
                "contact_sheet": CONTACT_SHEET,
                "sampling": story.sampling.model_dump(mode="json"),
                "base_model": story.base_model,
                "loras": lora_rows,
                "lora_scale": scale,
                "training": training_settings,
                "scores": score_rows(scores),
                "diffusers_lora": diffusers_lora,
                "diffsynth_lora": ds["path"] if ds else None,
                "diffsynth_rank": ds["rank"] if ds else None,
                "diffsynth_alpha": alpha,
                "diffsynth_alpha_why": why,
                "files": files_so_far,
            }
        )
        write_atomic(tmp / CARD, card)

        versions = library_versions()
        for name in ("modelscope", "jinja2"):
            from importlib import metadata

            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = "not installed"
        manifest = mf.build(
            tmp,
            {
                "kind": "harness.bundle",
                "format": mf.FORMAT,
                "model_id": str(mid),
                "team": story.team,
                "name": story.name,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "scored": scores is not None,
                "lora": lora_paths,
                "versions": versions,
            },
        )
        mf.write(tmp, manifest)
        # Again, just before the swap: the folder may have changed while the bundle was assembled.
        replace = check_target(target, story_sha, lora_shas, force=force) or target.is_dir()
        swap_in(tmp, target, replace=replace, label=str(target))
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HarnessError(f"{target}: could not be written ({e.strerror}); nothing changed") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BundleResult(target, mid, manifest)


def _prompt_row(p: PanelRecord) -> dict[str, Any]:
    """A panel's row of prompts.json: its bundle path, seed and prompts."""
    return {
        "index": p.index,
        "file": f"{IMAGES_DIR}/{Path(p.file).name}",
        "seed": p.seed,
        "prompt": p.prompt,
        "negative_prompt": p.negative_prompt,
    }


def _write_json(path: Path, data: Any) -> None:
    write_json(path, data)
