"""Choose the story: one candidate per panel and one LoRA strength, jointly.

Owns: the objective (the mean aesthetic score over every panel of the story, the competition's
gate), the constraints (each panel's CLIP-T at least its original candidate's minus a margin; the
chosen set's CLIP-I at least a floor, by default the original story's) and the search.

The search is coordinate ascent, once per LoRA strength (a strength changes every panel, so it
is an outer choice): start from the story's own seeds, then visit the swept panels in order and
give each the candidate that most improves the story with the other panels held fixed; repeat
until a whole pass changes nothing. The key compared is (constraints met, mean aesthetic), or
(False, CLIP-I) while the consistency floor is not met, so an infeasible start climbs towards
the floor first. A change must be a strict improvement, so the story's own seeds are kept on a
tie and, from a start that meets the constraints, the result is never worse than the original
by the objective. When no combination found meets the consistency floor (a `--min-consistency`
above anything reachable), the original story is kept with a note, so the result is never worse
by the objective either way. The aesthetic mean is separable, so without the consistency floor coordinate
ascent finds the best story exactly; with it, the result is a local optimum (every single-panel
change is worse or breaks a constraint). Pure arithmetic on recorded scores: no torch, no files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MAX_PASSES = 50


@dataclass(frozen=True)
class Option:
    """A rendered, scored candidate as the choice sees it."""

    id: str
    panel: int
    rank: int  # 0: the story's own seed
    seed: int
    scale: float | None
    aesthetic: float
    clip_t: float | None
    embedding: tuple[float, ...]


def story_scores(options: list[Option]) -> tuple[float, float | None]:
    """(mean aesthetic, CLIP-I) of one candidate per panel: the formulas of `harness score`
    (math.fsum mean; mean pairwise cosine of L2-normalised image embeddings)."""
    mean = math.fsum(o.aesthetic for o in options) / len(options)
    if len(options) < 2:
        return mean, None
    e = np.asarray([o.embedding for o in options], dtype=np.float64)
    sims = e @ e.T
    pairs = [sims[i, j] for i in range(len(options)) for j in range(i + 1, len(options))]
    return mean, math.fsum(sorted(pairs)) / len(pairs)


@dataclass
class Selection:
    """The chosen story and the original one, with the numbers that compare them."""

    scale: float | None
    chosen: dict[int, Option]
    aesthetic_mean: float
    clip_i: float | None
    feasible: bool
    original: dict[int, Option]
    original_mean: float
    original_clip_i: float | None
    min_consistency: float | None
    alignment_margin: float
    passes: int = 0
    notes: list[str] = field(default_factory=list)


def _key(options: list[Option], floor: float | None) -> tuple[bool, float, float | None]:
    mean, clip_i = story_scores(options)
    feasible = floor is None or clip_i is None or clip_i >= floor
    return (feasible, mean if feasible else (clip_i if clip_i is not None else 0.0), clip_i)


def choose(
    by_scale: dict[float | None, dict[int, list[Option]]],
    original_scale: float | None,
    *,
    swept: list[int],
    min_consistency: float | None,
    alignment_margin: float,
) -> Selection:
    """Coordinate ascent over `swept` panels for each strength (module docstring).

    `by_scale[scale][panel]`: that panel's full-step candidates at that strength, rank order;
    every panel has its rank-0 candidate at `original_scale`."""
    original = {p: opts[0] for p, opts in by_scale[original_scale].items()}
    assert all(o.rank == 0 for o in original.values())
    panels = sorted(original)
    orig_mean, orig_clip_i = story_scores([original[p] for p in panels])
    floor = orig_clip_i if min_consistency is None else min_consistency
    notes: list[str] = []

    best: tuple | None = None
    for scale, per_panel in by_scale.items():
        allowed: dict[int, list[Option]] = {}
        for p in panels:
            ref = original[p].clip_t
            allowed[p] = [
                o
                for o in per_panel.get(p, [])
                if ref is None or o.clip_t is None or o.clip_t >= ref - alignment_margin
            ]
        missing = [p for p in panels if not allowed[p]]
        if missing:
            notes.append(
                f"LoRA strength {scale}: panel(s) {', '.join(map(str, missing))} have no candidate "
                f"within {alignment_margin:g} of the original CLIP-T; strength not chosen"
            )
            continue
        current = {p: next((o for o in allowed[p] if o.rank == 0), allowed[p][0]) for p in panels}
        key = _key([current[p] for p in panels], floor)
        passes = 0
        for _ in range(MAX_PASSES):
            passes += 1
            changed = False
            for p in swept:
                for o in allowed[p]:
                    if o is current[p]:
                        continue
                    trial = {**current, p: o}
                    k = _key([trial[q] for q in panels], floor)
                    if k[:2] > key[:2]:
                        current, key, changed = trial, k, True
            if not changed:
                break
        if best is None or key[:2] > best[0][:2]:
            best = (key, scale, current, passes)
    if best is None:  # every strength lost a panel to the margin; keep the story as it is
        notes.append("no strength meets the CLIP-T margin on every panel: the original story is kept")
        key = _key([original[p] for p in panels], floor)
        best = (key, original_scale, dict(original), 0)
    key, scale, current, passes = best
    if not key[0]:  # nothing found meets the floor: trading score for it would be worse, not better
        notes.append(
            f"no combination found reaches story consistency {floor:.4f}; the original story is kept"
        )
        key = _key([original[p] for p in panels], floor)
        scale, current, passes = original_scale, dict(original), passes
    mean, clip_i = story_scores([current[p] for p in panels])
    return Selection(
        scale=scale,
        chosen=current,
        aesthetic_mean=mean,
        clip_i=clip_i,
        feasible=key[0],
        original=original,
        original_mean=orig_mean,
        original_clip_i=orig_clip_i,
        min_consistency=floor,
        alignment_margin=alignment_margin,
        passes=passes,
        notes=notes,
    )
