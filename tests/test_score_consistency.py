"""Story consistency (CLIP-I), prompt alignment (CLIP-T), order invariance, and the scorer registry."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.render.pngmeta import save_png
from harness.score import registry
from harness.score.api import score_run
from harness.score.registry import MetricResult, Scorer
from tests.score_fixtures import noise_image, tiny_config, write_panels

PROMPTS = [f"卡通，一个可爱的灰色小猫咪，第{i}幅" for i in range(1, 9)]


def test_identical_panels_are_perfectly_consistent(tmp_path):
    write_panels(tmp_path, [noise_image(7)] * 8)
    run = score_run(tmp_path, config=tiny_config(scorers=["consistency"]))
    m = run.metrics["consistency"]
    assert m.summary["clip_i"] == pytest.approx(1.0, abs=1e-6)
    assert [p["consistency"] for p in m.per_panel] == [pytest.approx(1.0, abs=1e-6)] * 8
    assert m.summary["outliers"] == []


def test_the_odd_panel_out_is_flagged(tmp_path):
    from PIL import Image

    images = [noise_image(7)] * 8
    images[4] = Image.new("RGB", (48, 48), (250, 250, 250))
    write_panels(tmp_path, images)
    run = score_run(tmp_path, config=tiny_config(scorers=["consistency"], outlier_margin=0.0))
    assert run.metrics["consistency"].summary["outliers"] == [5]
    assert "panel 5 is an outlier" in run.metrics["consistency"].notes[0]


def _story_folder(folder, order):
    """Eight different panels with their prompts embedded, written in the given file order."""
    folder.mkdir()
    for name_pos, panel in enumerate(order):
        save_png(
            noise_image(panel),
            folder / f"{name_pos + 1:02d}.png",
            {"prompt": PROMPTS[panel], "panel": panel + 1},
        )
    return folder


def test_shuffling_panels_leaves_story_scores_unchanged(tmp_path):
    order = [3, 0, 7, 5, 1, 6, 2, 4]
    config = tiny_config(threshold=0.0)
    a = score_run(_story_folder(tmp_path / "a", list(range(8))), config=config)
    b = score_run(_story_folder(tmp_path / "b", order), config=config)
    for key in ("aesthetic_mean", "clip_i", "clip_t_mean"):
        assert a.metrics and b.metrics
        sa = {k: v for m in a.metrics.values() for k, v in m.summary.items()}
        sb = {k: v for m in b.metrics.values() for k, v in m.summary.items()}
        assert sa[key] == pytest.approx(sb[key], abs=1e-6), key
    # and per panel the numbers travel with the image
    for pos, panel in enumerate(order):
        assert b.metrics["alignment"].per_panel[pos]["clip_t"] == pytest.approx(
            a.metrics["alignment"].per_panel[panel]["clip_t"], abs=1e-6
        )
        assert b.prompts[pos] == PROMPTS[panel]


def test_alignment_takes_prompts_from_the_story(tmp_path, write_story):
    from tests.conftest import small_story

    story = write_story(small_story())
    write_panels(tmp_path / "imgs", [noise_image(i) for i in range(8)])
    run = score_run(tmp_path / "imgs", story=story, config=tiny_config(scorers=["alignment"]))
    assert run.prompts[0].startswith("卡通，一个可爱的灰色小猫咪")
    assert all(
        isinstance(p["clip_t"], float) and -1 <= p["clip_t"] <= 1 for p in run.metrics["alignment"].per_panel
    )
    # without a story or embedded prompts, there is nothing to align with: said so
    run = score_run(tmp_path / "imgs", config=tiny_config(scorers=["alignment"]))
    assert run.metrics["alignment"].summary["clip_t_mean"] is None
    assert "no prompt known" in run.metrics["alignment"].notes[0]


def test_a_new_metric_plugs_in_by_name(tmp_path):
    import numpy as np

    @registry.register("brightness")
    class Brightness(Scorer):
        def load(self) -> None:
            pass

        def score(self, ctx):
            values = [float(np.asarray(p.image).mean() / 255) for p in ctx.panels]
            return MetricResult(
                self.name,
                [],
                [{"brightness": v} for v in values],
                {"brightness_mean": sum(values) / len(values)},
            )

    try:
        write_panels(tmp_path, [noise_image(i) for i in range(8)])
        run = score_run(tmp_path, config=tiny_config(scorers=["brightness"]))
        assert 0.4 < run.metrics["brightness"].summary["brightness_mean"] < 0.6
        from harness.score.report import format_table

        assert "brightness" in format_table(run)
        with pytest.raises(ValueError, match="already registered"):
            registry.register("brightness")(Brightness)
    finally:
        registry._REGISTERED.pop("brightness", None)


def test_unknown_names_get_suggestions():
    with pytest.raises(ValueError, match="did you mean 'consistency'"):
        registry.check_names(["consistancy"])
    with pytest.raises(HarnessError, match="did you mean 'tiny-clip'"):
        from harness.models.scoring_registry import lookup

        lookup("tiny-clp", "open_clip")
    with pytest.raises(HarnessError, match="is a aesthetic model, not open_clip"):
        lookup("tiny-aesthetic", "open_clip")
