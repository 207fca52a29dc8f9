"""`harness sweep` on the tiny model, end to end through the CLI: the table, the sheets and
story.swept.yaml are written; the choice is never worse than the story's own seeds; rendering
the swept story gives the winners' pixels bit for bit; a sweep killed with kill -9 continues
without rendering a finished candidate again; LoRA strengths and previews."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from harness.cli import main
from tests.conftest import ROOT, small_story


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def cheap_story(**overrides) -> dict:
    """The demo story at 64x64 and 2 steps (tiny's pictures are noise at any step count)."""
    data = small_story(**overrides)
    data["sampling"] = {**data["sampling"], "steps": 2}
    return data


def three_panels(**overrides) -> dict:
    """A 3-panel story from the demo (64x64, 2 steps): the cheapest story with unswept panels."""
    data = cheap_story(**overrides)
    data["panel_count"] = 3
    data["panels"] = data["panels"][:3]
    return data


def two_panels_with_lora(folder, tiny_model_dir):
    """folder/s/story.yaml: a 2-panel story (64x64, 2 steps) with a real LoRA beside it
    (style.safetensors, strength 1.0), so LoRA strengths can be swept too."""
    from tests.bundle_fixtures import make_lora

    lora = make_lora(folder / "lora-src", tiny_model_dir)
    (folder / "s").mkdir()
    os.replace(lora, folder / "s" / "style.safetensors")
    data = three_panels(lora={"path": "style.safetensors", "scale": 1.0})
    data["panel_count"], data["panels"] = 2, data["panels"][:2]
    story = folder / "s" / "story.yaml"
    story.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return story


@pytest.fixture(scope="module")
def demo_sweep(tmp_path_factory, tiny_model_dir):
    """`harness sweep <demo story> --seeds 3 --panels 1,2 --out DIR` (the demo at 64x64, 2 steps)."""
    folder = tmp_path_factory.mktemp("sweep")
    story = folder / "demo.yaml"
    story.write_text(yaml.safe_dump(cheap_story(), allow_unicode=True, sort_keys=False), encoding="utf-8")
    out = folder / "out"
    code = main(["sweep", str(story), "--seeds", "3", "--panels", "1,2", "--out", str(out), "--quiet"])
    return story, out, code


def test_writes_the_table_the_sheets_and_a_valid_swept_story(demo_sweep):
    from harness.config.story import load_story
    from harness.sweep.outputs import read_table

    story, out, code = demo_sweep
    assert code == 1  # the tiny scorers' aesthetic is ~0: the gate fails, honestly
    table = read_table(out)
    assert len(table) == 8 + 2 * 3  # every panel at its own seed, plus 3 seeds for panels 1 and 2
    assert sorted(table.groupby("panel").size().to_dict().items()) == [(1, 4), (2, 4)] + [
        (p, 1) for p in range(3, 9)
    ]
    for col in ("seed", "scale", "steps", "aesthetic", "clip_t", "model_sha256", "lora_sha256", "png_sha256"):
        assert col in table.columns
    assert table["aesthetic"].notna().all() and table["clip_t"].notna().all()
    assert table["chosen"].sum() == 8 and table["original"].sum() == 8
    assert (out / "sheets" / "panel-01.png").is_file() and (out / "sheets" / "panel-02.png").is_file()
    assert not (out / "sheets" / "panel-03.png").exists()  # only swept panels get a sheet
    with Image.open(out / "sheets" / "panel-01.png") as sheet:
        assert sheet.width > 4 * 100  # four seeds side by side
    swept = load_story(out / "story.swept.yaml").story
    original = load_story(story).story
    chosen = table[table["chosen"]].sort_values("panel")
    assert [str(p.seed) for p in swept.panels] == list(chosen["seed"])
    for p in range(2, 8):
        assert swept.panels[p].seed == original.panels[p].seed
    assert [p.prompt for p in swept.panels] == [p.prompt for p in original.panels]
    assert swept.sampling == original.sampling


def test_the_choice_is_never_worse_than_the_story_by_the_objective(demo_sweep):
    from harness.config.scoring import ScoringConfig

    _, out, _ = demo_sweep
    report = json.loads((out / "report.json").read_text())
    assert report["after"]["aesthetic_mean"] >= report["before"]["aesthetic_mean"]
    assert report["after"]["clip_i"] >= report["before"]["clip_i"]  # the default floor
    assert report["threshold"] == ScoringConfig().threshold and report["after"]["gate"] == "INVALID"
    for row in report["panels"]:
        assert row["chosen"]["aesthetic"] >= row["original"]["aesthetic"] or not row["swept"]


def test_rendering_the_swept_story_gives_the_winners_pixels_bit_for_bit(demo_sweep, tmp_path):
    from harness.config.story import load_story
    from harness.render.run import render_story
    from harness.sweep.outputs import read_table

    _, out, _ = demo_sweep
    chosen = read_table(out).query("chosen").set_index("panel")
    assert (chosen.loc[[1, 2], "rank"] > 0).any(), "the sweep chose no new seed: the test proves nothing"
    swept = load_story(out / "story.swept.yaml")
    result = render_story(swept, tmp_path / "run", progress=False)
    for p in range(1, 9):
        np.testing.assert_array_equal(
            pixels(result.out / f"images/{p:02d}.png"), pixels(out / chosen.loc[p, "png"])
        )
    # and the sweep's numbers for the chosen story are `harness score`'s on the rendered story
    from harness.score.api import score_run, summary
    from tests.score_fixtures import tiny_config

    scored = summary(score_run(result.out, story=swept, config=tiny_config()))
    report = json.loads((out / "report.json").read_text())
    assert scored["aesthetic_mean"] == pytest.approx(report["after"]["aesthetic_mean"], abs=1e-6)
    assert scored["clip_i"] == pytest.approx(report["after"]["clip_i"], abs=1e-6)


def test_a_finished_sweep_run_again_renders_nothing_and_reports_the_same(demo_sweep, capsys):
    from harness.sweep import work

    story, out, _ = demo_sweep
    before = (out / "story.swept.yaml").read_bytes(), (out / "candidates.csv").read_bytes()
    count = work.RENDER_COUNT[0]
    code = main(
        ["sweep", str(story), "--seeds", "3", "--panels", "1,2", "--out", str(out), "--quiet", "--json"]
    )
    assert code == 1
    assert work.RENDER_COUNT[0] == count
    assert json.loads(capsys.readouterr().out)["rendered_now"] == 0
    assert ((out / "story.swept.yaml").read_bytes(), (out / "candidates.csv").read_bytes()) == before


def test_a_sweep_killed_with_kill_9_continues_without_rendering_a_finished_candidate(
    tmp_path, tiny_model_dir
):
    from harness.sweep import work
    from harness.sweep.outputs import read_table

    story = tmp_path / "story.yaml"
    story.write_text(yaml.safe_dump(three_panels(), allow_unicode=True, sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    args = ["sweep", str(story), "--seeds", "3", "--panels", "1,2", "--out", str(out), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=os.environ.copy())
    rows = out / "candidates"
    deadline = time.monotonic() + 120
    try:
        while len(list(rows.glob("*.json"))) < 4:  # the first chunk is scored and recorded
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    finished = {p.stem: p.stat().st_mtime_ns for p in rows.glob("*.json")}
    pngs = {p.stem: p.stat().st_mtime_ns for p in rows.glob("*.png") if p.stem in finished}
    assert 4 <= len(finished) < 9
    count = work.RENDER_COUNT[0]
    assert main(args) == 1
    assert work.RENDER_COUNT[0] - count == 9 - len(finished)  # only what was missing
    for stem, mtime in {**finished, **{f"{k}.png": v for k, v in pngs.items()}}.items():
        path = rows / (stem if stem.endswith(".png") else f"{stem}.json")
        assert path.stat().st_mtime_ns == mtime, f"{path.name} was written again"
    assert len(read_table(out)) == 9
    count = work.RENDER_COUNT[0]
    assert main([*args[:2], "--seeds", "4", *args[4:]]) == 1  # one more seed extends the sweep
    assert work.RENDER_COUNT[0] - count == 2
    row = next(rows.glob("p01-*.json"))  # a row that is not what the sweep wrote is not trusted
    row.write_text(row.read_text().replace('"aesthetic": ', '"aesthetic": "9.9", "x": '))
    count = work.RENDER_COUNT[0]
    assert main([*args[:2], "--seeds", "4", *args[4:]]) == 1
    assert work.RENDER_COUNT[0] - count == 1


def test_lora_strengths_are_swept_for_the_whole_story_and_the_swept_story_carries_its_lora(
    tmp_path, tiny_model_dir
):
    from harness.config.story import load_story
    from harness.render.run import render_story
    from harness.sweep.outputs import read_table

    story = two_panels_with_lora(tmp_path, tiny_model_dir)
    out = tmp_path / "out"
    assert main(["sweep", str(story), "--seeds", "1", "--panels", "1", "--scales", "-1.5", "--out", str(out),
                 "--quiet", "--min-consistency", "-1"]) == 1  # fmt: skip
    table = read_table(out)
    assert sorted(table["scale"].unique()) == [-1.5, 1.0]
    assert len(table) == 2 * (2 + 1)  # per strength: both panels at their seed, one more seed for panel 1
    chosen = table.query("chosen").set_index("panel")
    assert chosen["scale"].nunique() == 1  # one strength for the whole story
    swept = load_story(out / "story.swept.yaml")
    assert swept.story.lora.scale == chosen["scale"].iloc[0]
    assert swept.lora_path == out / "lora" / "style.safetensors"
    assert swept.lora_path.read_bytes() == (tmp_path / "s" / "style.safetensors").read_bytes()
    result = render_story(swept, tmp_path / "run", progress=False)
    for p in (1, 2):
        np.testing.assert_array_equal(
            pixels(result.out / f"images/{p:02d}.png"), pixels(out / chosen.loc[p, "png"])
        )
    # the pick page can choose the other strength for the whole story, and saves a valid story
    from harness.sweep.app import Picks

    picks = Picks(out)
    other = next(s for s in picks.scales if s != picks.chosen_scale)
    pick = picks.default_pick(other)
    assert {picks.by_id(other, cid).scale for cid in pick.values()} == {other}
    assert f"LoRA ×{other:g}" in picks.summary(other, pick)
    picked = load_story(picks.save(other, pick))
    assert picked.story.lora.scale == other and picked.lora_path == swept.lora_path


def test_previews_keep_the_best_and_report_how_well_they_rank(tmp_path, tiny_model_dir):
    from harness.sweep.outputs import read_table

    data = three_panels()
    data["panel_count"], data["panels"] = 2, data["panels"][:2]
    data["sampling"]["steps"] = 4
    story = tmp_path / "story.yaml"
    story.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    args = ["sweep", str(story), "--seeds", "3", "--panels", "1", "--preview-steps", "2", "--keep", "2"]
    assert main([*args, "--out", str(out), "--quiet"]) == 1
    table = read_table(out)
    previews, full = table.query("steps == 2"), table.query("steps == 4")
    assert sorted(previews["rank"]) == [0, 1, 2, 3]  # every seed of panel 1 previewed
    kept = set(full.query("panel == 1 and rank > 0")["rank"])
    best = set(previews.query("rank > 0").sort_values("aesthetic", ascending=False)["rank"][:2])
    assert kept == best
    assert table.query("chosen")["steps"].eq(4).all()  # a preview is never the answer
    report = json.loads((out / "report.json").read_text())
    assert -1.0 <= report["preview_rank_correlation"] <= 1.0


def test_a_story_that_trains_its_lora_is_swept_with_the_trained_file(tmp_path, tiny_model_dir):
    from harness.config.story import load_story
    from harness.render.run import render_story
    from harness.sweep.outputs import read_table
    from tests.train_helpers import tiny_config

    config = tiny_config(tmp_path)
    data = three_panels(lora={"train": config.name, "scale": 1.0})
    data["panel_count"], data["panels"] = 2, data["panels"][:2]
    story = tmp_path / "story.yaml"
    story.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["sweep", str(story), "--seeds", "1", "--panels", "1", "--out", str(out), "--quiet"]) == 1
    swept = load_story(out / "story.swept.yaml")
    assert swept.story.lora.train is None and swept.lora_path.parent == out / "lora"
    table = read_table(out)
    assert table["lora_sha256"].nunique() == 1 and isinstance(table["lora_sha256"][0], str)
    chosen = table.query("chosen").set_index("panel")
    result = render_story(swept, tmp_path / "run", panels="1", progress=False)
    np.testing.assert_array_equal(pixels(result.out / "images/01.png"), pixels(out / chosen.loc[1, "png"]))
