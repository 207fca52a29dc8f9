"""A LoRA named in the story is applied at its scale, hashed, and recorded with each panel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from tests.conftest import small_story


@pytest.fixture(scope="module")
def made_lora(tmp_path_factory, tiny_model_dir):
    """A diffusers-naming LoRA with non-zero weights (a fresh peft LoRA has B=0 and does nothing)."""
    from tests.bundle_fixtures import make_lora

    return make_lora(tmp_path_factory.mktemp("lora"), tiny_model_dir)


@pytest.fixture
def lora_file(tmp_path, made_lora):
    """The LoRA copied beside the test's stories: a story names files inside its own folder."""
    import shutil

    return Path(shutil.copy(made_lora, tmp_path / made_lora.name))


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
        capsys, write_story, tmp_path, "styled", lora={"path": lora_file.name, "scale": 1.0}
    )
    off = render_panel(capsys, write_story, tmp_path, "off", lora={"path": lora_file.name, "scale": 0.0})
    b, s, o = (pixels(p / "images" / "02.png") for p in (base, styled, off))
    assert not np.array_equal(b, s), "a trained (non-zero) LoRA must change the picture"
    assert np.array_equal(b, o), "scale 0 must give the base model's pixels"


def test_lora_hash_and_scale_are_recorded(capsys, tmp_path, write_story, lora_file):
    from harness.hashing import sha256_file

    out = render_panel(capsys, write_story, tmp_path, "rec", lora={"path": lora_file.name, "scale": 0.5})
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
        ["render", str(write_story(small_story(lora={"path": bogus.name}))), "--out", str(out), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot be applied as a Kolors LoRA" in err and len(err.strip().splitlines()) == 1


def test_a_lora_for_other_layers_is_refused_in_one_short_line_naming_the_layer(
    capsys, tmp_path, write_story, lora_file
):
    """The judges' LoRA check runs before diffusers loads the file (which would log every missing
    module on one giant line): the user gets one line naming the first layer that is not there."""
    from safetensors.torch import load_file, save_file

    moved = {k.replace("down_blocks.1.", "down_blocks.5."): v for k, v in load_file(str(lora_file)).items()}
    other = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in moved.items()}, str(other))
    story = write_story(small_story(lora={"path": other.name}))
    code = main(["render", str(story), "--out", str(tmp_path / "o"), "--quiet"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "down_blocks.5." in lines[0] and "no such Linear layer in the base model's UNet" in lines[0]
    assert len(lines[0]) < 400


def test_a_dora_lora_passes_the_judges_check_and_renders(tmp_path, tiny_model_dir):
    from harness.config.story import Sampling
    from harness.device import Placement
    from harness.lora.apply import apply_lora
    from harness.lora.checks import check_lora, unet_linear_shapes
    from harness.models.loader import load_pipeline
    from harness.render.engine import PanelJob, render
    from tests.bundle_fixtures import make_lora

    dora = make_lora(tmp_path / "dora", tiny_model_dir, dora=True)
    problems, facts = check_lora(dora, unet_linear_shapes(tiny_model_dir / "unet" / "config.json"))
    assert problems == [] and facts["format"] == "diffusers" and facts["shapes_checked"]
    pipe = load_pipeline(tiny_model_dir, Placement("cpu", "float32"), progress=False)
    jobs = [PanelJob(1, "一只小猫", "模糊", 7)]
    sampling = Sampling(steps=2, guidance=4.0, width=64, height=64, scheduler="euler")
    plain = np.asarray(render(pipe, jobs, sampling, device="cpu", progress=False)[0][1])
    apply_lora(pipe, dora, 1.0)
    styled = np.asarray(render(pipe, jobs, sampling, device="cpu", progress=False)[0][1])
    assert not np.array_equal(plain, styled)


def test_one_kolors_serves_many_loras_with_the_pixels_of_a_fresh_load(tmp_path, tiny_model_dir, monkeypatch):
    """`pipeline_for` keeps the base and swaps LoRAs (judges re-render bundle after bundle): each
    request renders exactly what a freshly loaded pipeline with that LoRA renders, from one load."""
    import numpy as np

    from harness.config.story import Sampling
    from harness.device import Placement
    from harness.hashing import sha256_file, sha256_tree
    from harness.models import loader
    from harness.render import pipelines
    from harness.render.engine import PanelJob, render
    from tests.bundle_fixtures import make_lora

    a = make_lora(tmp_path / "a", tiny_model_dir, seed=0)
    b = make_lora(tmp_path / "b", tiny_model_dir, seed=1)
    place = Placement("cpu", "float32")
    model_sha = sha256_tree(tiny_model_dir)
    jobs = [PanelJob(1, "一只小猫", "模糊", 7)]
    sampling = Sampling(steps=2, guidance=4.0, width=64, height=64, scheduler="euler")
    requests = [(a, 0.8), (b, 1.0), (None, 1.0), (b, 0.5), (a, 0.8)]

    def pixels(lora, scale):
        sha = sha256_file(lora) if lora else None
        pipe = pipelines.pipeline_for(tiny_model_dir, model_sha, place, lora, sha, scale, progress=False)
        return np.asarray(render(pipe, jobs, sampling, device="cpu", progress=False)[0][1])

    fresh = []
    for lora, scale in requests:
        pipelines.release_pipeline()
        fresh.append(pixels(lora, scale))
    assert len({f.tobytes() for f in fresh[:4]}) == 4, "each LoRA and scale renders differently"

    pipelines.release_pipeline()
    loads = []
    real = loader.load_pipeline
    monkeypatch.setattr(loader, "load_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k))
    for (lora, scale), expected in zip(requests, fresh, strict=True):
        assert np.array_equal(pixels(lora, scale), expected), (lora, scale)
    assert len(loads) == 1
