"""What a bundle's scores.json claims, read safely, and how it compares with the judges' re-score.

Owns: reading the team's scores.json from an untrusted bundle (through `harness.safeio`: no link
followed, no FIFO opened, size and nesting capped; the `harness.scores` kind, a finite aesthetic
mean), which story-level numbers are compared, the
tolerance, and the rule that a number is compared only when both sides scored with the same
weights (the content sha256 each metric records, text tower included). With other weights the
numbers may differ legitimately: that is a note, not a failure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.bundle.manifest import MiB
from harness.errors import HarnessError
from harness.layout import SCORES

MAX_JSON_BYTES = 10 * MiB
MAX_JSON_DEPTH = 16  # scores.json as the harness writes it is 5 levels deep
# The story-level numbers each metric reports, by metric name.
COMPARED: dict[str, tuple[str, ...]] = {
    "aesthetic": ("aesthetic_mean",),
    "consistency": ("clip_i",),
    "alignment": ("clip_t_mean",),
}
# Identical images through identical float32 weights: CPU and GPU runs differ by ~1e-5. A larger
# gap means the images or the numbers are not the ones that were scored.
TOLERANCE = 0.01


def number(v: Any) -> float | None:
    """A finite float from untrusted JSON (bools and NaN are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def read_json(path: Path, what: str) -> Any:
    """JSON from an untrusted file (`harness.safeio.read_json`: no link followed, no FIFO opened,
    at most MAX_JSON_BYTES, nested at most MAX_JSON_DEPTH); one-line HarnessError otherwise."""
    from harness import safeio

    return safeio.read_json(path, max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH, what=what)


def read_claimed(bundle: Path, intact: set[str]) -> tuple[dict | None, str]:
    """(scores.json content, '') or (None, why there are no usable claimed scores).

    `intact`: the bundle's files that match its manifest; an altered scores.json is never read.
    """
    if SCORES not in intact:
        return None, f"no {SCORES} in the bundle"
    try:
        data = read_json(bundle / SCORES, SCORES)
    except HarnessError as e:
        return None, str(e)
    if not isinstance(data, dict) or data.get("kind") != "harness.scores":
        return None, f"{SCORES}: not a harness scores file"
    summary = data.get("summary")
    if not isinstance(summary, dict) or number(summary.get("aesthetic_mean")) is None:
        return None, f"{SCORES}: no aesthetic mean in its summary"
    return data, ""


def _weights(records: Any) -> tuple | None:
    """The content hashes a metric scored with, comparable across files; None if unreadable."""
    if not isinstance(records, list) or not records:
        return None
    out = []
    for r in records:
        if not isinstance(r, dict) or not isinstance(r.get("sha256"), str):
            return None
        out.append((r["sha256"], r.get("text_tower_sha256")))
    return tuple(out)


def compare(
    claimed: dict, models: dict[str, list[dict]], summary: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """(problems, notes): claimed story numbers against the re-score's `summary`.

    `models`: {metric: the model records the re-score used}, as scores.json writes them.
    """
    problems: list[str] = []
    notes: list[str] = []
    claimed_summary = claimed.get("summary") if isinstance(claimed.get("summary"), dict) else {}
    claimed_models = claimed.get("models") if isinstance(claimed.get("models"), dict) else {}
    for metric, keys in COMPARED.items():
        if metric not in models:
            continue  # not re-scored this time
        ours = _weights(models[metric])
        theirs = _weights(claimed_models.get(metric))
        pairs = [(k, number(claimed_summary.get(k)), number(summary.get(k))) for k in keys]
        pairs = [(k, c, r) for k, c, r in pairs if c is not None and r is not None]
        if not pairs:
            continue
        if theirs != ours:
            shown = ", ".join(f"{k} {c:.4f} claimed, {r:.4f} re-scored" for k, c, r in pairs)
            notes.append(f"{metric}: the team scored with other weights than the judges ({shown})")
            continue
        for key, c, r in pairs:
            if abs(c - r) > TOLERANCE:
                problems.append(
                    f"{SCORES} claims {key} {c:.4f}, the judges re-scored {r:.4f} with the same "
                    f"weights (tolerance {TOLERANCE})"
                )
    return problems, notes
