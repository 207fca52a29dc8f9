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


def _copy(swept, tmp_path) -> Path:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(swept, out)
    return out


def test_the_gate_threshold_is_the_scoring_configs_not_the_reports(swept, tmp_path):
    import json

    from harness.config.scoring import ScoringConfig
    from harness.sweep.app import Picks

    out = _copy(swept, tmp_path)
    report = json.loads((out / "report.json").read_text())
    (out / "report.json").write_text(json.dumps({**report, "threshold": -1}))
    picks = Picks(out)
    assert picks.threshold == ScoringConfig().threshold
    assert "gate (mean >= 6): INVALID" in picks.summary(picks.chosen_scale, picks.chosen)
    low = Picks(out, ScoringConfig(threshold=-1.0))  # the config the sweep ran with says so
    assert "gate (mean >= -1): VALID" in low.summary(low.chosen_scale, low.chosen)


def _drop_key(report):
    del report["after"]


def _wrong_type(report):
    report["swept_panels"] = "1,2"


def _bad_panel(report):
    report["panels"][0]["panel"] = [1]


@pytest.mark.parametrize("damage", [_drop_key, _wrong_type, _bad_panel])
def test_a_damaged_report_is_one_line_not_a_traceback(swept, tmp_path, damage):
    import json

    from harness.errors import HarnessError
    from harness.sweep.app import Picks

    out = _copy(swept, tmp_path)
    report = json.loads((out / "report.json").read_text())
    damage(report)
    (out / "report.json").write_text(json.dumps(report))
    with pytest.raises(HarnessError, match="report.json or candidates.csv is damaged") as e:
        Picks(out)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("damage", ["quote", "column"])
def test_a_damaged_table_exits_2_with_one_line(swept, tmp_path, capsys, damage):
    from harness.cli import main

    out = _copy(swept, tmp_path)
    text = (out / "candidates.csv").read_text()
    if damage == "quote":
        text += '"p01-unterminated,1,0\n'
    else:
        head, *lines = text.splitlines()
        text = "\n".join([",".join(head.split(",")[1:]), *(",".join(x.split(",")[1:]) for x in lines)])
    (out / "candidates.csv").write_text(text)
    assert main(["sweep", "serve", str(out), "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "candidates.csv is damaged" in err, err


def test_the_page_lists_each_planned_candidate_once_and_nothing_else(swept, tmp_path):
    """Duplicate ids in the table are shown once; candidates planted in the folder and listed in
    the table (an unswept panel's extra seed, an id no plan makes) are not shown."""
    import json
    import shutil

    from harness.hashing import sha256_file
    from harness.safeio import read_json
    from harness.sweep.app import Picks
    from harness.sweep.plan import Candidate, derived_seeds

    out = _copy(swept, tmp_path)
    plain = Picks(out)
    sha = read_json(out / "sweep.json")["story_sha256"]
    donor = plain.options[plain.chosen_scale][1][0]
    row = json.loads((out / "candidates" / f"{donor.id}.json").read_text())
    own = plain.template.story.panels[2].seed  # panel 3 is not swept: its seed is the story's
    planted = Candidate(3, 1, derived_seeds(sha, 3, own, 1)[0], None, plain.steps, sha)
    lines = (out / "candidates.csv").read_text().splitlines()
    head = lines[0].split(",")
    extra = []
    for cid, panel, rank, seed in ((planted.id, 3, 1, planted.seed), ("p01-0123456789abcdef", 1, 1, 7)):
        shutil.copyfile(out / "candidates" / f"{donor.id}.png", out / "candidates" / f"{cid}.png")
        forged = {**row, "id": cid, "panel": panel, "rank": rank, "seed": seed, "aesthetic": 50.0}
        forged["png"] = f"candidates/{cid}.png"
        forged["png_sha256"] = sha256_file(out / "candidates" / f"{cid}.png")
        (out / "candidates" / f"{cid}.json").write_text(json.dumps(forged))
        extra.append(",".join("" if forged.get(k) is None else str(forged.get(k, "")) for k in head))
    (out / "candidates.csv").write_text("\n".join([*lines, *lines[1:], *extra]) + "\n")
    picks = Picks(out)
    assert set(picks.options) == set(plain.options)
    for scale, per_panel in picks.options.items():
        assert sorted(per_panel) == sorted(plain.options[scale])
        for p, opts in per_panel.items():
            assert [o.id for o in opts] == [o.id for o in plain.options[scale][p]]
            assert all(o.aesthetic < 50.0 for o in opts)
