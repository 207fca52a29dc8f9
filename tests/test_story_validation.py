"""Bad story input: exit code 2, one line naming the file and field, nothing written."""

from __future__ import annotations

import json
import re

import pytest

from harness.cli import main
from tests.conftest import small_story


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def panels(n: int, **extra) -> list[dict]:
    return [{"prompt": f"二次元，第{i + 1}格", "seed": i, **extra} for i in range(n)]


def expect_refused(capsys, tmp_path, story_path, *needles, extra=()):
    """Render must exit 2 with one stderr line containing every needle, and write nothing."""
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "render", story_path, "--out", out, "--quiet", *extra)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists(), "bad input must not create the output folder"
    return lines[0]


def test_valid_demo_story_passes(capsys):
    code, out, _ = run_cli(capsys, "validate", "stories/demo.yaml")
    assert code == 0
    assert "8 panels" in out


def test_seed_story_is_valid_and_uses_the_competition_settings(capsys):
    from harness.config.story import load_story

    story = load_story("stories/cat-and-youth.yaml").story
    assert (story.sampling.width, story.sampling.height) == (1024, 1024)
    assert story.sampling.steps == 50 and story.sampling.guidance == 4.0
    assert story.base_model == "modelscope:Kwai-Kolors/Kolors-diffusers"
    assert story.negative_prompt == "丑陋、变形、嘈杂、模糊、低对比度"
    assert story.negative_for(2).endswith("色情擦边")  # panel 3 has its own negative prompt
    assert len(story.panels) == 8


def test_malformed_yaml_names_the_line(capsys, tmp_path, write_story):
    path = write_story("team: a\nname: b\npanels:\n  - prompt: [unclosed\n    seed: 1\n")
    line = expect_refused(capsys, tmp_path, path, str(path), "malformed YAML")
    assert f"{path}:5:" in line or f"{path}:4:" in line


def test_duplicate_key_is_refused(capsys, tmp_path, write_story):
    path = write_story("team: a\nteam: b\nname: n\npanels: []\n")
    expect_refused(capsys, tmp_path, path, f"{path}:2:", "duplicate key 'team'")


def test_unknown_field(capsys, tmp_path, write_story):
    data = small_story()
    data["sampling"]["cfg_scale"] = 4
    path = write_story(data)
    expect_refused(capsys, tmp_path, path, str(path), "sampling.cfg_scale", "unknown field")


def test_missing_field(capsys, tmp_path, write_story):
    data = small_story()
    del data["team"]
    path = write_story(data)
    expect_refused(capsys, tmp_path, path, "team", "required field is missing")


def test_a_training_config_given_as_a_story_and_the_reverse_are_named(capsys, tmp_path, write_story):
    from tests.conftest import ROOT

    training = ROOT / "configs" / "lora-demo.yaml"
    expect_refused(capsys, tmp_path, training, "is a LoRA training config, not a story", "harness train")
    code, _, err = run_cli(capsys, "train", write_story(small_story()), "--out", tmp_path / "t")
    assert code == 2 and "is a story, not a LoRA training config" in err and "harness run" in err
    assert not (tmp_path / "t").exists()


def test_wrong_number_of_panels(capsys, tmp_path, write_story):
    path = write_story(small_story(panels=panels(7)))
    expect_refused(capsys, tmp_path, path, "panels", "expected 8 panels", "got 7")


def test_panel_count_is_a_setting(capsys, tmp_path, write_story):
    path = write_story(small_story(panels=panels(4), panel_count=4))
    code, out, err = run_cli(capsys, "validate", path)
    assert code == 0, err


@pytest.mark.parametrize(
    ("seed", "needle"),
    [(-1, "must be >= 0"), (2**64, "does not fit in 64 bits"), ("7", "valid integer")],
)
def test_bad_seed(capsys, tmp_path, write_story, seed, needle):
    data = small_story()
    data["panels"][3]["seed"] = seed
    path = write_story(data)
    line = expect_refused(capsys, tmp_path, path, "panels[3].seed", needle)
    # the line number points at panel 4's seed in the file
    text = path.read_text(encoding="utf-8").splitlines()
    lineno = int(re.search(rf"{re.escape(str(path))}:(\d+):", line).group(1))
    assert "seed" in text[lineno - 1]


def test_largest_64_bit_seed_is_accepted(capsys, tmp_path, write_story):
    data = small_story()
    data["panels"][0]["seed"] = 2**64 - 1
    code, _, err = run_cli(capsys, "validate", write_story(data))
    assert code == 0, err


def test_prompt_over_256_kolors_tokens(capsys, tmp_path, write_story):
    from harness.models.tokenizer import count_tokens

    long_prompt = "一只灰色的小猫咪在沙发上睡觉，" * 30
    assert count_tokens(long_prompt) > 256
    data = small_story()
    data["panels"][5]["prompt"] = long_prompt
    path = write_story(data)
    expect_refused(capsys, tmp_path, path, "panels[5].prompt", "Kolors tokens", "256")


def test_prompt_at_the_limit_is_accepted(capsys, write_story):
    from harness.models.tokenizer import count_tokens

    text = ""
    while count_tokens(text + "猫") <= 256:
        text += "猫"
    assert count_tokens(text) <= 256
    data = small_story()
    data["panels"][0]["prompt"] = text
    code, _, err = run_cli(capsys, "validate", write_story(data))
    assert code == 0, err


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("width", 100, "multiple of 8"),
        ("height", 8, "between 64 and 2048"),
        ("width", 4096, "between 64 and 2048"),
        ("steps", 0, "greater than or equal to 1"),
        ("steps", 1000, "less than or equal to 200"),
        ("guidance", -1.0, "greater than or equal to 0"),
        ("guidance", 99.0, "less than or equal to 30"),
        ("scheduler", "plms", "euler"),
    ],
)
def test_bad_sampling(capsys, tmp_path, write_story, field, value, needle):
    data = small_story()
    data["sampling"][field] = value
    path = write_story(data)
    expect_refused(capsys, tmp_path, path, f"sampling.{field}", needle)


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("huggingface:Kwai-Kolors/Kolors", "unknown model source 'huggingface'"),
        ("sdxl", "unknown model reference"),
        ("modelscope:not an id", "not a ModelScope model id"),
    ],
)
def test_unknown_model_source(capsys, tmp_path, write_story, ref, needle):
    path = write_story(small_story(base_model=ref))
    expect_refused(capsys, tmp_path, path, "base_model", needle)


def test_missing_lora_file(capsys, tmp_path, write_story):
    path = write_story(small_story(lora={"path": "loras/style.safetensors", "scale": 0.8}))
    expect_refused(capsys, tmp_path, path, "lora.path", "LoRA file not found")


def test_pickled_lora_is_not_rendered(capsys, tmp_path, write_story):
    (tmp_path / "style.ckpt").write_bytes(b"not really a pickle")
    path = write_story(small_story(lora={"path": "style.ckpt"}))
    expect_refused(capsys, tmp_path, path, "lora.path", ".safetensors")


def test_panels_option_naming_a_missing_panel(capsys, tmp_path, write_story):
    path = write_story(small_story())
    expect_refused(capsys, tmp_path, path, "--panels", "panel 9 does not exist", extra=("--panels", "1,9"))
    expect_refused(capsys, tmp_path, path, "--panels", "not a panel number", extra=("--panels", "one"))


def test_local_model_folder_must_exist(capsys, tmp_path, write_story, monkeypatch):
    monkeypatch.setenv("HARNESS_MODEL_ROOTS", str(tmp_path))
    path = write_story(small_story(base_model=f"local:{tmp_path / 'nowhere'}"))
    expect_refused(capsys, tmp_path, path, "not a diffusers-layout folder")


def test_a_story_names_a_local_model_only_in_a_folder_the_user_allowed(
    capsys, tmp_path, write_story, tiny_model_dir, monkeypatch
):
    """A story from a stranger must not make the harness load (and hash) a folder it picks: a
    `local:` model is refused unless it lies in the cache or in $HARNESS_MODEL_ROOTS."""
    import shutil

    elsewhere = tmp_path / "elsewhere" / "kolors"
    shutil.copytree(tiny_model_dir, elsewhere)
    monkeypatch.delenv("HARNESS_MODEL_ROOTS", raising=False)
    for ref, needle in (
        (f"local:{elsewhere}", "not in a folder you allowed for models"),
        ("local:elsewhere/kolors", "needs an absolute path"),
        (f"local:{tmp_path}/../{tmp_path.name}/elsewhere/kolors", "not in a folder you allowed"),
    ):
        line = expect_refused(capsys, tmp_path, write_story(small_story(base_model=ref)), needle)
        assert "base_model" in line
    (tmp_path / "link").symlink_to(elsewhere)
    monkeypatch.setenv("HARNESS_MODEL_ROOTS", str(tmp_path / "allowed"))
    expect_refused(capsys, tmp_path, write_story(small_story(base_model=f"local:{tmp_path}/link")), "allowed")
    monkeypatch.setenv("HARNESS_MODEL_ROOTS", str(tmp_path / "elsewhere"))
    code, out, err = run_cli(capsys, "validate", write_story(small_story(base_model=f"local:{elsewhere}")))
    assert code == 0, err


def test_non_empty_foreign_folder_is_not_overwritten(capsys, tmp_path, write_story):
    path = write_story(small_story())
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "render", path, "--out", out, "--quiet")
    assert code == 2 and "holds no harness run" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_manifest_is_valid_json_after_refusal(capsys, tmp_path, write_story):
    """A refused render into an existing run leaves that run's manifest untouched."""
    out = tmp_path / "out"
    out.mkdir()
    manifest = {"kind": "harness.render", "identity": {"story_sha256": "something-else"}, "panels": []}
    (out / "manifest.json").write_text(json.dumps(manifest))
    path = write_story(small_story())
    code, _, err = run_cli(capsys, "render", path, "--out", out, "--quiet")
    assert code == 2 and "holds a different run" in err and "story_sha256" in err
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_lora_needs_exactly_one_of_path_and_train(capsys, tmp_path, write_story):
    path = write_story(small_story(lora={"scale": 1.0}))
    expect_refused(capsys, tmp_path, path, "lora", "exactly one of path")


def test_missing_training_config(capsys, tmp_path, write_story):
    path = write_story(small_story(lora={"train": "train/style.yaml"}))
    expect_refused(capsys, tmp_path, path, "lora.train", "training config not found")
