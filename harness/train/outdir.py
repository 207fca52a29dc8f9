"""The training run folder: what it holds, and the rule that a finished run is never overwritten.

Owns: the training key (hash of config + data + base model), training.json (the manifest, whose
status is 'training' until every output exists, and the marker `harness.ownership` reads), and
the decision reuse / resume / refuse. A folder the harness did not make for a training run (a
link, a file, someone's folder, a training folder with a stray file in it) is refused with one
line, `--force` or not: `--force` only replaces a training run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.config.training import TrainingConfig
from harness.errors import HarnessError
from harness.hashing import sha256_bytes
from harness.layout import TRAINING_JSON
from harness.ownership import Purpose, inspect
from harness.safeio import read_json, write_json

MANIFEST = TRAINING_JSON
TRAIN_VERSION = 1
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
# Fields that change what is watched or kept, not the weights: not part of the key.
_NOT_IN_KEY = {"data", "validation", "checkpoint_every", "keep_checkpoints"}
# Everything `harness train` writes at the top of a run folder (export, plots, validation, loop).
OWNED = {
    MANIFEST,
    "config.yaml",
    "pytorch_lora_weights.safetensors",
    "lora_kohya.safetensors",
    "lora_diffsynth.safetensors",
    "loss.csv",
    "loss.png",
    "validation",
    "checkpoints",
}


def _stray(folder: Path, marker: dict) -> str | None:
    # Temporary files of an interrupted write (`.name.<random>.tmp`) are the harness's too.
    for name in sorted(p.name for p in folder.iterdir()):
        if name not in OWNED and not (name.startswith(".") and name.endswith(".tmp")):
            return name
    return None


TRAINING = Purpose("a training run", MANIFEST, "harness.train", MAX_MANIFEST_BYTES, _stray)


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
        data = read_json(out / MANIFEST, max_bytes=MAX_MANIFEST_BYTES)
    except HarnessError:
        return None
    return data if isinstance(data, dict) else None


def write_manifest(out: Path, manifest: dict) -> None:
    write_json(out / MANIFEST, manifest)


def check_out(out: Path, label: str | None = None) -> None:
    """Refuse (one line) a run folder the harness may not write: see the module docstring."""
    inspect(out, TRAINING, label=label or f"--out {out}")


def decide(out: Path, key: str, *, resume: bool, force: bool, label: str | None = None) -> str:
    """'fresh', 'reuse' (finished, same key) or 'resume'; refuses everything else with one line.

    `label` names the folder in messages (default `--out <out>`)."""
    label = label or f"--out {out}"
    owned = inspect(out, TRAINING, label=label)
    if owned.state != "ours":
        return "fresh"
    manifest = owned.marker or {}
    same = manifest.get("key") == key
    if manifest.get("status") == "complete":
        if same and not force:
            return "reuse"
        if force:
            return "fresh"
        raise HarnessError(
            f"{label}: holds a finished training of a different config or data; "
            "choose another --out or pass --force to replace it"
        )
    if force:
        return "fresh"
    if not same:
        raise HarnessError(
            f"{label}: holds an unfinished training of a different config or data; "
            "choose another --out or pass --force to start over"
        )
    if not resume:
        raise HarnessError(
            f"{label}: holds an unfinished training of this config; pass --resume to continue "
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
