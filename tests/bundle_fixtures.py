"""Shared by the bundle tests: one tiny run with a real (non-zero) LoRA, rendered and bundled once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import small_story

_CACHE: dict[str, Path] = {}


def make_lora(folder: Path, tiny_model_dir: Path, seed: int = 0, dora: bool = False) -> Path:
    """A diffusers-naming LoRA (or DoRA) for the tiny UNet with non-zero weights drawn from `seed`."""
    import torch
    from diffusers import KolorsPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from harness.device import Placement
    from harness.models.loader import load_pipeline

    pipe = load_pipeline(tiny_model_dir, Placement("cpu", "float32"), progress=False)
    torch.manual_seed(seed)
    pipe.unet.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
            use_dora=dora,
        )
    )
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    folder.mkdir(parents=True, exist_ok=True)
    KolorsPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A complete 8-panel run (64x64, 4 steps) of the demo story with a LoRA at scale 0.8."""
    if "run" not in _CACHE:
        from harness.config.story import load_story
        from harness.render.run import render_story

        root = tmp_path_factory.mktemp("bundle-src")
        make_lora(root / "loras", tiny_model_dir)
        story = root / "story.yaml"
        data = small_story(lora={"path": "loras/pytorch_lora_weights.safetensors", "scale": 0.8})
        story.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        render_story(load_story(story), root / "run", progress=False)
        _CACHE["run"] = root / "run"
    return _CACHE["run"]


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory, demo_run) -> Path:
    """The bundle of `demo_run` (never modify it: copy it with `copy_bundle`)."""
    if "bundle" not in _CACHE:
        from harness.bundle.writer import write_bundle

        out = tmp_path_factory.mktemp("submissions")
        _CACHE["bundle"] = write_bundle(demo_run, out_root=out, namespace="judges-test").path
    return _CACHE["bundle"]
