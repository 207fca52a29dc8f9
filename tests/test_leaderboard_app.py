"""The Gradio leaderboard, launched on 127.0.0.1: gradio_client sees the ranked rows, a headless
Debian Chromium sees the table and a gallery image while every request it makes goes to the
board itself, and no URL reaches outside the app's files. Hostile bundles and viewers:
tests/test_hostile_leaderboard.py."""

from __future__ import annotations

import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from harness.leaderboard import db, synthetic
from harness.leaderboard.build import build_index, default_db
from harness.leaderboard.synthetic import Spec
from tests.bundle_helpers import copy_bundle
from tests.score_fixtures import tiny_config

pytest_plugins = ["tests.bundle_fixtures"]  # demo_bundle: a real tiny bundle, rendered once

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
def served(tmp_path_factory, demo_bundle):
    """A submissions root (synthetic bundles + one real bundle the judges verified), indexed and served."""
    from harness.bundle.batch import verify_all
    from harness.leaderboard.app import launch

    root = tmp_path_factory.mktemp("lb") / "submissions"
    real = copy_bundle(demo_bundle, root)
    # The judges verify the real bundle with the tiny scorers (their random aesthetic predictor
    # scores about 0, so this test's gate is below that): re-scored, re-rendered, passed.
    scoring = tiny_config(scorers=["aesthetic", "consistency"], reproduce=True).model_copy(
        update={"threshold": -1.0}
    )
    [row] = verify_all(root, scoring=scoring)
    assert row.verdict["verdict"] == "pass", row.verdict["problems"]
    for spec in [  # then bundles the judges have not verified yet (their own claimed scores)
        Spec("alpha", "s1", 7.1, title="长安夜游"),
        Spec("bravo", "s1", 6.4),
        Spec("charlie", "s1", 5.5),
        Spec("delta", "s1", None),
    ]:
        synthetic.write(root, spec)
    build_index(root, progress=False)
    demo, url = launch(default_db(root), root, port=_free_port(), block=False)
    yield root, real, url
    demo.close()


def test_gradio_client_gets_the_rows_in_ranked_order(served):
    from gradio_client import Client

    root, real, url = served
    client = Client(url, verbose=False)
    got = client.predict("", False, 0.0, api_name="/rows")
    conn = db.connect_read_only(default_db(root))
    expected = [r["path"] for r in db.query(conn)]
    conn.close()
    assert [r["folder"] for r in got] == expected
    real_key = real.relative_to(root).as_posix()
    assert expected == ["alpha/s1", "bravo/s1", real_key, "charlie/s1", "delta/s1"]
    assert [r["rank"] for r in got] == [1, 2, 3, 4, 5]
    by = {r["folder"]: r for r in got}
    assert by[real_key]["source"] == "judges" and by[real_key]["reproducibility"] == "exact"
    assert by[real_key]["verdict"] == "pass" and by[real_key]["status"] == "valid"
    assert by["charlie/s1"]["status"] == "invalid" and "below the gate 6" in by["charlie/s1"]["reason"]
    assert by["delta/s1"]["status"] == "unscored"

    assert [r["folder"] for r in client.predict("", True, 0.0, api_name="/rows")] == expected[:3]
    assert [r["folder"] for r in client.predict("长安", False, 0.0, api_name="/rows")] == ["alpha/s1"]

    gallery, info, panels = client.predict(real_key, api_name="/detail")
    assert len(gallery) == 8 and all(Path(item["image"]).stat().st_size > 0 for item in gallery)
    assert "valid" in info and len(panels["data"]) == 8


def _status(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code


def test_no_url_reaches_files_outside_the_app(served, tmp_path):
    root, real, url = served
    secret = tmp_path / "secret.txt"
    secret.write_text("secret", encoding="utf-8")
    inside = real / "images" / "01.png"
    for target in [
        str(secret),
        "/etc/passwd",
        str(inside),
        f"{root}/../{secret.name}",
        str(default_db(root)),
    ]:
        quoted = urllib.parse.quote(target)
        assert _status(f"{url}gradio_api/file={quoted}") in (403, 404), target
    # the gallery's copies are served, and they are re-encoded PNGs, not the participant's bytes
    from gradio_client import Client

    gallery, _, _ = Client(url, verbose=False).predict(real.relative_to(root).as_posix(), api_name="/detail")
    assert Path(gallery[0]["image"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_headless_chromium_sees_the_table_and_a_gallery_image(served, tmp_path):
    if not Path(CHROMIUM).is_file():
        if os.environ.get("HARNESS_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is not installed (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    root, real, url = served
    shot = tmp_path / "leaderboard.png"
    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.on("request", lambda r: requested.append(r.url))
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            table = page.locator("#leaderboard-table")
            table.get_by_text("alpha", exact=True).first.wait_for(timeout=60_000)
            visible_rows = page.evaluate(
                """() => Array.from(document.querySelectorAll('#leaderboard-table tbody tr'))
                    .filter(r => r.getBoundingClientRect().height > 0
                                 && getComputedStyle(r).visibility !== 'hidden')
                    .map(r => Array.from(r.querySelectorAll('td')).map(td => td.innerText.trim()))"""
            )
            folders = [cells[-1] for cells in visible_rows if cells and "/" in cells[-1]]
            assert folders[-5:] == [
                "alpha/s1",
                "bravo/s1",
                real.relative_to(root).as_posix(),
                "charlie/s1",
                "delta/s1",
            ]
            assert "INVALID" in visible_rows[-2] and "unscored" in visible_rows[-1]
            img = page.locator("#panels img").first
            img.wait_for(state="visible", timeout=60_000)
            page.wait_for_function(
                "() => { const i = document.querySelector('#panels img');"
                " return i && i.complete && i.naturalWidth > 0 }",
                timeout=60_000,
            )
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    # no font, script or analytics host: the viewer's browser talks to the board only
    hosts = {urllib.parse.urlsplit(u).hostname for u in requested if not u.startswith(("data:", "blob:"))}
    assert requested and hosts == {"127.0.0.1"}, sorted(set(requested))
    keep = os.environ.get("HARNESS_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
