"""Load a KolorsPipeline from a resolved folder onto a placement, and apply a LoRA.

Owns: from_pretrained arguments (fp16 variant detection, offline), device moves, and LoRA
application with its strength. The same code loads the real Kolors and the tiny one.
"""

from __future__ import annotations

from pathlib import Path

from harness.device import Placement
from harness.errors import HarnessError

LORA_ADAPTER = "story"


def weights_variant(folder: Path) -> str | None:
    """Kolors-diffusers ships `*.fp16.safetensors`; use them when no full-precision file exists."""
    unet = folder / "unet"
    if (unet / "diffusion_pytorch_model.safetensors").is_file():
        return None
    if (unet / "diffusion_pytorch_model.fp16.safetensors").is_file():
        return "fp16"
    return None


def load_pipeline(folder: Path, placement: Placement, *, progress: bool = True):
    """KolorsPipeline.from_pretrained on a local folder (never the network), moved to the device."""
    from diffusers import KolorsPipeline
    from diffusers.utils import logging as dlog

    if not progress:
        dlog.disable_progress_bar()
    try:
        pipe = KolorsPipeline.from_pretrained(
            str(folder),
            torch_dtype=placement.dtype,
            variant=weights_variant(folder),
            local_files_only=True,
            use_safetensors=True,
        )
    finally:
        dlog.enable_progress_bar()
    if placement.dtype_name == "float16":
        pipe.vae.config.force_upcast = True  # the SDXL VAE overflows in fp16
    pipe.set_progress_bar_config(disable=True)  # the render loop shows one bar for the story
    return pipe.to(placement.device)


def apply_lora(pipe, path: Path, scale: float) -> None:
    """Load a diffusers/PEFT-naming LoRA into the UNet and set its strength."""
    try:
        pipe.load_lora_weights(str(path), adapter_name=LORA_ADAPTER)
    except Exception as e:  # wrong keys or shapes: one line naming the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HarnessError(f"{path}: cannot be applied as a Kolors LoRA: {first}") from None
    pipe.set_adapters([LORA_ADAPTER], adapter_weights=[scale])
