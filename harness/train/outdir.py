"""The training run folder: what it holds, and the rule that a finished run is never overwritten.

Owns: the training key (hash of config + data + base model), training.json (the manifest, whose
status is 'training' until every output exists), and the decision reuse / resume / refuse.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from harness.config.training import TrainingConfig
from harness.errors import HarnessError
from harness.hashing import sha256_bytes

MANIFEST = "training.json"
TRAIN_VERSION = 1
# Fields that change what is watched or kept, not the weights: not part of the key.
_NOT_IN_KEY = {"data", "validation", "checkpoint_every", "keep_checkpoints"}


def training_key(cfg: TrainingConfig, data_sha256: str, model_sha256: str) -> str:
    """Same key <=> same LoRA: every weight-shaping field, the data content and the base model."""
    body = {
        "version": TRAIN_VERSION,
        "config": cfg.model_dump(mode="json", exclude=_NOT_IN_KEY),
        "data": data_sha256,
        "model": model_sha256,
    }
    return sha256_bytes(json.dumps(body, sort_keys=True, ensure_ascii=False).encode())


def read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, out / MANIFEST)


def decide(out: Path, key: str, *, resume: bool, force: bool) -> str:
    """'fresh', 'reuse' (finished, same key) or 'resume'; refuses everything else with one line."""
    if not out.exists():
        return "fresh"
    if not out.is_dir():
        raise HarnessError(f"--out {out}: exists and is not a folder")
    manifest = read_manifest(out)
    if manifest is None:
        if any(out.iterdir()):
            if force:
                return "fresh"
            raise HarnessError(f"--out {out}: not empty and not a training folder; choose another --out")
        return "fresh"
    if manifest.get("kind") != "harness.train":
        raise HarnessError(f"--out {out}: holds a {manifest.get('kind')!r} folder, not a training")
    same = manifest.get("key") == key
    if manifest.get("status") == "complete":
        if same and not force:
            return "reuse"
        if force:
            return "fresh"
        raise HarnessError(
            f"--out {out}: holds a finished training of a different config or data; "
            "choose another --out or pass --force to replace it"
        )
    if force:
        return "fresh"
    if not same:
        raise HarnessError(
            f"--out {out}: holds an unfinished training of a different config or data; "
            "choose another --out or pass --force to start over"
        )
    if not resume:
        raise HarnessError(
            f"--out {out}: holds an unfinished training of this config; pass --resume to continue "
            "or --force to start over"
        )
    return "resume"


def clear(out: Path) -> None:
    """Empty a run folder (only called with --force, or for a fresh start)."""
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
