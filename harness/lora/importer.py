"""`harness lora import`: turn a LoRA trained elsewhere into the diffusers naming the harness renders.

Owns: the base whose UNet the LoRA must fit (`--base`, default the full Kolors), the alpha
decision (stored in the file, else --alpha, else the baseline's training value 4.0, always
printed), the all-keys-recognised rule, and the import manifest. Everything is checked before
anything is written: the file's content goes through the same check render and verify run
(`harness.lora.checks.check_tensors`), and the output names are checked for planted folders.
Writes replace names, never write through a link (`harness.lora.sfwrite`, `harness.safeio`).
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.lora import formats
from harness.lora.safeload import load_lora_file

BASELINE_ALPHA = 4.0
DEFAULT_BASE = "kolors"
IMPORT_MANIFEST = "import.json"
KOLORS_MODELSCOPE_ID = "Kwai-Kolors/Kolors-diffusers"


@dataclass
class ImportResult:
    path: Path
    format: str
    keys: int
    rank: int
    alpha: float
    alpha_note: str
    shapes_note: str = ""


def base_linear_shapes(base: str) -> tuple[dict[str, tuple[int, int]] | None, str]:
    """(Linear shapes of `base`'s UNet or None, a note when they are unknown here).

    The full Kolors layout is built in (the same config as Kolors-diffusers' unet/config.json);
    `tiny` is the built-in test model; `local:<path>` reads <path>/unet/config.json.
    """
    from harness.config.refs import parse_ref

    try:
        ref = parse_ref(base)
    except ValueError as e:
        raise HarnessError(f"--base: {e}") from None
    if ref.source == "modelscope" and ref.location == KOLORS_MODELSCOPE_ID:
        from harness.lora.kolors_layout import kolors_linear_shapes

        return kolors_linear_shapes(), ""
    if ref.source == "tiny":
        from harness.lora.checks import unet_linear_shapes
        from harness.models.tiny import ensure_tiny
        from harness.paths import cache_dir

        return unet_linear_shapes(ensure_tiny(cache_dir()) / "unet" / "config.json"), ""
    if ref.source == "local":
        from harness.lora.checks import unet_linear_shapes

        config = Path(ref.location).expanduser() / "unet" / "config.json"
        if config.is_file():
            return unet_linear_shapes(config), ""
    return None, f"LoRA shapes not checked: the UNet config of {base} is not known here"


def _stored_alpha(value, file: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HarnessError(f"{file}: stored alpha {str(value)[:40]!r} is not a number")
    if not 0 < value <= 4096:
        raise HarnessError(f"{file}: stored alpha {value} is not in (0, 4096]")
    return float(value)


def _writable(out: Path, names: tuple[str, ...], force: bool) -> None:
    """Refuse before anything is written: `out` not a folder, or a name in it that is taken."""
    try:
        st = os.stat(out)
    except FileNotFoundError:
        return
    except OSError as e:
        raise HarnessError(f"{out}: cannot be used ({e.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise HarnessError(f"{out}: exists and is not a folder")
    for name in names:
        try:
            mode = os.lstat(out / name).st_mode
        except FileNotFoundError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise HarnessError(f"{out / name}: exists and is not a file; not replaced")
        if not force:
            raise HarnessError(f"{out / name} exists; pass --force to replace it")


def import_lora(
    file: str | Path,
    out: str | Path,
    *,
    alpha: float | None = None,
    force: bool = False,
    base: str = DEFAULT_BASE,
) -> ImportResult:
    """Convert `file` to out/pytorch_lora_weights.safetensors; every key must be recognised and
    the content must pass the LoRA check render and verify run, against `base`'s UNet."""
    from harness.hashing import sha256_file
    from harness.lora.checks import check_tensors, metadata_problems
    from harness.lora.export import DIFFUSERS_FILE, write_diffusers
    from harness.lora.kolors_layout import kolors_linear_modules
    from harness.safeio import write_json

    file, out = Path(file), Path(out)
    if alpha is not None and not (0 < alpha <= 4096):
        raise HarnessError(f"--alpha: must be in (0, 4096], got {alpha}")
    target = out / DIFFUSERS_FILE
    _writable(out, (DIFFUSERS_FILE, IMPORT_MANIFEST), force)
    shapes, shapes_note = base_linear_shapes(base)
    sd, metadata = load_lora_file(file)
    problems, facts = check_tensors(sd, shapes)
    problems += metadata_problems(metadata)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise HarnessError(f"{file}: not imported: {problems[0]}{more}")
    kind = facts["format"]
    stored = formats.meta_from_safetensors(metadata)
    stored_alpha = stored.get("lora_alpha", stored.get("alpha"))
    what = str(file)
    if kind == "diffsynth":
        peft = formats.from_diffsynth(sd, what=what)
    elif kind == "kohya":
        known = shapes if shapes is not None else kolors_linear_modules()
        peft, kohya_alpha = formats.from_kohya(sd, known, what=what)
        stored_alpha = kohya_alpha if kohya_alpha is not None else stored_alpha
    else:
        peft = formats.from_diffusers(sd, what=what)
    try:
        rank = formats.rank_of(peft)
    except HarnessError as e:
        raise HarnessError(f"{file}: {e}") from None
    if alpha is not None:
        use, note = float(alpha), " from --alpha"
    elif stored_alpha is not None:
        use, note = _stored_alpha(stored_alpha, file), " stored in the file"
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
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"{out}: cannot be created ({e.strerror})") from None
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
        "base": base,
        "shapes_checked": shapes is not None,
        "file": DIFFUSERS_FILE,
        "sha256": sha256_file(target),
    }
    write_json(out / IMPORT_MANIFEST, manifest)
    return ImportResult(target, kind, len(sd), rank, use, note, shapes_note)
