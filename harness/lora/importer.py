"""`harness lora import`: turn a LoRA trained elsewhere into the diffusers naming the harness renders.

Owns: format detection, the alpha decision (stored in the file, else --alpha, else the baseline's
training value 4.0, always printed), the all-keys-recognised rule, and the import manifest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.lora import formats
from harness.lora.safeload import load_lora_file

BASELINE_ALPHA = 4.0
IMPORT_MANIFEST = "import.json"


@dataclass
class ImportResult:
    path: Path
    format: str
    keys: int
    rank: int
    alpha: float
    alpha_note: str


def import_lora(
    file: str | Path, out: str | Path, *, alpha: float | None = None, force: bool = False
) -> ImportResult:
    """Convert `file` to out/pytorch_lora_weights.safetensors; every key must be recognised."""
    from harness.hashing import sha256_file
    from harness.lora.kolors_layout import kolors_linear_modules
    from harness.train.export import DIFFUSERS_FILE, write_diffusers

    file, out = Path(file), Path(out)
    if alpha is not None and not (0 < alpha <= 4096):
        raise HarnessError(f"--alpha: must be in (0, 4096], got {alpha}")
    target = out / DIFFUSERS_FILE
    if target.exists() and not force:
        raise HarnessError(f"{target} exists; pass --force to replace it")
    sd, metadata = load_lora_file(file)
    kind = formats.detect_format(sd)
    stored = formats.meta_from_safetensors(metadata)
    stored_alpha = stored.get("lora_alpha", stored.get("alpha"))
    what = str(file)
    if kind == "diffsynth":
        peft = formats.from_diffsynth(sd, what=what)
    elif kind == "kohya":
        peft, kohya_alpha = formats.from_kohya(sd, kolors_linear_modules(), what=what)
        stored_alpha = kohya_alpha if kohya_alpha is not None else stored_alpha
    elif kind == "diffusers":
        peft = formats.from_diffusers(sd, what=what)
    else:
        raise HarnessError(f"{file}: recognised 0 of {len(sd)} keys as LoRA weights (e.g. {next(iter(sd))})")
    rank = formats.rank_of(peft)
    if alpha is not None:
        use, note = float(alpha), " from --alpha"
    elif stored_alpha is not None:
        use, note = float(stored_alpha), " stored in the file"
    else:
        use, note = (
            BASELINE_ALPHA,
            " (the baseline's training value; the file stores none, pass --alpha to change)",
        )
    modules = formats.modules_of(peft)
    targets = tuple(
        sorted({m.rsplit(".", 2)[-2] + ".0" if m.endswith(".0") else m.rsplit(".", 1)[-1] for m in modules})
    )
    meta = formats.LoraMeta(rank, use, targets, any(k.endswith(".lora_magnitude_vector") for k in peft))
    out.mkdir(parents=True, exist_ok=True)
    write_diffusers({k: v.float() for k, v in peft.items()}, meta, out)
    manifest = {
        "kind": "harness.lora.import",
        "source": str(file),
        "source_sha256": sha256_file(file),
        "format": kind,
        "keys": len(sd),
        "modules": len(modules),
        "rank": rank,
        "alpha": use,
        "alpha_source": note.strip(" ()"),
        "file": DIFFUSERS_FILE,
        "sha256": sha256_file(target),
    }
    tmp = out / f".{IMPORT_MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, out / IMPORT_MANIFEST)
    return ImportResult(target, kind, len(sd), rank, use, note)
