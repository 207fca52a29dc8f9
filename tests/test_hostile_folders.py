"""Hostile training configs and dataset folders: nothing outside is read, no folder is wiped.

Attacks (issue 13, classes 9 and 11): a training config whose output folder (`data.prepared`,
`--out`) names a folder full of someone's files, the repository, `/`, `.`, `..`, `~`, a file or
a symlink; and a dataset folder holding symlinks (to files, to folders, dangling), hardlinks to
files outside, FIFOs, device files, decompression-bomb PNGs and huge or linked caption files.
Every test snapshots the trees around it and bounds the time: a hang is an attack too.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from train_helpers import tiny_config

from harness.cli import main as harness_main
from harness.data.demo import write_demo_images
from harness.train.cli import main

REPO = Path(__file__).resolve().parents[1]  # only the working folder of subprocesses
SECRET = "id_rsa: the user's private key"


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` as lstat sees it, with file hashes and link targets (no follow).

    Iterative, so that a tree deeper than Python's recursion limit can be snapshotted too."""
    out: dict[str, tuple] = {}
    stack = [Path(root)]
    while stack:
        here = stack.pop()
        for name in os.listdir(here):
            p = here / name
            st = os.lstat(p)
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
                stack.append(p)
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _user_home(root: Path) -> Path:
    """A folder that looks like someone's home: files, a subfolder, a link."""
    home = root / "home"
    (home / "docs").mkdir(parents=True)
    (home / ".bashrc").write_text("export PATH=~/bin:$PATH\n", encoding="utf-8")
    (home / "docs" / "thesis.txt").write_text("three years of work\n", encoding="utf-8")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text(SECRET, encoding="utf-8")
    os.symlink("docs/thesis.txt", home / "latest")
    return home


def _config(tmp_path: Path, prepared) -> Path:
    """A config in its own folder (with its data beside it) whose data.prepared is `prepared`."""
    cfgdir = tmp_path / "project"
    cfgdir.mkdir(exist_ok=True)
    data = write_demo_images(cfgdir / "data", count=3, with_bad=False)
    cfg = tiny_config(cfgdir, images=data, data={"source": "folder", "path": "data", "prepared": prepared})
    return cfg


# --- output folders: the harness replaces only what it made ------------------------------------


@pytest.mark.parametrize(
    "which", ["home", "home-tilde", "dot", "dotdot", "a-file", "under-a-file", "stray-file"]
)
def test_data_prepared_naming_a_folder_the_harness_did_not_make_is_refused(
    tmp_path, capsys, monkeypatch, which
):
    home = _user_home(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    if which == "a-file":
        prepared = str(home / ".bashrc")
    elif which == "under-a-file":
        prepared = str(home / ".bashrc" / "prep")
    elif which == "stray-file":
        # A prepared folder the harness made, into which the user then saved a file of theirs.
        cfg = _config(tmp_path, "prep")
        assert main(["data", "prepare", str(cfg)]) == 0
        (tmp_path / "project" / "prep" / "my-notes.txt").write_text("mine", encoding="utf-8")
        capsys.readouterr()
        prepared = "prep"
    else:
        prepared = {"home": str(home), "home-tilde": "~", "dot": ".", "dotdot": ".."}[which]
    cfg = _config(tmp_path, prepared)
    before = snapshot(tmp_path)
    t0 = time.monotonic()
    assert main(["data", "prepare", str(cfg)]) == 2
    assert time.monotonic() - t0 < 20
    err = _one_line(capsys)
    assert str(cfg) in err and "data.prepared" in err, err
    assert any(
        w in err
        for w in ("not empty and not a prepared dataset", "not a folder", "did not write", "cannot be")
    )
    assert snapshot(tmp_path) == before  # the folder, the config's folder and its parent: untouched


def test_the_filesystem_root_and_a_repository_are_refused(tmp_path, capsys):
    # A checkout stands in for "the repository itself": a regression must not be able to move
    # the real one, so the test never names it.
    repo = tmp_path / "checkout"
    (repo / ".git" / "refs").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    (repo / "README.md").write_text("# harness\n", encoding="utf-8")
    for target in ("/", str(repo)):
        cfg = _config(tmp_path, target)
        root_before = sorted(os.listdir("/"))
        before = snapshot(tmp_path)
        assert main(["data", "prepare", str(cfg)]) == 2
        err = _one_line(capsys)
        assert f"data.prepared: {target}" in err and str(cfg) in err
        assert sorted(os.listdir("/")) == root_before  # not even a staging folder in /
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("points_to", ["empty-folder", "own-prepared-folder"])
def test_data_prepared_as_a_symlink_is_not_written_through(tmp_path, capsys, points_to):
    real = tmp_path / "real"
    if points_to == "empty-folder":
        real.mkdir()
    else:
        assert main(["data", "prepare", str(_config(tmp_path, str(real)))]) == 0
        capsys.readouterr()
    os.symlink(real, tmp_path / "link")
    cfg = _config(tmp_path, str(tmp_path / "link"))
    before = snapshot(tmp_path)
    assert main(["data", "prepare", str(cfg)]) == 2
    err = _one_line(capsys)
    assert "data.prepared" in err and "is a symlink" in err
    assert snapshot(tmp_path) == before


def test_data_prepared_may_not_be_the_data_source(tmp_path, capsys):
    cfgdir = tmp_path / "project"
    cfgdir.mkdir()
    data = write_demo_images(cfgdir / "data", count=3, with_bad=False)
    cfg = tiny_config(cfgdir, images=data, data={"source": "folder", "path": "data", "prepared": "data"})
    before = snapshot(tmp_path)
    assert main(["data", "prepare", str(cfg)]) == 2
    assert "data.prepared" in _one_line(capsys)
    assert snapshot(tmp_path) == before


def test_out_flag_naming_a_user_folder_is_refused(tmp_path, capsys):
    home = _user_home(tmp_path)
    cfg = _config(tmp_path, "prep")
    before = snapshot(tmp_path)
    assert main(["data", "prepare", str(cfg), "--out", str(home)]) == 2
    err = _one_line(capsys)
    assert f"--out {home}" in err and "not empty and not a prepared dataset" in err
    assert snapshot(tmp_path) == before


def test_the_harness_replaces_its_own_prepared_folder_and_empty_ones(tmp_path, capsys):
    """The positive side: what the harness made (or an empty folder) is replaced as before."""
    (tmp_path / "empty").mkdir()
    cfg = _config(tmp_path, str(tmp_path / "empty"))
    assert main(["data", "prepare", str(cfg)]) == 0
    first = snapshot(tmp_path / "empty")
    assert "report.json" in first and len([k for k in first if k.startswith("images/")]) == 3
    Image.new("RGB", (96, 80), (9, 9, 9)).save(tmp_path / "project" / "data" / "extra.png")
    (tmp_path / "project" / "data" / "extra.txt").write_text("二次元", encoding="utf-8")
    assert main(["data", "prepare", str(cfg)]) == 0
    assert len([k for k in snapshot(tmp_path / "empty") if k.startswith("images/")]) == 4


def test_train_out_naming_a_user_folder_is_refused_even_with_force(tmp_path, capsys):
    home = _user_home(tmp_path)
    cfg = _config(tmp_path, "prep")
    before = snapshot(tmp_path)
    for extra in ([], ["--force"], ["--resume"]):
        assert main(["train", str(cfg), "--out", str(home), "--quiet", *extra]) == 2
        err = _one_line(capsys)
        assert f"--out {home}" in err and "not a training run the harness made" in err
    os.symlink(tmp_path / "nowhere", tmp_path / "linked-out")
    assert main(["train", str(cfg), "--out", str(tmp_path / "linked-out"), "--force"]) == 2
    assert "is a symlink" in _one_line(capsys)
    after = snapshot(tmp_path)
    assert after.pop("linked-out") == ("link", str(tmp_path / "nowhere"))
    assert after == before  # refused before the data was prepared


def test_harness_run_refuses_a_story_whose_training_config_names_a_user_folder(
    tmp_path, capsys, monkeypatch, write_story
):
    from tests.conftest import small_story

    _user_home(tmp_path)
    cfg = _config(tmp_path, "../home")  # inside the story's folder, so the folder rule decides
    story = write_story(small_story(lora={"train": "project/train.yaml"}))
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    t0 = time.monotonic()
    code = harness_main(["run", str(story), "--out", str(tmp_path / "runs" / "x"), "--quiet", "--no-score"])
    assert code == 2 and time.monotonic() - t0 < 60
    err = _one_line(capsys)
    assert str(cfg) in err and "data.prepared" in err and "the harness made" in err
    assert snapshot(tmp_path) == before  # no run folder, no bundle, the home folder intact


# --- dataset folders: nothing outside the folder enters the prepared set -----------------------


def _png(path: Path, colour: tuple[int, int, int]) -> bytes:
    Image.new("RGB", (96, 80), colour).save(path)
    return path.read_bytes()


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height (a decompression bomb's first bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _png_with_text_bomb(path: Path) -> None:
    """A valid 96x80 PNG carrying a zTXt chunk that inflates to 64 MiB (a few KiB on disk)."""
    import struct
    import zlib

    Image.new("RGB", (96, 80), (50, 60, 70)).save(path)
    data = path.read_bytes()
    body = b"comment\0\0" + zlib.compress(b"A" * (64 << 20), 9)
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    path.write_bytes(data[:33] + chunk + data[33:])  # right after the IHDR chunk


def _hostile_dataset(tmp_path: Path) -> tuple[Path, Path, set[str]]:
    """(dataset folder, outside folder, sha256 of every outside file) with every kind of link."""
    outside = tmp_path / "outside"
    (outside / "photos").mkdir(parents=True)
    secret_png = _png(outside / "private.png", (200, 0, 0))
    _png(outside / "photos" / "p.png", (0, 200, 0))
    (outside / "photos" / "p.txt").write_text("二次元", encoding="utf-8")
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    ds = tmp_path / "dataset"
    ds.mkdir()
    for i in range(2):
        _png(ds / f"good{i}.png", (10 * i, 20, 30))
        (ds / f"good{i}.txt").write_text(f"二次元 {i}", encoding="utf-8")
    os.symlink(outside / "private.png", ds / "link_file.png")
    (ds / "link_file.txt").write_text("二次元", encoding="utf-8")
    os.symlink(outside / "photos", ds / "link_dir")
    os.symlink(tmp_path / "gone.png", ds / "dangling.png")
    os.link(outside / "private.png", ds / "hard.png")
    (ds / "hard.txt").write_text("二次元", encoding="utf-8")
    os.mkfifo(ds / "fifo.png")
    (ds / "fifo.txt").write_text("二次元", encoding="utf-8")
    _png(ds / "linked_caption.png", (1, 2, 3))
    os.symlink(outside / "secret.txt", ds / "linked_caption.txt")
    _png(ds / "hard_caption.png", (4, 5, 6))
    os.link(outside / "secret.txt", ds / "hard_caption.txt")
    _png(ds / "fifo_caption.png", (7, 8, 9))
    os.mkfifo(ds / "fifo_caption.txt")
    _png(ds / "huge_caption.png", (10, 11, 12))
    (ds / "huge_caption.txt").write_text("二" * 400_000, encoding="utf-8")
    _png_claiming(ds / "bomb.png", 20_000, 20_000)  # over the dataset cap, under PIL's own guard
    _png_claiming(ds / "bomb2.png", 100_000, 100_000)  # over PIL's guard too
    _png_with_text_bomb(ds / "text_bomb.png")
    for name in ("bomb", "bomb2", "text_bomb"):
        (ds / f"{name}.txt").write_text("二次元", encoding="utf-8")
    hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in outside.rglob("*") if p.is_file()}
    assert hashlib.sha256(secret_png).hexdigest() in hashes
    return ds, outside, hashes


def _prepare_in_subprocess(cfg: Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "data", "prepare", str(cfg)],
        capture_output=True,
        text=True,
        timeout=timeout,  # a FIFO that blocks the reader fails the test here instead of hanging
        cwd=REPO,
    )
    return proc, time.monotonic() - t0


def test_links_fifos_hardlinks_and_bombs_in_a_dataset_never_enter_the_prepared_set(tmp_path):
    ds, outside, outside_hashes = _hostile_dataset(tmp_path)
    prep = tmp_path / "prep"
    cfg = tiny_config(tmp_path, images=ds, data={"source": "folder", "path": str(ds), "prepared": str(prep)})
    before_ds, before_out = snapshot(ds), snapshot(outside)
    proc, took = _prepare_in_subprocess(cfg)
    assert proc.returncode == 0, proc.stderr
    assert took < 60
    assert snapshot(ds) == before_ds and snapshot(outside) == before_out

    import json

    report = json.loads((prep / "report.json").read_text(encoding="utf-8"))
    reasons = {s["file"]: s["reason"] for s in report["skipped"]}
    assert report["kept"] == 2 and sorted(it["caption"] for it in report["items"]) == ["二次元 0", "二次元 1"]
    assert "symlink" in reasons["link_file.png"]
    assert "symlink" in reasons["link_dir"]
    assert "symlink" in reasons["dangling.png"]
    assert "hard links" in reasons["hard.png"]
    assert "FIFO" in reasons["fifo.png"]
    assert "caption file linked_caption.txt" in reasons["linked_caption.png"]
    assert "hard links" in reasons["hard_caption.png"]
    assert "FIFO" in reasons["fifo_caption.png"]
    assert "over the cap" in reasons["huge_caption.png"]
    assert "over the limit" in reasons["bomb.png"] and "decompression bomb" in reasons["bomb2.png"]
    assert "unreadable" in reasons["text_bomb.png"]
    # Nothing from outside: no outside file's bytes among the prepared images, no secret text.
    prepared = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (prep / "images").iterdir()}
    assert len(prepared) == 2 and not prepared & outside_hashes
    for name in ("metadata.csv", "report.json"):
        assert SECRET not in (prep / name).read_text(encoding="utf-8")


def test_metadata_csv_rows_naming_links_or_leaving_the_folder(tmp_path, capsys):
    ds, outside, outside_hashes = _hostile_dataset(tmp_path)
    rows = [
        "good0.png,二次元",
        "link_file.png,二次元",
        "hard.png,二次元",
        "fifo.png,二次元",
        "link_dir/p.png,x",
    ]
    (ds / "metadata.csv").write_text("file_name,text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    prep = tmp_path / "prep"
    cfg = tiny_config(tmp_path, images=ds, data={"source": "folder", "path": str(ds), "prepared": str(prep)})
    proc, took = _prepare_in_subprocess(cfg)
    assert proc.returncode == 0, proc.stderr
    assert took < 60
    prepared = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (prep / "images").iterdir()}
    assert len(prepared) == 1 and not prepared & outside_hashes
    # A row that leaves the folder is an error naming the row, and nothing is written.
    (ds / "metadata.csv").write_text(
        f"file_name,text\ngood0.png,x\n../outside/private.png,x\n{outside}/secret.txt,x\n"
    )
    cfg2 = tiny_config(tmp_path, name="t2.yaml", images=ds, data={"source": "folder", "path": str(ds)})
    before = snapshot(tmp_path)
    assert main(["data", "prepare", str(cfg2)]) == 2
    err = _one_line(capsys)
    assert "metadata.csv" in err and "../outside/private.png" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["symlink", "fifo", "hardlink", "huge"])
def test_an_unsafe_metadata_csv_is_refused_in_one_line_without_blocking(tmp_path, kind):
    ds = write_demo_images(tmp_path / "ds", count=2, with_bad=False)
    secret = tmp_path / "secret.csv"
    secret.write_text("file_name,text\n" + "".join(f"img{i:02d}.png,{SECRET}\n" for i in range(2)))
    meta = ds / "metadata.csv"
    if kind == "symlink":
        os.symlink(secret, meta)
    elif kind == "fifo":
        os.mkfifo(meta)
    elif kind == "hardlink":
        os.link(secret, meta)
    else:
        with open(meta, "wb") as f:
            f.write(b"file_name,text\n")
            f.truncate(65 * 1024 * 1024)  # sparse: 65 MiB claimed, no disk used
    prep = tmp_path / "prep"
    cfg = tiny_config(tmp_path, images=ds, data={"source": "folder", "path": str(ds), "prepared": str(prep)})
    before = snapshot(tmp_path)
    proc, took = _prepare_in_subprocess(cfg, timeout=60)
    assert proc.returncode == 2 and took < 30
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "metadata.csv" in err, err
    assert snapshot(tmp_path) == before


def test_device_files_in_a_dataset_are_never_opened(tmp_path):
    ds = write_demo_images(tmp_path / "ds", count=2, with_bad=False)
    try:
        os.mknod(ds / "zero.png", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero: endless bytes
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot create a device node here ({e})")
    (ds / "zero.txt").write_text("二次元", encoding="utf-8")
    prep = tmp_path / "prep"
    cfg = tiny_config(tmp_path, images=ds, data={"source": "folder", "path": str(ds), "prepared": str(prep)})
    proc, took = _prepare_in_subprocess(cfg, timeout=60)
    assert proc.returncode == 0 and took < 30, proc.stderr
    assert "zero.png: a device file" in proc.stdout
    assert len(list((prep / "images").iterdir())) == 2


def test_a_tampered_prepared_folder_is_not_trained_on(tmp_path, capsys):
    """A prepared image swapped for a link is not reused (prepared again, the link replaced, its
    target untouched); a report naming a file outside makes the folder no longer the harness's."""
    import json

    from harness.config.training import load_training_config
    from harness.data.prepare import ensure_prepared, load_prepared

    outside = tmp_path / "private.png"
    _png(outside, (200, 0, 0))
    cfg = _config(tmp_path, "prep")
    assert main(["data", "prepare", str(cfg)]) == 0
    prep = tmp_path / "project" / "prep"
    first = (prep / "images" / "000000.png").read_bytes()
    (prep / "images" / "000000.png").unlink()
    os.symlink(outside, prep / "images" / "000000.png")
    assert load_prepared(prep) is None
    outside_before = outside.read_bytes()
    data = ensure_prepared(load_training_config(cfg))
    assert not data.reused and (prep / "images" / "000000.png").read_bytes() == first
    assert not (prep / "images" / "000000.png").is_symlink() and outside.read_bytes() == outside_before

    report = json.loads((prep / "report.json").read_text(encoding="utf-8"))
    report["items"][1]["file"] = "../../private.png"
    (prep / "report.json").write_text(json.dumps(report), encoding="utf-8")
    assert load_prepared(prep) is None
    before = snapshot(tmp_path)
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = _one_line(capsys)
    assert "data.prepared" in err and "images/000001.png" in err
    assert snapshot(tmp_path) == before


def test_a_training_config_that_is_a_fifo_or_a_story_linked_config_is_refused(
    tmp_path, capsys, monkeypatch, write_story
):
    from tests.conftest import small_story

    fifo = tmp_path / "train.yaml"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    assert main(["data", "prepare", str(fifo)]) == 2  # opened without blocking, refused by fstat
    assert "FIFO" in _one_line(capsys) and time.monotonic() - t0 < 10
    real = _config(tmp_path, "prep")
    os.symlink(real, tmp_path / "linked.yaml")
    story = write_story(small_story(lora={"train": "linked.yaml"}), name="story.yaml")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert harness_main(["run", str(story), "--out", str(tmp_path / "run"), "--quiet", "--no-score"]) == 2
    err = _one_line(capsys)
    assert "linked.yaml" in err and "symlink" in err
    assert snapshot(tmp_path) == before


def test_a_dataset_nested_too_deeply_is_refused_in_one_line(tmp_path, capsys):
    ds = write_demo_images(tmp_path / "ds", count=2, with_bad=False)
    deep = ds
    for _ in range(100):  # over the walk's depth cap (a tree is walked without recursion)
        deep = deep / "d"
    os.makedirs(deep)
    cfg = tiny_config(tmp_path, images=ds, data={"source": "folder", "path": str(ds), "prepared": "prep"})
    before = snapshot(tmp_path)
    t0 = time.monotonic()
    assert main(["data", "prepare", str(cfg)]) == 2
    err = _one_line(capsys)
    assert "nested deeper than" in err and str(ds) in err and time.monotonic() - t0 < 20
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "override, field",
    [
        ({"data": {"source": "folder", "path": "data", "prepared": "prep\nrm -rf ~"}}, "data.prepared"),
        ({"data": {"source": "folder", "path": "da\x1bta", "prepared": "prep"}}, "data.path"),
        ({"base_model": "local:mo\u202edel"}, "base_model"),
    ],
)
def test_path_fields_with_control_characters_are_refused_in_one_line(tmp_path, capsys, override, field):
    cfg = tiny_config(tmp_path, **override)
    before = snapshot(tmp_path)
    assert main(["data", "prepare", str(cfg)]) == 2
    err = _one_line(capsys)
    assert str(cfg) in err and f"{field}:" in err
    assert snapshot(tmp_path) == before
