"""`harness score` options, the scoring config file, and a torch-free import."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from harness.config.scoring import load_scoring_config
from harness.errors import HarnessError
from harness.score.cli import add_parsers, config_from_args
from tests.conftest import ROOT
from tests.score_fixtures import noise_image, write_panels


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(["score", *argv])


def test_importing_the_score_cli_imports_no_torch():
    code = "import sys, harness.score.cli, harness.config.scoring; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_options_override_the_config_file(tmp_path):
    cfg = tmp_path / "scoring.yaml"
    cfg.write_text("threshold: 5.5\ntolerances:\n  min_psnr: 30.0\nscorers: [aesthetic]\n")
    config = config_from_args(
        parse(str(tmp_path), "--scoring-config", str(cfg), "--max-abs-diff", "8", "--no-reproduce")
    )
    assert config.threshold == 5.5
    assert config.tolerances.min_psnr == 30.0 and config.tolerances.max_abs_diff == 8
    assert config.scorers == ["aesthetic"] and config.reproduce is False
    assert config_from_args(parse(str(tmp_path), "--threshold", "6.5")).threshold == 6.5


def test_bad_options_and_config_fields_are_one_line_errors(tmp_path):
    with pytest.raises(HarnessError, match="tolerances.max_abs_diff"):
        config_from_args(parse(str(tmp_path), "--max-abs-diff", "300"))
    with pytest.raises(HarnessError, match="did you mean 'alignment'"):
        config_from_args(parse(str(tmp_path), "--scorers", "aesthetic,alignmnt"))
    cfg = tmp_path / "scoring.yaml"
    cfg.write_text("threshold: 6.0\nthreshhold: 5\n")
    with pytest.raises(HarnessError, match=r"scoring.yaml:2: threshhold: unknown field"):
        load_scoring_config(cfg)


def test_plain_folder_scores_are_written_beside_it_not_into_it(tmp_path, capsys):
    images = tmp_path / "submission"
    write_panels(images, [noise_image(i) for i in range(8)])
    (images / "readme.txt").write_text("hello")
    args = parse(
        str(images),
        "--aesthetic-model",
        "tiny-aesthetic",
        "--consistency-model",
        "tiny-clip",
        "--alignment-model",
        "tiny-clip-ml",
        "--threshold",
        "-1",
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "skipped readme.txt: not an image" in out
    assert "no panel has embedded parameters" in out
    assert not (images / "scores.json").exists()  # the competition's evaluate() reads every file
    data = json.loads((tmp_path / "submission.scores.json").read_text(encoding="utf-8"))
    assert data["skipped"] == [{"file": "readme.txt", "reason": "not an image"}]
    assert data["summary"]["valid"] is True and data["reproducibility"] is None


def _run(*argv) -> int:
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_pinned_weights_score_and_other_weights_are_refused(tmp_path, capsys):
    """`score-models --pin` prints the pins of a config's models; a config with a wrong pin refuses."""
    import yaml

    from harness.score.api import score_run

    cfg = tmp_path / "scoring.yaml"
    models = {"aesthetic_model": "tiny-aesthetic", "consistency_model": "tiny-clip", "reproduce": False}
    cfg.write_text(yaml.safe_dump({**models, "scorers": ["aesthetic", "consistency"]}))
    assert _run("score-models", "--pin", "--scoring-config", str(cfg)) == 0
    pins = yaml.safe_load(capsys.readouterr().out)["pins"]
    assert set(pins) == {"tiny-aesthetic", "tiny-clip"}

    images = tmp_path / "panels"
    write_panels(images, [noise_image(i) for i in range(8)])
    cfg.write_text(yaml.safe_dump({**models, "scorers": ["aesthetic", "consistency"], "pins": pins}))
    pinned = score_run(images, config=load_scoring_config(cfg))
    assert pinned.metrics["aesthetic"].models[0]["sha256"] == pins["tiny-aesthetic"]

    wrong = dict(pins, **{"tiny-clip": ("0" if pins["tiny-clip"][0] != "0" else "1") + pins["tiny-clip"][1:]})
    cfg.write_text(yaml.safe_dump({**models, "scorers": ["aesthetic", "consistency"], "pins": wrong}))
    with pytest.raises(HarnessError, match=r"tiny-clip: .* the scoring config pins .*refusing to score"):
        score_run(images, config=load_scoring_config(cfg))

    cfg.write_text(yaml.safe_dump({**models, "pins": {"tiny-clip": "abc"}}))
    with pytest.raises(HarnessError, match="expected 64 lowercase hex digits"):
        load_scoring_config(cfg)


def test_score_models_lists_the_registry(capsys):
    assert _run("score-models") == 0
    out = capsys.readouterr().out
    assert "aesthetic-v2-linear  (aesthetic, not pinned)" in out
    assert "modelscope:AI-ModelScope/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE" in out
