"""`harness sweep serve DIR`: the pick page's numbers are the sweep's, a pick saves a story that
validates and renders the picked pixels, and a headless Debian Chromium drives the page on
127.0.0.1: it overrides a pick, sees the story mean and gate change, and saves the story."""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import small_story

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished sweep of a 3-panel demo story (64x64, 2 steps): panels 1 and 2, 2 seeds each."""
    from harness.sweep.plan import SweepOptions
    from harness.sweep.run import run_sweep

    folder = tmp_path_factory.mktemp("pick")
    data = small_story()
    data["sampling"] = {**data["sampling"], "steps": 2}
    data["panel_count"], data["panels"] = 3, data["panels"][:3]
    story = folder / "story.yaml"
    story.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    out = folder / "out"
    run_sweep(story, out, SweepOptions(seeds=2, panels="1,2", progress=False, min_consistency=-1.0))
    return out


def test_the_page_shows_the_sweeps_numbers_and_saves_a_pick_that_renders_its_pixels(swept, tmp_path):
    import json

    from harness.config.story import load_story
    from harness.render.run import render_story
    from harness.sweep.app import Picks

    picks = Picks(swept)
    report = json.loads((swept / "report.json").read_text())
    scale = picks.chosen_scale
    assert f"story mean aesthetic {report['after']['aesthetic_mean']:.4f}" in picks.summary(
        scale, picks.chosen
    )
    ranked = picks.options[scale][1]
    assert [o.aesthetic for o in ranked] == sorted((o.aesthetic for o in ranked), reverse=True)
    other = next(o for o in ranked if o.id != picks.chosen[1])
    path = picks.save(scale, {**picks.chosen, 1: other.id})
    saved = load_story(path)
    assert saved.story.panels[0].seed == other.seed
    result = render_story(saved, tmp_path / "run", panels="1", progress=False)
    with (
        Image.open(result.out / "images/01.png") as a,
        Image.open(swept / "candidates" / f"{other.id}.png") as b,
    ):
        np.testing.assert_array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def test_the_page_refuses_a_folder_that_is_not_a_sweep(tmp_path):
    from harness.errors import HarnessError
    from harness.sweep.app import Picks

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(HarnessError, match="not a sweep folder"):
        Picks(tmp_path)


def test_a_headless_chromium_overrides_a_pick_sees_the_gate_and_saves_the_story(swept, tmp_path):
    if not Path(CHROMIUM).is_file():
        if os.environ.get("HARNESS_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is not installed (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from harness.config.story import load_story
    from harness.sweep.app import Picks, serve

    picks = Picks(swept)
    scale = picks.chosen_scale
    ranked = picks.options[scale][2]
    other = next(o for o in ranked if o.id != picks.chosen[2])
    expected = picks.summary(scale, {**picks.chosen, 2: other.id})
    (swept / "story.picked.yaml").unlink(missing_ok=True)
    demo, url = serve(swept, port=_free_port(), block=False)
    requested: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.on("request", lambda r: requested.append(r.url))
                page.goto(url, wait_until="domcontentloaded", timeout=60_000)
                summary = page.locator("#sweep-summary textarea")
                summary.wait_for(timeout=60_000)
                assert "gate (mean >= 6): INVALID" in summary.input_value()
                page.locator("#gallery-1 img").first.wait_for(state="visible", timeout=60_000)
                label = Picks.label(other, ranked.index(other) + 1)
                page.locator("#pick-2 label", has_text=label).click()
                page.wait_for_function(
                    "t => document.querySelector('#sweep-summary textarea').value === t",
                    arg=expected,
                    timeout=30_000,
                )
                page.locator("#save").click()
                page.wait_for_function(
                    "() => document.querySelector('#save-status textarea').value.startsWith('saved')",
                    timeout=30_000,
                )
                page.screenshot(path=str(tmp_path / "sweep-pick.png"), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()
    saved = load_story(swept / "story.picked.yaml").story
    assert saved.panels[1].seed == other.seed
    assert saved.panels[0].seed == next(o.seed for o in picks.options[scale][1] if o.id == picks.chosen[1])
    hosts = {urllib.parse.urlsplit(u).hostname for u in requested if not u.startswith(("data:", "blob:"))}
    assert requested and hosts == {"127.0.0.1"}, sorted(set(requested))
    keep = os.environ.get("HARNESS_SCREENSHOTS")
    if keep:
        import shutil

        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "sweep-pick.png", Path(keep) / "sweep-pick.png")
