"""Every file and folder name of a run folder and of a bundle: the one place they are defined.

Owns: the names only (no I/O, no imports), so any layer can use them. A run folder is what
`harness render` / `harness run` write (`runs/<team>-<name>/`); a bundle is what `harness bundle`
writes from a finished run (`submissions/<team>/<name>/`) and what the judges verify.
"""

from __future__ import annotations

# --- a run folder ------------------------------------------------------------------------------
RUN_MANIFEST = "manifest.json"  # the run record (harness.render.records.RunManifest)
IMAGES = "images"  # the panels, images/01.png ...
CONTACT_SHEET = "contact_sheet.png"
STORY_COPY = "story.yaml"  # the exact bytes of the story that was rendered
LORA_DIR = "lora"  # the LoRA formats `harness run` trains into the run folder
TRAINING_JSON = "training.json"  # the training record, when `harness run` trained the LoRA
SCORES = "scores.json"  # written by `harness score` / `harness run`
# Everything a run folder gets from the harness, cleared together by --force.
RUN_OWNED = (RUN_MANIFEST, IMAGES, CONTACT_SHEET, STORY_COPY, LORA_DIR, TRAINING_JSON, SCORES)


def panel_file(index: int) -> str:
    """The relative path of panel `index` (1-based) in a run folder or a bundle: images/01.png."""
    return f"{IMAGES}/{index:02d}.png"


# --- a bundle ----------------------------------------------------------------------------------
BUNDLE_MANIFEST = "manifest.json"  # every file's path, size and sha256 (harness.bundle.manifest)
VERDICT = "verdict.json"  # written by `harness verify`; never part of a bundle's content
RUN_JSON = "run.json"  # the run folder's manifest.json, copied
PROMPTS = "prompts.json"
STORY = STORY_COPY
CARD = "README.md"
CONFIGURATION = "configuration.json"
# IMAGES, CONTACT_SHEET, LORA_DIR and SCORES keep their run-folder names in a bundle.

# The kinds of file a bundle may hold, by extension (harness.bundle.manifest caps each kind).
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp")
LORA_EXT = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
TEXT_EXT = (".json", ".yaml", ".yml", ".md", ".txt")
