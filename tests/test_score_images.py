"""Loading panels: what the competition's evaluate() chokes on is reported, converted or refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.errors import HarnessError
from harness.score.api import score_run
from harness.score.images import load_images
from tests.score_fixtures import noise_image, tiny_config, write_panels


def test_odd_files_are_converted_or_skipped_with_reasons(tmp_path):
    rgb = noise_image(1)
    rgb.save(tmp_path / "01_rgb.png")
    rgb.convert("L").save(tmp_path / "02_gray.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "03_rgba.png")
    rgb.convert("P").save(tmp_path / "04_palette.png")
    Image.fromarray((np.arange(48 * 48).reshape(48, 48) * 20).astype(np.uint16)).save(
        tmp_path / "05_16bit.png"
    )
    rgb.save(tmp_path / "06.jpg", quality=90)
    (tmp_path / "07_notes.txt").write_text("not an image")
    data = (tmp_path / "01_rgb.png").read_bytes()
    (tmp_path / "08_truncated.png").write_bytes(data[: len(data) // 2])
    noise_image(2, size=200).save(tmp_path / "09_huge.png")
    (tmp_path / "subdir").mkdir()

    loaded = load_images(tmp_path, max_pixels=100 * 100)

    assert [p.name for p in loaded.panels] == [
        "01_rgb.png",
        "02_gray.png",
        "03_rgba.png",
        "04_palette.png",
        "05_16bit.png",
        "06.jpg",
    ]
    assert all(p.image.mode == "RGB" for p in loaded.panels)
    assert [p.mode for p in loaded.panels] == ["RGB", "L", "RGBA", "P", "I;16", "RGB"]
    # Converted exactly as the competition's CLIPProcessor converts (PIL convert("RGB")).
    assert np.array_equal(np.asarray(loaded.panels[2].image), np.asarray(rgba.convert("RGB")))
    assert any("clips values above 255" in n for n in loaded.panels[4].notes)
    assert any("alpha channel dropped" in n for n in loaded.panels[2].notes)
    reasons = {s.path.name: s.reason for s in loaded.skipped}
    assert reasons["07_notes.txt"] == "not an image"
    assert "truncated" in reasons["08_truncated.png"]
    assert "over the limit of 10000" in reasons["09_huge.png"]
    assert "subdir" not in reasons
    # Plain images carry no harness parameters: said so per panel.
    assert any("no reproducibility check possible" in n for n in loaded.panels[0].notes)


def test_a_run_folder_is_scored_from_its_images_subfolder(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    write_panels(tmp_path / "images", [noise_image(3)])
    assert load_images(tmp_path, max_pixels=10**6).folder == tmp_path / "images"


def test_no_usable_image_is_unusable_input(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(HarnessError, match="no usable images.*a.txt: not an image"):
        score_run(tmp_path, config=tiny_config())
    with pytest.raises(HarnessError, match="no such folder"):
        score_run(tmp_path / "missing", config=tiny_config())


def test_fewer_panels_than_required_is_invalid_with_the_count(tmp_path):
    write_panels(tmp_path, [noise_image(i) for i in range(3)])
    run = score_run(tmp_path, config=tiny_config(scorers=["aesthetic"], threshold=0.0))
    assert not run.valid
    assert run.exit_code == 1
    assert "only 3 usable panels, 8 required" in " ".join(run.metrics["aesthetic"].notes)


def test_score_never_follows_a_bundles_symlinked_images_folder_or_panel(tmp_path, capsys):
    """`harness score BUNDLE` with images/ linked to a folder outside the bundle: exit 2 and one
    line naming images/, nothing outside read (tripwire) and nothing anywhere written."""
    from harness.cli import main
    from tests.hostile_helpers import snapshot, tripped, tripwire

    outside = tmp_path / "outside"
    write_panels(outside, [noise_image(i) for i in range(8)])
    wires = sorted(outside.iterdir())
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    (bundle / "images").symlink_to(outside, target_is_directory=True)
    for w in wires:
        tripwire(w)
    before = snapshot(tmp_path)

    assert main(["score", str(bundle), "--no-reproduce"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "images: is a symlink" in err, err
    assert not any(tripped(w) for w in wires)
    assert snapshot(tmp_path) == before

    # a real images/ whose panel files are links outside: skipped unread, never scored
    (bundle / "images").unlink()
    (bundle / "images").mkdir()
    for w in wires:
        (bundle / "images" / w.name).symlink_to(w)
        tripwire(w)
    loaded = load_images(bundle, max_pixels=1 << 20)
    assert loaded.panels == []
    assert {s.reason for s in loaded.skipped} == {"not a regular file"} and len(loaded.skipped) == 8
    assert not any(tripped(w) for w in wires)
