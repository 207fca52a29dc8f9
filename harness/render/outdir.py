"""Output folders: refuse to mix runs, and write the manifest atomically.

A run folder holds `manifest.json`, whose `identity` names everything that decides the pixels
(story content, model and LoRA hashes, device, dtype, batch size). Rendering into a folder is
allowed when it is empty, absent, or holds the same identity (re-rendering or finishing panels);
a different run is never silently overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

MANIFEST = "manifest.json"
IMAGES = "images"
CONTACT_SHEET = "contact_sheet.png"
STORY_COPY = "story.yaml"
# Everything a run folder gets from the harness: render outputs, plus what `harness run` adds
# (the trained LoRA formats, the training manifest and the scores), cleared together by --force.
OWNED = (MANIFEST, IMAGES, CONTACT_SHEET, STORY_COPY, "lora", "training.json", "scores.json")


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The run manifest in `out`, None if there is none; HarnessError if it is unreadable."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HarnessError(f"{path}: unreadable manifest ({e}); use another --out or --force") from None
    if not isinstance(data, dict) or not isinstance(data.get("identity"), dict):
        raise HarnessError(f"{path}: not a harness run manifest; use another --out or --force")
    return data


def check_out_dir(out: Path, identity: dict[str, Any], *, force: bool) -> dict[str, Any] | None:
    """Check that `out` may receive this run; returns the existing manifest of the same run.

    Only the keys present in `identity` are compared, so a cheap early check (story only) can
    run before the model is downloaded, and the full check after. Nothing is written here.
    """
    if out.exists() and not out.is_dir():
        raise HarnessError(f"{out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return None
    if force:
        return None
    manifest = read_manifest(out)
    if manifest is None:
        raise HarnessError(
            f"{out}: folder is not empty and holds no harness run; use another --out or --force"
        )
    theirs = manifest["identity"]
    changed = [k for k, v in identity.items() if theirs.get(k) != v]
    if changed:
        raise HarnessError(
            f"{out}: holds a different run ({', '.join(changed)} differ); "
            "use another --out, or --force to replace it"
        )
    return manifest


def clear_run(out: Path) -> None:
    """Remove the files a previous run wrote (for --force); leaves anything else alone."""
    for name in OWNED:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    path = out / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
