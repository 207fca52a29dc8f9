"""The sweep's choice: coordinate ascent never ends below the original story, finds the exact
optimum when only the (separable) aesthetic mean counts, keeps every constraint, and computes
CLIP-I exactly as `harness score` does. Pure arithmetic on recorded numbers."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from harness.sweep.plan import candidate_id, derived_seeds
from harness.sweep.select import Option, choose, story_scores


def _unit(rng: random.Random, dim: int = 6) -> tuple[float, ...]:
    v = np.array([rng.gauss(0, 1) for _ in range(dim)])
    return tuple(float(x) for x in v / np.linalg.norm(v))


def _story(rng: random.Random, panels: int, seeds: int, scale=None) -> dict[int, list[Option]]:
    return {
        p: [
            Option(
                f"p{p}-{r}", p, r, 100 * p + r, scale, rng.uniform(4, 7), rng.uniform(0.2, 0.35), _unit(rng)
            )
            for r in range(seeds + 1)
        ]
        for p in range(1, panels + 1)
    }


@pytest.mark.parametrize("seed", range(20))
def test_without_a_consistency_floor_the_choice_is_the_best_story_and_never_worse(seed):
    rng = random.Random(seed)
    options = _story(rng, panels=4, seeds=3)
    sel = choose({None: options}, None, swept=[1, 2, 3, 4], min_consistency=-1.0, alignment_margin=2.0)
    best = max(
        story_scores(list(combo))[0] for combo in itertools.product(*(options[p] for p in sorted(options)))
    )
    assert sel.aesthetic_mean == pytest.approx(best, abs=1e-12)
    assert sel.aesthetic_mean >= sel.original_mean
    assert sel.feasible


@pytest.mark.parametrize("seed", range(20))
def test_the_constraints_hold_and_the_objective_never_drops(seed):
    rng = random.Random(seed)
    options = _story(rng, panels=4, seeds=4)
    margin = 0.03
    sel = choose({None: options}, None, swept=[2, 3], min_consistency=None, alignment_margin=margin)
    assert sel.aesthetic_mean >= sel.original_mean  # the original meets its own floor: never worse
    assert sel.clip_i >= sel.original_clip_i - 1e-12  # default floor: the original's CLIP-I
    for p, o in sel.chosen.items():
        assert o.clip_t >= sel.original[p].clip_t - margin
        if p not in (2, 3):
            assert o.rank == 0  # unswept panels keep the story's seed


def test_a_tie_keeps_the_story_seed():
    rng = random.Random(1)
    options = _story(rng, panels=2, seeds=2)
    same = options[1][0]
    options[1] = [same] + [
        Option(f"x{r}", 1, r, 7 + r, None, same.aesthetic, same.clip_t, same.embedding) for r in (1, 2)
    ]
    sel = choose({None: options}, None, swept=[1], min_consistency=None, alignment_margin=0.0)
    assert sel.chosen[1].rank == 0


def test_an_off_prompt_candidate_is_not_chosen_however_pretty():
    rng = random.Random(2)
    options = _story(rng, panels=2, seeds=1)
    orig = options[1][0]
    options[1][1] = Option("pretty", 1, 1, 99, None, 9.9, orig.clip_t - 0.05, orig.embedding)
    sel = choose({None: options}, None, swept=[1], min_consistency=None, alignment_margin=0.02)
    assert sel.chosen[1].id != "pretty"
    sel = choose({None: options}, None, swept=[1], min_consistency=None, alignment_margin=0.06)
    assert sel.chosen[1].id == "pretty"


def test_a_strength_is_chosen_for_the_whole_story():
    rng = random.Random(3)
    low, high = _story(rng, 3, 1, scale=0.5), _story(rng, 3, 1, scale=1.0)
    for p in high:  # every picture at strength 0.5 is better, with the same prompt alignment
        low[p] = [
            Option(o.id, o.panel, o.rank, o.seed, 0.5, high[p][o.rank].aesthetic + 1, o.clip_t, o.embedding)
            for o in high[p]
        ]
        low[p] = [
            Option(o.id, o.panel, o.rank, o.seed, 0.5, o.aesthetic, high[p][o.rank].clip_t, o.embedding)
            for o in low[p]
        ]
    sel = choose({1.0: high, 0.5: low}, 1.0, swept=[1, 2, 3], min_consistency=-1, alignment_margin=0.0)
    assert sel.scale == 0.5
    assert {o.scale for o in sel.chosen.values()} == {0.5}


def test_story_clip_i_is_the_scorers_formula():
    import torch

    from harness.score.clip_consistency import consistency

    rng = random.Random(4)
    options = [o[0] for o in _story(rng, panels=5, seeds=0).values()]
    mean, clip_i = story_scores(options)
    expected, _ = consistency(torch.tensor([o.embedding for o in options], dtype=torch.float64))
    assert clip_i == pytest.approx(expected, abs=1e-12)


def test_candidate_ids_and_derived_seeds_are_deterministic_and_distinct():
    sha = "ab" * 32
    assert candidate_id(sha, 1, 5, 0.8, 20) == candidate_id(sha, 1, 5, 0.8, 20)
    ids = {
        candidate_id(sha, p, s, sc, st)
        for p in (1, 2)
        for s in (1, 2)
        for sc in (None, 0.8)
        for st in (4, 20)
    }
    assert len(ids) == 16
    seeds = derived_seeds(sha, 1, 7, 5)
    assert seeds == derived_seeds(sha, 1, 7, 5)
    assert derived_seeds(sha, 1, 7, 3) == seeds[:3]  # more seeds extend fewer
    assert len(set(seeds)) == 5 and 7 not in seeds
    assert seeds != derived_seeds(sha, 2, 7, 5)
    assert all(0 <= s < 2**64 for s in seeds)


def test_an_unreachable_consistency_floor_keeps_the_original_story():
    """--min-consistency above anything reachable: no choice meets it, so the story is kept as
    it is (never traded for a higher CLIP-I that still misses the floor), with a note."""
    rng = random.Random(7)
    options = _story(rng, panels=3, seeds=3)
    sel = choose({None: options}, None, swept=[1, 2, 3], min_consistency=0.999, alignment_margin=2.0)
    assert not sel.feasible
    assert {p: o.rank for p, o in sel.chosen.items()} == {1: 0, 2: 0, 3: 0}
    assert sel.aesthetic_mean == sel.original_mean
    assert any("the original story is kept" in n for n in sel.notes)
