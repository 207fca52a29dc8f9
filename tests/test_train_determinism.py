"""Training on the tiny model: same seed, same bytes; kill + resume, same bytes; the LoRA renders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import tiny_config

from harness.config.training import load_training_config
from harness.lora.export import DIFFUSERS_FILE, KOHYA_FILE
from harness.train.api import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("train")
    cfg = tiny_config(
        tmp, max_steps=6, checkpoint_every=2, validation={"prompts": ["二次元，红色"], "every": 3, "steps": 2}
    )
    return cfg, train(load_training_config(cfg), tmp / "run-a", progress=False)


def test_outputs_and_manifest(trained):
    _, r = trained
    m = r.manifest
    assert m["status"] == "complete" and m["steps"] == 6 and len(m["config"]) > 10
    assert m["seed"] == 7 and m["data"]["sha256"] and m["libraries"]["peft"]
    for name in (
        DIFFUSERS_FILE,
        KOHYA_FILE,
        "loss.csv",
        "loss.png",
        "validation/step-000003/01.png",
        "validation/step-000006/01.png",
    ):
        assert (r.out / name).is_file(), name
    assert "skipped" in m["files"]["diffsynth"]  # the tiny UNet is not DiffSynth's hard-coded layout
    assert len((r.out / "loss.csv").read_text().splitlines()) == 7
    assert isinstance(m["final_loss"], float)


def test_same_seed_gives_identical_bytes_and_a_different_seed_does_not(trained, tmp_path):
    cfg, a = trained
    b = train(load_training_config(cfg), tmp_path / "run-b", progress=False)
    assert (a.out / DIFFUSERS_FILE).read_bytes() == (b.out / DIFFUSERS_FILE).read_bytes()
    assert (a.out / KOHYA_FILE).read_bytes() == (b.out / KOHYA_FILE).read_bytes()
    assert b.manifest["cache"]["misses"] == 0  # latents and embeddings came from the disk cache
    other = tiny_config(
        tmp_path,
        name="other.yaml",
        images=load_training_config(cfg).data_path,
        max_steps=6,
        checkpoint_every=2,
        seed=8,
    )
    c = train(load_training_config(other), tmp_path / "run-c", progress=False)
    assert (a.out / DIFFUSERS_FILE).read_bytes() != (c.out / DIFFUSERS_FILE).read_bytes()


def test_finished_run_is_reused_and_never_overwritten(trained, tmp_path):
    cfg, a = trained
    before = (a.out / DIFFUSERS_FILE).stat().st_mtime_ns
    again = train(load_training_config(cfg), a.out, progress=False)
    assert again.reused and (a.out / DIFFUSERS_FILE).stat().st_mtime_ns == before
    changed = tiny_config(
        tmp_path, name="changed.yaml", images=load_training_config(cfg).data_path, max_steps=5
    )
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="finished training of a different config"):
        train(load_training_config(changed), a.out, progress=False)
    assert (a.out / DIFFUSERS_FILE).stat().st_mtime_ns == before


def test_sigkill_then_resume_gives_the_uninterrupted_bytes(trained, tmp_path, harness_cache):
    cfg, a = trained
    out = tmp_path / "killed"
    env = {
        **os.environ,
        "HARNESS_CACHE": str(harness_cache),
        "HARNESS_TRAIN_STALL_AFTER_STEP": "4",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.train.cli", "train", str(cfg), "--out", str(out), "--quiet"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    marker = out / "checkpoints" / "step-000004" / "state.json"
    deadline = time.monotonic() + 120
    while not marker.is_file():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / DIFFUSERS_FILE).exists()
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="--resume"):
        train(load_training_config(cfg), out, progress=False)
    r = train(load_training_config(cfg), out, resume=True, progress=False)
    assert r.manifest["resumed_from_step"] == 4
    assert (r.out / DIFFUSERS_FILE).read_bytes() == (a.out / DIFFUSERS_FILE).read_bytes()
    assert (r.out / "loss.csv").read_text() == (a.out / "loss.csv").read_text()


def test_trained_lora_changes_the_panels_and_scale_zero_restores_them(trained, tiny_model_dir):
    import numpy as np
    import torch

    from harness.device import Placement
    from harness.lora.apply import apply_lora
    from harness.models.loader import load_pipeline

    _, a = trained
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a busy 2-core machine
    try:
        _check_render(a, tiny_model_dir, load_pipeline, apply_lora, Placement, np, torch)
    finally:
        torch.set_num_threads(threads)


def _check_render(a, tiny_model_dir, load_pipeline, apply_lora, Placement, np, torch):
    pipe = load_pipeline(tiny_model_dir, Placement("cpu", "float32"))

    def render():
        img = pipe(
            prompt=["二次元，红色"],
            negative_prompt=[""],
            height=64,
            width=64,
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(1),
            guidance_scale=4.0,
        ).images[0]
        return np.asarray(img)

    base = render()
    apply_lora(pipe, a.out / DIFFUSERS_FILE, 1.0)
    assert pipe.unet.peft_config["story"].lora_alpha == 4.0 and pipe.unet.peft_config["story"].r == 4
    with_lora = render()
    assert np.abs(with_lora.astype(int) - base.astype(int)).max() > 0
    pipe.set_adapters(["story"], adapter_weights=[0.0])
    assert np.array_equal(render(), base)
