"""Resuming a sweep trusts nothing in the folder it cannot check: a candidate's row must agree
with the plan (panel, rank, seed, strength, steps), hold finite scores in range and a unit
embedding, name this sweep's scorers, and sit beside a PNG that has its sha256, decodes
completely and carries the candidate's own parameters. Anything else is rendered again (never
a traceback), and the swept story holds only the plan's seeds. The tiny model, 64x64, 2 steps."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tests.conftest import small_story


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model_dir):
    """A finished sweep of a 3-panel story: panels 1 and 2, 3 seeds each (9 candidates)."""
    from harness.sweep.plan import SweepOptions
    from harness.sweep.run import run_sweep

    folder = tmp_path_factory.mktemp("resume")
    data = small_story()
    data["sampling"] = {**data["sampling"], "steps": 2}
    data["panel_count"], data["panels"] = 3, data["panels"][:3]
    story = folder / "story.yaml"
    story.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    opts = SweepOptions(seeds=3, panels="1,2", progress=False)
    out = folder / "base"
    result = run_sweep(story, out, opts)
    return story, out, opts, result


def _rows(out):
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "candidates").glob("*.json"))}


def _write(out, cid, row):
    (out / "candidates" / f"{cid}.json").write_text(json.dumps(row))


def test_forged_rows_and_pngs_are_rendered_again_and_never_reach_the_swept_story(base, tmp_path):
    from harness.config.story import load_story
    from harness.hashing import sha256_file
    from harness.sweep import work
    from harness.sweep.run import run_sweep

    story, out0, opts, first = base
    out = tmp_path / "copy"
    shutil.copytree(out0, out)
    rows = _rows(out)
    plan = first.setup.plan
    ids = [c.id for c in plan.originals() + plan.full()]
    assert sorted(ids) == sorted(rows)
    a, b, c, d, e, f, g, h, spare = ids
    png = lambda cid: out / "candidates" / f"{cid}.png"  # noqa: E731
    tampered = {
        a: {"seed": 424242, "aesthetic": 99.0},  # F1: a seed never rendered, a winning score
        b: {"aesthetic": 1e308},  # F1: out of any predictor's range
        c: {"clip_t": 5.0},  # F1: not a cosine
        e: {"scale": 0.5},  # F3: a strength the plan does not have (was a KeyError)
        f: {"embedding": []},  # F3: no embedding (was a numpy ValueError)
        g: {"aesthetic_model": "another-predictor"},  # F2: scored by other models
    }
    for cid, change in tampered.items():
        _write(out, cid, {**rows[cid], **change})
    shutil.copyfile(png(spare), png(d))  # F1: another candidate's PNG, its sha recorded
    _write(out, d, {**rows[d], "png_sha256": sha256_file(png(d))})
    data = png(h).read_bytes()  # F7: a truncated PNG whose sha the row records
    png(h).write_bytes(data[: len(data) // 2])
    _write(out, h, {**rows[h], "png_sha256": sha256_file(png(h))})

    before = work.RENDER_COUNT[0]
    result = run_sweep(story, out, opts)
    redone = {a, b, c, d, e, f, g, h}
    assert work.RENDER_COUNT[0] - before == len(redone)  # each forged candidate, nothing else
    assert sorted(result.rendered) == sorted(redone)
    again = _rows(out)
    for cid in redone:  # rendered again: the same pixels and scores as the first sweep's
        assert again[cid]["seed"] == rows[cid]["seed"] and again[cid]["scale"] is None
        assert again[cid]["png_sha256"] == rows[cid]["png_sha256"]
        assert again[cid]["aesthetic"] == pytest.approx(rows[cid]["aesthetic"], abs=1e-6)
    assert again[spare] == rows[spare]
    assert result.report["after"]["aesthetic_mean"] == pytest.approx(first.report["after"]["aesthetic_mean"])
    swept = load_story(out / "story.swept.yaml").story
    assert 424242 not in [p.seed for p in swept.panels]
    assert [p.seed for p in swept.panels] == [o.seed for _, o in sorted(first.selection.chosen.items())]


def test_a_row_planted_for_a_candidate_not_yet_rendered_is_not_trusted(base, tmp_path):
    """A bigger sweep's new candidate with a copied PNG and a forged row is rendered."""
    from harness.sweep import run, work
    from harness.sweep.plan import SweepOptions
    from harness.sweep.run import plan_sweep

    story, out0, opts, first = base
    out = tmp_path / "copy"
    shutil.copytree(out0, out)
    more = SweepOptions(seeds=4, panels="1", progress=False)
    setup = plan_sweep(story, out, more)
    new = setup.plan.candidate(1, 4, None, setup.plan.steps)
    donor = first.setup.plan.candidate(1, 1, None, setup.plan.steps).id
    shutil.copyfile(out / "candidates" / f"{donor}.png", out / "candidates" / f"{new.id}.png")
    row = {**_rows(out)[donor], "id": new.id, "rank": 4, "seed": new.seed, "aesthetic": 50.0}
    row["png"] = f"candidates/{new.id}.png"
    _write(out, new.id, row)
    before = work.RENDER_COUNT[0]
    result = run.execute_sweep(setup)
    assert work.RENDER_COUNT[0] - before == 1 and result.rendered == [new.id]
    assert result.rows[new.id]["aesthetic"] < 50.0


def test_a_finished_row_agrees_with_its_candidate_and_scorers(base):
    """store.finished on the untouched folder: the row for the plan's candidate, None for the
    same files under other scorers (other pins)."""
    from harness.sweep import store

    _, out, _, first = base
    plan, config = first.setup.plan, first.setup.config
    scoring = store.scoring_identity(config)
    c = plan.candidate(1, 1, None, plan.steps)
    assert store.finished(out, c, scoring) is not None
    other = store.scoring_identity(config.model_copy(update={"pins": {config.aesthetic_model: "0" * 64}}))
    assert store.finished(out, c, other) is None


@pytest.mark.parametrize("seed", [-5, 2**80])
def test_a_swept_story_that_would_not_validate_is_never_written(base, tmp_path, seed):
    """The swept story is checked before it is written: an impossible seed leaves the file as
    it was (one line naming it), never an invalid story.swept.yaml on disk."""
    import dataclasses

    from harness.errors import HarnessError
    from harness.sweep.outputs import write_swept_story

    _, out0, _, first = base
    out = tmp_path / "copy"
    shutil.copytree(out0, out)
    before = (out / "story.swept.yaml").read_bytes()
    sel = first.selection
    bad = dataclasses.replace(sel, chosen={**sel.chosen, 1: dataclasses.replace(sel.chosen[1], seed=seed)})
    result = dataclasses.replace(first, out=out)
    with pytest.raises(HarnessError, match="story.swept.yaml: not written") as e:
        write_swept_story(result, bad)
    assert "\n" not in str(e.value)
    assert (out / "story.swept.yaml").read_bytes() == before
