"""A LoRA named in the story is applied at its scale, hashed, and recorded with each panel."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from tests.conftest import small_story


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, tiny_model_dir):
    """A diffusers-naming LoRA with non-zero weights (a fresh peft LoRA has B=0 and does nothing)."""
    from tests.bundle_fixtures import make_lora

    return make_lora(tmp_path_factory.mktemp("lora"), tiny_model_dir)


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def render_panel(capsys, write_story, tmp_path, name, **story):
    out = tmp_path / name
    code = main(
        [
            "render",
            str(write_story(small_story(**story), f"{name}.yaml")),
            "--out",
            str(out),
            "--quiet",
            "--panels",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    return out


def test_lora_changes_the_panel_and_scale_zero_restores_it(capsys, tmp_path, write_story, lora_file):
    base = render_panel(capsys, write_story, tmp_path, "base")
    styled = render_panel(
        capsys, write_story, tmp_path, "styled", lora={"path": str(lora_file), "scale": 1.0}
    )
    off = render_panel(capsys, write_story, tmp_path, "off", lora={"path": str(lora_file), "scale": 0.0})
    b, s, o = (pixels(p / "images" / "02.png") for p in (base, styled, off))
    assert not np.array_equal(b, s), "a trained (non-zero) LoRA must change the picture"
    assert np.array_equal(b, o), "scale 0 must give the base model's pixels"


def test_lora_hash_and_scale_are_recorded(capsys, tmp_path, write_story, lora_file):
    from harness.hashing import sha256_file

    out = render_panel(capsys, write_story, tmp_path, "rec", lora={"path": str(lora_file), "scale": 0.5})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lora"] == {"file": lora_file.name, "sha256": sha256_file(lora_file), "scale": 0.5}
    assert main(["inspect", "--json", str(out / "images" / "02.png")]) == 0
    params = json.loads(capsys.readouterr().out)
    assert params["lora"]["sha256"] == sha256_file(lora_file) and params["lora"]["scale"] == 0.5


def test_lora_path_is_relative_to_the_story_file(capsys, tmp_path, write_story, lora_file):
    import shutil

    (tmp_path / "loras").mkdir()
    shutil.copy(lora_file, tmp_path / "loras" / "style.safetensors")
    render_panel(capsys, write_story, tmp_path, "rel", lora={"path": "loras/style.safetensors"})


def test_a_file_that_is_not_a_lora_is_refused_in_one_line(capsys, tmp_path, write_story):
    import torch
    from safetensors.torch import save_file

    bogus = tmp_path / "bogus.safetensors"
    save_file({"hello.weight": torch.zeros(2, 2)}, str(bogus))
    out = tmp_path / "bogus-out"
    code = main(
        ["render", str(write_story(small_story(lora={"path": str(bogus)}))), "--out", str(out), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot be applied as a Kolors LoRA" in err and len(err.strip().splitlines()) == 1
