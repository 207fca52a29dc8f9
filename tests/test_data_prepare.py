"""`harness data prepare`: bad files are reported and skipped, never a crash; empty results fail."""

from __future__ import annotations

import json

from PIL import Image
from train_helpers import tiny_config

from harness.train.cli import main


def _folder(tmp_path):
    d = tmp_path / "raw"
    d.mkdir()
    for i, size in enumerate([(96, 80), (80, 96), (100, 100)]):
        Image.new("RGB", size, (i * 60, 10, 200)).save(d / f"ok{i}.png")
        (d / f"ok{i}.txt").write_text(f"二次元 {i}", encoding="utf-8")
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (d / "corrupt.txt").write_text("x", encoding="utf-8")
    full = d / "full.png"
    Image.new("RGB", (90, 90), (1, 2, 3)).save(full)
    (d / "truncated.png").write_bytes(full.read_bytes()[:-40])
    (d / "truncated.txt").write_text("x", encoding="utf-8")
    full.unlink()
    Image.new("RGB", (20, 20)).save(d / "tiny.png")
    (d / "tiny.txt").write_text("x", encoding="utf-8")
    Image.new("RGB", (300, 64)).save(d / "wide.png")
    (d / "wide.txt").write_text("x", encoding="utf-8")
    (d / "notes.txt").write_text("just text", encoding="utf-8")
    Image.new("RGB", (96, 96)).save(d / "uncaptioned.png")
    return d


def test_prepare_reports_each_bad_file_and_keeps_the_valid_ones(tmp_path, capsys):
    raw = _folder(tmp_path)
    cfg = tiny_config(
        tmp_path,
        data={
            "source": "folder",
            "path": str(raw),
            "min_width": 64,
            "min_height": 64,
            "min_aspect": 0.5,
            "max_aspect": 2.0,
            "prepared": str(tmp_path / "prep"),
        },
    )
    assert main(["data", "prepare", str(cfg)]) == 0
    report = json.loads((tmp_path / "prep" / "report.json").read_text(encoding="utf-8"))
    reasons = {s["file"]: s["reason"] for s in report["skipped"]}
    assert report["kept"] == 3
    assert set(reasons) == {
        "corrupt.jpg",
        "truncated.png",
        "tiny.png",
        "wide.png",
        "notes.txt",
        "uncaptioned.png",
    }
    assert "not an image" in reasons["corrupt.jpg"] or "unreadable" in reasons["corrupt.jpg"]
    assert "unreadable" in reasons["truncated.png"]
    assert "min_width" in reasons["tiny.png"]
    assert "aspect" in reasons["wide.png"]
    assert "not an image" in reasons["notes.txt"]
    assert "no caption" in reasons["uncaptioned.png"]
    rows = (tmp_path / "prep" / "metadata.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "file_name,text" and len(rows) == 4
    assert sorted(p.name for p in (tmp_path / "prep" / "images").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
    ]
    out = capsys.readouterr().out
    assert "kept 3 of" in out and "truncated.png" in out


def test_filters_that_empty_the_dataset_fail_with_counts_and_write_nothing(tmp_path, capsys):
    raw = _folder(tmp_path)
    cfg = tiny_config(
        tmp_path,
        data={"source": "folder", "path": str(raw), "min_width": 4096, "prepared": str(tmp_path / "prep")},
    )
    assert main(["data", "prepare", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "no training images left" in err and "narrower than min_width 4096" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "prep").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prep")]


def test_metadata_rows_naming_missing_images_are_an_error(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    Image.new("RGB", (64, 64)).save(raw / "a.png")
    (raw / "metadata.csv").write_text("file_name,text\na.png,二次元\nb.png,二次元\n", encoding="utf-8")
    cfg = tiny_config(tmp_path, data={"source": "folder", "path": str(raw), "prepared": str(tmp_path / "p")})
    assert main(["data", "prepare", str(cfg)]) == 2
    assert "b.png" in capsys.readouterr().err


def test_metadata_csv_captions_as_in_the_baseline(tmp_path):
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(raw / "sub" / "a.png")
    (raw / "metadata.csv").write_text('file_name,text\nsub/a.png,"一只猫, 卡通"\n', encoding="utf-8")
    cfg = tiny_config(tmp_path, data={"source": "folder", "path": str(raw), "prepared": str(tmp_path / "p")})
    assert main(["data", "prepare", str(cfg)]) == 0
    rows = (tmp_path / "p" / "metadata.csv").read_text(encoding="utf-8").splitlines()
    assert rows[1] == 'images/000000.png,"一只猫, 卡通"'


def test_empty_folder_is_refused(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    cfg = tiny_config(tmp_path, data={"source": "folder", "path": str(raw), "prepared": str(tmp_path / "p")})
    assert main(["data", "prepare", str(cfg)]) == 2
    assert "no training images left of 0 candidates" in capsys.readouterr().err
