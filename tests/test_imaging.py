"""Untrusted images: each stage's pixel cap holds whatever other stage opened an image first."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image

from harness.bundle.content import MAX_IMAGE_PIXELS as BUNDLE_CAP
from harness.bundle.content import check_image as check_bundle_image
from harness.data.images import MAX_PIXELS as DATA_CAP
from harness.data.images import ImageCheck, check_image
from harness.errors import HarnessError
from harness.imaging import GUARD_PIXELS, open_untrusted
from harness.render.pngmeta import read_params
from harness.score.images import open_rgb

# 36M pixels: over twice the bundle's 16M cap (where PIL's own guard used to refuse at open once
# the bundle check had lowered it), well under the dataset cap. 1-bit PNGs keep it small on disk.
LARGE = (6000, 6000)
OVER = (16385, 16385)  # just over the dataset cap


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("large")
    out = {}
    for name, size in (("large", LARGE), ("over", OVER)):
        Image.new("1", size).save(folder / f"{name}.png")
        out[name] = folder / f"{name}.png"
    Image.new("RGB", (8, 8)).save(folder / "small.png")
    out["small"] = folder / "small.png"
    return out


def _bundle_check(p: dict[str, Path]) -> None:
    check_bundle_image(p["large"], (64, 64))


def _read_params(p: dict[str, Path]) -> None:
    with pytest.raises(HarnessError, match="no harness parameters embedded"):
        read_params(p["small"])


def _score_open(p: dict[str, Path]) -> None:
    open_rgb(p["small"], 10**6)


BEFORE = {"bundle image check": _bundle_check, "read_params": _read_params, "score open": _score_open}


@pytest.mark.parametrize(
    "before",
    [(), ("bundle image check",), ("read_params",), ("bundle image check", "read_params"),
     ("read_params", "score open", "bundle image check")],
    ids=lambda b: " then ".join(b) or "nothing",
)  # fmt: skip
def test_the_dataset_check_does_not_depend_on_what_opened_an_image_before(pngs, before):
    for name in before:
        BEFORE[name](pngs)
    assert check_image(pngs["large"]) == ImageCheck(True, *LARGE, "PNG")
    over = check_image(pngs["over"])
    assert not over.ok and over.reason == f"16385x16385 = {16385**2} pixels is over the limit of {DATA_CAP}"
    assert Image.MAX_IMAGE_PIXELS == GUARD_PIXELS  # nobody lowered PIL's guard on the way


def test_each_stage_keeps_its_own_cap_on_the_same_file(pngs):
    problems, _ = check_bundle_image(pngs["large"])
    assert problems == [f"6000x6000 = 36000000 pixels is over the limit of {BUNDLE_CAP}"]
    with pytest.raises(HarnessError, match="over the limit of 1000000"):
        open_rgb(pngs["large"], 10**6)
    assert check_image(pngs["large"]).ok
    with pytest.raises(ValueError, match="over PIL's guard"):  # a cap PIL would pre-empt
        with open_untrusted(pngs["small"], GUARD_PIXELS + 1):
            pass


def test_checks_from_several_threads_agree(pngs):
    """The leaderboard opens panels from several threads: no per-call state to race on."""
    results: list[ImageCheck] = []

    def work():
        for _ in range(2):
            check_bundle_image(pngs["large"])
            results.append(check_image(pngs["large"]))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [ImageCheck(True, *LARGE, "PNG")] * 6


def test_postscript_tiff_and_bmp_named_png_are_not_decoded(tmp_path):
    """PIL picks its decoder from the bytes: an EPS named .png would make it run Ghostscript on
    the team's PostScript. Only PNG, JPEG and WebP are decoded, whatever the name."""
    import io

    from PIL import EpsImagePlugin, Image

    from harness.errors import HarnessError
    from harness.imaging import open_untrusted

    marker = tmp_path / "ran"
    eps = (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n"
        + f"({marker}) (w) file closefile\n".encode()
        + b"0 0 8 8 rectfill\nshowpage\n%%EOF\n"
    )
    tiff, bmp = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiff, "TIFF")
    Image.new("RGB", (8, 8)).save(bmp, "BMP")  # another format PIL reads, named .png
    for name, data in (("eps.png", eps), ("tiff.png", tiff.getvalue()), ("bmp.png", bmp.getvalue())):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(HarnessError, match="not an image"):
            with open_untrusted(tmp_path / name, 64 * 64) as im:
                im.load()
    assert not marker.exists()
    assert EpsImagePlugin.gs_binary is False  # no other code path in the process finds gs either
