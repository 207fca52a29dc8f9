"""The sweep folder: what is in it, who may write it, and which candidates are finished.

Owns: the folder's layout and marker (`sweep.json`, kind `harness.sweep`, naming the story,
model and LoRA by sha256), the ownership rule (`harness.ownership`: only an absent or empty
folder, or one this harness made for the same story and weights holding only what the sweep
writes, is written into; a link is never followed), and the candidate records: a candidate is
finished when its PNG and its score row (`candidates/<id>.png`, `candidates/<id>.json`, each
written atomically, the row after the PNG and naming the PNG's sha256) are both on disk and
agree with the plan's candidate and the scoring models (`finished`). A
finished candidate is never rendered again, so a sweep stopped by kill -9 continues where it
stopped.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.ownership import Purpose, inspect

KIND = "harness.sweep"
MARKER = "sweep.json"
CANDIDATES = "candidates"
SHEETS = "sheets"
LORA = "lora"
TABLE = "candidates.csv"
SWEPT_STORY = "story.swept.yaml"
REPORT = "report.json"
PICKED_STORY = "story.picked.yaml"  # saved by the pick page (`harness sweep serve`)
FILES = (MARKER, TABLE, SWEPT_STORY, REPORT, PICKED_STORY)
FOLDERS = (CANDIDATES, SHEETS, LORA)
IDENTITY_KEYS = ("story_sha256", "model_sha256", "lora_sha256")
MAX_ROW_BYTES = 1 << 20  # a row holds one image embedding (1,024 floats for ViT-H-14)
_TEMP = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")  # harness.safeio.write_atomic's, left by kill -9


def sheet_name(panel: int) -> str:
    return f"{SHEETS}/panel-{panel:02d}.png"


def _stray(folder: Path, marker: dict[str, Any]) -> str | None:
    for name in sorted(os.listdir(folder)):
        if name in FILES or _TEMP.fullmatch(name):
            continue
        if name in FOLDERS:
            mode = os.lstat(folder / name).st_mode
            if stat.S_ISDIR(mode):
                continue
            return f"{name} (not a real folder)"
        return name
    return None


PURPOSE = Purpose(
    what="a sweep folder",
    marker=MARKER,
    kind=KIND,
    max_marker_bytes=64 << 10,
    stray=_stray,
)


def check_folder(out: Path, identity: dict[str, Any]) -> bool:
    """True when `out` holds this very sweep (continue it), False when it is absent or empty;
    HarnessError when it is anything else: someone else's folder, a link, or the sweep of
    another story or other weights."""
    owned = inspect(out, PURPOSE, label=f"--out {out}")
    if owned.state != "ours":
        return False
    marker = owned.marker or {}
    for key in IDENTITY_KEYS:
        if marker.get(key) != identity.get(key):
            what = "another story" if key == "story_sha256" else f"other weights ({key} differs)"
            theirs = marker.get("story")
            named = f" ({theirs})" if isinstance(theirs, str) else ""
            raise HarnessError(
                f"--out {out}: holds the sweep of {what}{named}; choose another folder for this one"
            )
    return True


def prepare_folder(out: Path, marker: dict[str, Any]) -> None:
    """Create the sweep folder and its subfolders (never through a link) and write the marker."""
    from harness.safeio import write_json

    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in (CANDIDATES, SHEETS):
            sub = out / name
            if not os.path.lexists(sub):
                sub.mkdir()
            elif not stat.S_ISDIR(os.lstat(sub).st_mode):
                raise HarnessError(f"{sub}: is not a real folder; not written through")
    except OSError as e:
        raise HarnessError(f"{out}: cannot create the sweep folder ({e.strerror})") from None
    write_json(out / MARKER, marker)


def png_path(out: Path, cid: str) -> Path:
    return out / CANDIDATES / f"{cid}.png"


def row_path(out: Path, cid: str) -> Path:
    return out / CANDIDATES / f"{cid}.json"


AESTHETIC_RANGE = (-100.0, 100.0)  # far beyond any predictor's output; outside it a row is forged
SCORING_KEYS = ("aesthetic_model", "alignment_model", "consistency_model", "scoring_pins")
PLAN_KEYS = ("panel", "rank", "seed", "scale", "steps", "story_sha256")


def scoring_identity(config: Any) -> dict[str, Any]:
    """The scoring models a row was scored with (names and pins): a row scored by other models
    is not finished for this sweep."""
    return {
        "aesthetic_model": config.aesthetic_model,
        "alignment_model": config.alignment_model,
        "consistency_model": config.consistency_model,
        "scoring_pins": dict(sorted(config.pins.items())),
    }


def finished(
    out: Path, cand: Any, scoring: dict[str, Any] | None = None, max_pixels: int = 1 << 26
) -> dict[str, Any] | None:
    """The candidate's score row when it and its PNG are complete on disk and agree with the
    candidate (`harness.sweep.plan.Candidate`), else None (render it again).

    Agree means: the row's panel, rank, seed, scale, steps and story hash are the candidate's;
    its scores are finite and in range and its embedding is a unit vector; it was scored by the
    `scoring` models (when given); the PNG has the sha256 the row names, decodes completely and
    carries the candidate's seed, steps, panel and LoRA strength in its embedded parameters.
    Scores forged beside the right PNG cannot be told from real ones without scoring again."""
    from harness.hashing import sha256_bytes
    from harness.safeio import read_bytes, read_json

    cid = cand.id
    try:
        row = read_json(row_path(out, cid), max_bytes=MAX_ROW_BYTES)
        if not _well_formed(row) or row.get("id") != cid:
            return None
        if any(row.get(k) != getattr(cand, k) for k in PLAN_KEYS):
            return None
        if row["scale"] is not None and type(row["scale"]) is not float:
            return None
        if scoring is not None and any(row.get(k) != scoring[k] for k in SCORING_KEYS):
            return None
        png = read_bytes(png_path(out, cid), max_bytes=256 << 20)
    except HarnessError:
        return None
    if sha256_bytes(png) != row.get("png_sha256") or not _png_matches(png, cand, max_pixels):
        return None
    return row


def _png_matches(png: bytes, cand: Any, max_pixels: int) -> bool:
    """The PNG decodes completely and its embedded parameters are the candidate's."""
    import io

    from harness.imaging import open_untrusted
    from harness.render.pngmeta import params_from_text, png_text

    try:
        with open_untrusted(io.BytesIO(png), max_pixels) as im:
            im.load()
            text = png_text(im)
        params = params_from_text(text, "candidate")
    except HarnessError:
        return False
    lora = params.get("lora")
    scale = lora.get("scale") if isinstance(lora, dict) else None
    return (
        params.get("seed") == cand.seed
        and params.get("steps") == cand.steps
        and params.get("panel") == cand.panel
        and (scale is None) == (cand.scale is None)
        and (cand.scale is None or scale == cand.scale)
    )


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _well_formed(row: Any) -> bool:
    """A row the sweep wrote (a hand-edited or truncated one is rendered again, not trusted):
    the types, finite scores in range (aesthetic in AESTHETIC_RANGE, CLIP-T a cosine) and an
    L2-normalised embedding."""
    if not (
        isinstance(row, dict)
        and all(
            isinstance(row.get(k), int) and not isinstance(row.get(k), bool)
            for k in ("panel", "rank", "seed", "steps")
        )
        and _number(row.get("aesthetic"))
        and (row.get("clip_t") is None or _number(row.get("clip_t")))
        and (row.get("scale") is None or _number(row.get("scale")))
        and isinstance(row.get("embedding"), list)
        and len(row["embedding"]) > 0
        and all(_number(x) for x in row["embedding"])
        and isinstance(row.get("png"), str)
    ):
        return False
    lo, hi = AESTHETIC_RANGE
    if not lo <= row["aesthetic"] <= hi:
        return False
    if row["clip_t"] is not None and not -1.0 <= row["clip_t"] <= 1.0:
        return False
    norm = math.sqrt(math.fsum(x * x for x in row["embedding"]))
    return abs(norm - 1.0) <= 1e-3


def write_row(out: Path, row: dict[str, Any]) -> None:
    """Record a scored candidate; its PNG must be on disk already (the row names its hash)."""
    from harness.safeio import write_json

    write_json(row_path(out, row["id"]), row)
