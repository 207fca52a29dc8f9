"""Reproducibility: re-render from the embedded parameters and judge exact / reproducible / not."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from harness.config.scoring import Tolerances
from harness.config.story import load_story
from harness.render.pngmeta import read_params, save_png
from harness.render.run import render_story
from harness.score.api import score_run
from harness.score.cli import add_parsers
from harness.score.reproduce import judge
from tests.conftest import small_story
from tests.score_fixtures import tiny_config


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("repro")
    import yaml

    story = root / "story.yaml"
    story.write_text(yaml.safe_dump(small_story(), allow_unicode=True, sort_keys=False), encoding="utf-8")
    render_story(load_story(story), root / "run", progress=False)
    return root / "run"


def _tampered(rendered, tmp_path):
    """Three panels: untouched, a few pixels changed by 10, and an altered embedded seed."""
    folder = tmp_path / "panels"
    folder.mkdir()
    shutil.copy(rendered / "images" / "01.png", folder / "01.png")

    params = read_params(rendered / "images" / "02.png")
    pixels = np.asarray(Image.open(rendered / "images" / "02.png").convert("RGB")).copy()
    pixels[10, 10:15] = (
        np.clip(pixels[10, 10:15].astype(int) + 10, 0, 255)
        if pixels[10, 10].max() < 200
        else pixels[10, 10:15] - 10
    )
    save_png(Image.fromarray(pixels), folder / "02.png", params)

    params = read_params(rendered / "images" / "03.png")
    image = Image.open(rendered / "images" / "03.png").convert("RGB")
    save_png(image, folder / "03.png", {**params, "seed": params["seed"] + 1000})
    return folder


def test_verdicts_follow_the_tolerances(rendered, tmp_path):
    folder = _tampered(rendered, tmp_path)
    run = score_run(folder, config=tiny_config(scorers=[], reproduce=True, min_panels=3))
    r = run.reproducibility
    assert [p.verdict for p in r.panels] == ["exact", "reproducible", "not reproducible"]
    exact, edited, reseeded = r.panels
    assert (exact.max_abs_diff, exact.psnr) == (0, None) and exact.clip_i == pytest.approx(1.0, abs=1e-6)
    assert edited.max_abs_diff == 10 and edited.psnr > 40
    assert "PSNR" in reseeded.reason
    assert r.verdict == "not reproducible" and run.exit_code == 1

    # The same numbers judged under a stricter tolerance (what --max-abs-diff 5 would give).
    verdict, reason = judge(edited.max_abs_diff, edited.psnr, edited.clip_i, Tolerances(max_abs_diff=5))
    assert verdict == "not reproducible" and "max abs diff 10 > 5" in reason
    assert (
        judge(edited.max_abs_diff, edited.psnr, edited.clip_i, Tolerances(max_abs_diff=10))[0]
        == "reproducible"
    )


def test_cli_scores_a_rendered_run_exactly(rendered, tmp_path, capsys):
    run_copy = tmp_path / "run"
    shutil.copytree(rendered, run_copy)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "score",
            str(run_copy),
            "--aesthetic-model",
            "tiny-aesthetic",
            "--consistency-model",
            "tiny-clip",
            "--alignment-model",
            "tiny-clip-ml",
            "--threshold",
            "-1",
            "--reproduce",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "reproducibility: exact" in out and "VALID" in out
    data = json.loads((run_copy / "scores.json").read_text(encoding="utf-8"))
    assert data["summary"]["reproducibility"] == "exact"
    assert [p["reproducibility"]["verdict"] for p in data["panels"]] == ["exact"] * 8
    assert data["panels"][0]["prompt"].startswith("卡通")  # from the run's story copy
    assert {m[0]["name"] for m in data["models"].values()} == {"tiny-aesthetic", "tiny-clip", "tiny-clip-ml"}
    assert data["exit_code"] == 0
    # a participant's own run: every number rests on the re-render, which is bit-identical here
    assert data["scored_pixels"] == data["summary"]["scored_pixels"] == "re-rendered"
    assert [p["pixels"] for p in data["panels"]] == ["re-rendered"] * 8 and data["submitted"] is None
    assert "scored on the re-rendered pixels" in out


def test_an_edited_panel_is_scored_as_its_rerender_and_the_file_score_is_shown(rendered, tmp_path, capsys):
    """The edit to panel 2 stays within tolerance; its score is the original render's, not the edit's."""
    from harness.score.models import shared_cache
    from harness.score.report import format_table, to_json

    folder = _tampered(rendered, tmp_path)
    config = tiny_config(scorers=["aesthetic"], reproduce=True, min_panels=3, threshold=-10)
    run = score_run(folder, config=config)
    assert run.reproducibility.panels[1].verdict == "reproducible"
    aesthetic = shared_cache(config.device, config.pins).get("aesthetic", "tiny-aesthetic")
    original = Image.open(rendered / "images" / "02.png").convert("RGB")
    edited = Image.open(folder / "02.png").convert("RGB")
    scored = run.metrics["aesthetic"].per_panel[1]["aesthetic"]
    own = run.submitted_metrics["aesthetic"].per_panel[1]["aesthetic"]
    ours, theirs = aesthetic.scores([original, edited], 1)
    assert abs(ours - theirs) > 1e-7  # the edit moves the score
    assert scored == pytest.approx(ours, abs=1e-8) and own == pytest.approx(theirs, abs=1e-8)
    data = to_json(run)
    assert data["scored_pixels"] == "re-rendered"
    assert data["submitted"]["summary"]["scored_pixels"] == "submitted"
    assert "the files themselves score aesthetic mean" in format_table(run)


def test_a_different_model_is_refused(rendered, tmp_path):
    folder = tmp_path / "panels"
    folder.mkdir()
    params = read_params(rendered / "images" / "01.png")
    save_png(
        Image.open(rendered / "images" / "01.png"),
        folder / "01.png",
        {**params, "model": {"ref": "tiny", "sha256": "0" * 64}},
    )
    run = score_run(
        folder, config=tiny_config(scorers=["aesthetic"], reproduce=True, min_panels=1, threshold=-10)
    )
    assert run.reproducibility is None
    assert "refusing to re-render with different weights" in run.repro_error
    assert run.exit_code == 2


def test_panels_without_parameters_are_unchecked_but_scored(rendered, tmp_path):
    folder = tmp_path / "panels"
    folder.mkdir()
    shutil.copy(rendered / "images" / "01.png", folder / "01.png")
    Image.open(rendered / "images" / "02.png").convert("RGB").save(folder / "02.png")  # parameters stripped
    run = score_run(
        folder, config=tiny_config(scorers=["aesthetic"], reproduce=True, min_panels=2, threshold=-10)
    )
    assert [p.verdict for p in run.reproducibility.panels] == ["exact", "unchecked"]
    assert run.reproducibility.verdict == "exact"
    assert len(run.metrics["aesthetic"].per_panel) == 2
    assert run.exit_code == 0
