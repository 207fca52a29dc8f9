"""Rendering on the tiny Kolors: reproducibility, embedded parameters, outputs, output folders."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from tests.conftest import ROOT, small_story


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def render(capsys, story_path, out, *extra) -> int:
    code = main(["render", str(story_path), "--out", str(out), "--quiet", *map(str, extra)])
    capsys.readouterr()
    return code


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir):
    """The small demo story rendered once, whole, for the tests that only read it."""
    from harness.config.story import load_story
    from harness.render.run import render_story

    folder = tmp_path_factory.mktemp("full")
    story = folder / "story.yaml"
    import yaml

    story.write_text(yaml.safe_dump(small_story(), allow_unicode=True), encoding="utf-8")
    render_story(load_story(story), folder / "run", progress=False)
    return story, folder / "run"


def test_full_story_writes_eight_pngs_contact_sheet_and_manifest(full_run):
    _, out = full_run
    images = sorted((out / "images").glob("*.png"))
    assert [p.name for p in images] == [f"{i:02d}.png" for i in range(1, 9)]
    assert all(pixels(p).shape == (64, 64, 3) for p in images)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "complete"
    assert [p["index"] for p in manifest["panels"]] == list(range(1, 9))
    assert manifest["model"]["ref"] == "tiny" and len(manifest["model"]["sha256"]) == 64
    from harness.hashing import sha256_file

    for entry in manifest["panels"]:
        assert sha256_file(out / entry["file"]) == entry["sha256"]
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > sheet.height  # 4 columns x 2 rows
    assert (out / "story.yaml").is_file()


def test_panels_are_not_all_the_same(full_run):
    _, out = full_run
    a, b = pixels(out / "images" / "01.png"), pixels(out / "images" / "02.png")
    assert not np.array_equal(a, b)


def test_panel_alone_is_bit_identical_to_panel_in_story(capsys, tmp_path, full_run):
    story, out = full_run
    alone = tmp_path / "alone"
    assert render(capsys, story, alone, "--panels", "3,6") == 0
    assert sorted(p.name for p in (alone / "images").iterdir()) == ["03.png", "06.png"]
    for k in ("03", "06"):
        assert np.array_equal(pixels(alone / "images" / f"{k}.png"), pixels(out / "images" / f"{k}.png"))
    manifest = json.loads((alone / "manifest.json").read_text())
    assert manifest["status"] == "partial"


def test_same_story_twice_is_bit_identical(capsys, tmp_path, full_run):
    story, out = full_run
    again = tmp_path / "again"
    assert render(capsys, story, again) == 0
    for i in range(1, 9):
        name = f"{i:02d}.png"
        assert np.array_equal(pixels(again / "images" / name), pixels(out / "images" / name))


def test_seed_changes_the_panel(capsys, tmp_path, write_story, full_run):
    _, out = full_run
    data = small_story()
    data["panels"][0]["seed"] = 12345
    other = tmp_path / "other"
    assert render(capsys, write_story(data), other, "--panels", "1") == 0
    assert not np.array_equal(pixels(other / "images" / "01.png"), pixels(out / "images" / "01.png"))


def test_batched_panels_share_the_noise_of_single_panels(capsys, tmp_path, full_run):
    """Batch size 2 draws each panel's noise from its own generator: the pictures agree to
    float rounding (batched kernels may round differently, so bit-identity is only promised
    for batch size 1)."""
    story, out = full_run
    batched = tmp_path / "batched"
    assert render(capsys, story, batched, "--batch-size", "2") == 0
    for i in range(1, 9):
        name = f"{i:02d}.png"
        diff = np.abs(pixels(batched / "images" / name).astype(int) - pixels(out / "images" / name))
        assert diff.max() <= 2, (name, diff.max())


def test_inspect_prints_the_seed_and_prompt(capsys, full_run):
    _, out = full_run
    assert main(["inspect", str(out / "images" / "04.png")]) == 0
    printed = capsys.readouterr().out
    panel = small_story()["panels"][3]
    assert f"seed       {panel['seed']}" in printed
    assert panel["prompt"] in printed
    assert main(["inspect", "--json", str(out / "images" / "04.png")]) == 0
    params = json.loads(capsys.readouterr().out)
    assert params["seed"] == panel["seed"] and params["prompt"] == panel["prompt"]
    assert params["steps"] == 4 and params["width"] == 64 and params["scheduler"] == "euler"


def test_inspect_refuses_an_image_without_parameters(capsys, tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert main(["inspect", str(plain)]) == 2
    assert "no harness parameters embedded" in capsys.readouterr().err


def test_same_run_can_be_rerendered_into_its_folder(capsys, tmp_path, write_story):
    story = write_story(small_story())
    out = tmp_path / "run"
    assert render(capsys, story, out, "--panels", "1") == 0
    assert render(capsys, story, out, "--panels", "2") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["index"] for p in manifest["panels"]] == [1, 2]


def test_a_different_run_is_not_silently_overwritten(capsys, tmp_path, write_story):
    out = tmp_path / "run"
    assert render(capsys, write_story(small_story()), out, "--panels", "1") == 0
    before = (out / "images" / "01.png").read_bytes()
    data = small_story()
    data["panels"][0]["prompt"] = "水彩，一只橘猫"
    changed = write_story(data, "changed.yaml")
    code = main(["render", str(changed), "--out", str(out), "--quiet", "--panels", "1"])
    assert code == 2
    assert "holds a different run" in capsys.readouterr().err
    assert (out / "images" / "01.png").read_bytes() == before
    assert render(capsys, changed, out, "--panels", "1", "--force") == 0
    assert (out / "images" / "01.png").read_bytes() != before


def test_tiny_model_is_saved_and_loaded_like_the_real_one(tiny_model_dir):
    """The tiny model lives on disk in the diffusers layout and loads through from_pretrained."""
    from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer

    from harness.device import Placement
    from harness.models.loader import load_pipeline

    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "KolorsPipeline"
    assert index["text_encoder"] == ["kolors", "ChatGLMModel"]
    assert (tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = load_pipeline(tiny_model_dir, Placement("cpu", "float32"))
    assert isinstance(pipe.text_encoder, ChatGLMModel)
    assert isinstance(pipe.tokenizer, ChatGLMTokenizer)
    assert pipe.unet.config.encoder_hid_dim_type == "text_proj"
    assert pipe.scheduler.config.num_train_timesteps == 1100
    assert pipe.vae_scale_factor == 8


def test_tiny_model_build_is_deterministic(tmp_path, tiny_model_dir):
    from harness.hashing import sha256_tree
    from harness.models.tiny import ensure_tiny

    rebuilt = ensure_tiny(tmp_path)
    assert sha256_tree(rebuilt) == sha256_tree(tiny_model_dir)


def test_chinese_prompts_use_the_real_kolors_tokenizer():
    from harness.models.tokenizer import count_tokens, kolors_tokenizer

    tok = kolors_tokenizer()
    assert tok.vocab_size == 64798
    ids = tok("小猫咪")["input_ids"]
    assert ids[:2] == [tok.convert_tokens_to_ids("[gMASK]"), tok.convert_tokens_to_ids("sop")]
    assert tok.decode(ids[2:]).strip() == "小猫咪"
    assert count_tokens("小猫咪") == len(ids)


def test_contact_sheet_font_draws_chinese():
    from harness.fonts import cjk_font_path, load_font

    assert cjk_font_path() is not None, "the install provides Noto Sans CJK (noto-cjk-sans-otc)"
    font = load_font(32)
    cat, dog = font.getmask("猫"), font.getmask("狗")
    assert cat.getbbox() is not None
    assert bytes(cat) != bytes(dog), "distinct glyphs, not the same missing-glyph box"


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from harness.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "for sub in ('validate', 'render', 'run', 'inspect'):\n"
        "    try:\n        main([sub, '--help'])\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
        "assert 'diffusers' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "render" in result.stdout and "inspect" in result.stdout


def test_one_loaded_pipeline_renders_again_with_the_same_pixels(tiny_model_dir):
    """render() stages the pipeline (encode, then denoise) and leaves it fit for another render."""
    import numpy as np

    from harness.config.story import Sampling
    from harness.device import Placement
    from harness.models.loader import load_pipeline
    from harness.render.engine import PanelJob, render

    pipe = load_pipeline(tiny_model_dir, Placement("cpu", "float32"), progress=False)
    jobs = [PanelJob(1, "一只小猫", "模糊", 7), PanelJob(2, "猫在月光下", "模糊", 8)]
    sampling = Sampling(steps=2, guidance=4.0, width=64, height=64, scheduler="euler")
    first = render(pipe, jobs, sampling, device="cpu", progress=False)
    again = render(pipe, jobs[:1], sampling, device="cpu", progress=False)
    assert np.array_equal(np.asarray(first[0][1]), np.asarray(again[0][1]))
    assert not np.array_equal(np.asarray(first[0][1]), np.asarray(first[1][1]))
