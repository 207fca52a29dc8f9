"""Bad training input: one line, exit code 2, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from train_helpers import tiny_config

from harness.train.cli import main


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "override, needle",
    [
        ({"lora": {"rank": 0}}, "lora.rank"),
        ({"lora": {"rank": 4096}}, "lora.rank"),
        ({"lora": {"alpha": -1.0}}, "lora.alpha"),
        ({"optimizer": {"learning_rate": "1.0e-4"}}, "is quoted, so it is text"),  # dumped as a quoted string
        ({"resoluton": 64}, "unknown field"),
        ({"resolution": 100}, "multiple of 8"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
    ],
)
def test_config_errors_name_the_field(tmp_path, capsys, override, needle):
    cfg = tiny_config(tmp_path, **override)
    assert main(["train", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert needle in _err(capsys)
    assert not (tmp_path / "out").exists()


def test_targets_that_match_nothing(tmp_path, capsys, tiny_model_dir):
    cfg = tiny_config(tmp_path, lora={"target_modules": ["to_q", "to_qkv"]})
    assert main(["train", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = _err(capsys)
    assert "to_qkv" in err and "match" in err
    assert not (tmp_path / "out").exists()


def test_images_smaller_than_the_resolution(tmp_path, capsys, tiny_model_dir):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(2):
        Image.new("RGB", (48, 48), (i, 0, 0)).save(raw / f"{i}.png")
        (raw / f"{i}.txt").write_text("x", encoding="utf-8")
    cfg = tiny_config(tmp_path, images=raw)
    assert main(["train", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = _err(capsys)
    assert "smaller than resolution 64" in err and "allow_upscale" in err
    assert not (tmp_path / "out").exists()


def test_mixed_precision_needs_cuda(tmp_path, capsys, tiny_model_dir):
    cfg = tiny_config(tmp_path, mixed_precision="fp16")
    assert main(["train", str(cfg), "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 2
    assert "CUDA" in _err(capsys)


def test_example_configs_are_valid():
    from harness.config.training import TrainingConfig
    from harness.config.yamlio import parse_model, read_yaml

    root = Path(__file__).resolve().parents[1] / "configs"
    base = parse_model(read_yaml(root / "lora-baseline.yaml"), TrainingConfig)
    assert (base.lora.rank, base.lora.alpha, base.epochs, base.crop) == (16, 4.0, 1, "center")
    assert base.gradient_checkpointing and base.mixed_precision == "fp16"
    assert base.data.caption == "二次元" and (base.data.min_aspect, base.data.max_aspect) == (0.5, 2.0)
    demo = parse_model(read_yaml(root / "lora-demo.yaml"), TrainingConfig)
    assert demo.base_model == "tiny"


def test_cli_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, harness.train.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
