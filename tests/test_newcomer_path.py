"""The newcomer path: `harness train configs/lora-demo.yaml` is one command from a clean state.

Training configs live in configs/ (stories/ holds stories only); the demo config's data is the
`demo` source, made in memory from a seed, so nothing has to be created first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.config.training import TrainingConfig, load_training_config
from harness.config.yamlio import expect_kind, parse_model, read_yaml
from harness.errors import HarnessError
from harness.train.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "lora-demo.yaml"


def test_training_configs_live_in_configs_and_stories_holds_stories_only():
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert {p.name for p in configs} >= {"lora-demo.yaml", "lora-baseline.yaml"}
    for p in configs:
        parse_model(read_yaml(p), TrainingConfig)  # raises on any invalid field
    for p in sorted((ROOT / "stories").glob("*.yaml")):
        expect_kind(read_yaml(p), "story")  # a training config here would raise
    loaded = load_training_config(DEMO)
    assert loaded.config.data.source == "demo" and loaded.config.base_model == "tiny"


def test_the_readme_and_training_guide_give_the_one_command():
    for doc in ("README.md", "docs/training.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert "harness train configs/lora-demo.yaml" in text, doc
        assert "python -m harness.data.demo" not in text and "stories/lora-" not in text, doc


def test_the_demo_source_takes_no_path(tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        DEMO.read_text(encoding="utf-8").replace("\n  source: demo\n", "\n  source: demo\n  path: mine\n"),
        encoding="utf-8",
    )
    with pytest.raises(HarnessError, match="data: .*source demo makes its own images"):
        load_training_config(cfg)
    assert main(["train", str(cfg), "--quiet"]) == 2
    assert "source demo" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.yaml"]


def test_the_demo_data_is_the_same_every_time(tmp_path):
    from harness.data.prepare import prepare

    loaded = load_training_config(DEMO)
    a, b = prepare(loaded, tmp_path / "a"), prepare(loaded, tmp_path / "b")
    assert a.data_sha256 == b.data_sha256 and len(a.items) == 8
    for x, y in zip(a.items, b.items, strict=True):
        assert (tmp_path / "a" / x.file).read_bytes() == (tmp_path / "b" / y.file).read_bytes()
    assert len({it.sha256 for it in a.items}) == 8  # eight different images, not one repeated


@pytest.fixture
def clean_cache(tmp_path, monkeypatch, tiny_model_dir) -> Path:
    """An empty harness cache but for the tiny model (as built offline): no prepared data,
    no latent cache, no LoRA run."""
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache / "models" / tiny_model_dir.name)
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    return cache


def test_one_command_trains_the_demo_from_a_clean_state(tmp_path, clean_cache, capsys):
    work = tmp_path / "checkout"
    (work / "configs").mkdir(parents=True)
    config = work / "configs" / "lora-demo.yaml"
    shutil.copy(DEMO, config)  # the shipped file, byte for byte, in a tree of the test's own

    assert main(["train", str(config), "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    runs = list((clean_cache / "loras").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("lora-demo-") and str(runs[0]) in out
    run = runs[0]
    manifest = json.loads((run / "training.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "complete" and manifest["steps"] == 8
    assert (run / "pytorch_lora_weights.safetensors").is_file()
    assert (run / "validation" / "step-000008" / "01.png").is_file()

    # The data was made in memory and prepared into the folder the config names, with a report.
    prepared = work / "runs" / "lora-demo-prepared"
    report = json.loads((prepared / "report.json").read_text(encoding="utf-8"))
    assert report["kept"] == 8 and report["candidates"] == 10
    assert {s["file"] for s in report["skipped"]} == {"demo:tiny", "demo:uncaptioned"}
    assert manifest["data"]["sha256"] == report["data_sha256"]
    assert sorted(p.relative_to(work).as_posix() for p in work.glob("*/*")) == [
        "configs/lora-demo.yaml",
        "runs/lora-demo-prepared",
    ]

    # Again: the same seeded data, so the finished run is found and nothing is retrained.
    assert main(["train", str(config), "--quiet", "--device", "cpu"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert list((clean_cache / "loras").iterdir()) == [run]
