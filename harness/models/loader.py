"""Load a KolorsPipeline from a resolved folder onto a placement.

Owns: from_pretrained arguments (fp16 variant detection, offline) and device moves (`stage`,
`place`). The same code loads the real Kolors and the tiny one. Applying a LoRA is
`harness.lora.apply`; keeping one pipeline between requests is `harness.render.pipelines`.

Staging: a render has two phases, encoding the prompts (ChatGLM3-6B, 12.5 GB in bf16) and
denoising + decoding (UNet 5.2 GB, VAE 0.17 GB). On CUDA only the components of the current
phase are on the GPU; the others wait on the CPU. The render's peak is then about the larger of
the two phases instead of their sum (17.8 GB of weights), and a pipeline can render any number of
times. On the CPU staging moves nothing. A pipeline `place`d resident instead keeps every
component on the device through every phase (the benchmark's all-resident variant; the harness
itself always stages). Dtypes come from the placement, decided by `harness.device`.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from harness import device as dev
from harness.device import Placement

# The pipeline components each phase of a render needs on the execution device.
PHASES: dict[str, tuple[str, ...]] = {"encode": ("text_encoder",), "denoise": ("unet", "vae")}
STAGED = ("text_encoder", "unet", "vae")


# Pipelines placed with every component resident on their device (see `place`).
_resident: weakref.WeakSet = weakref.WeakSet()


def stage(pipe, phase: str | None, device: str) -> None:
    """Put what `phase` needs on `device`; on an accelerator, move the other components to the CPU.

    The others leave first, so the two phases' weights are never on the GPU together. Phase None
    puts everything on the CPU (a parked pipeline, resident or not). A resident pipeline (see
    `place`) keeps every component on the device for either phase.
    """
    if phase is None:
        _resident.discard(pipe)
        wanted: tuple[str, ...] = ()
    else:
        wanted = STAGED if pipe in _resident else PHASES[phase]
    if device != "cpu":
        for name in STAGED:
            module = getattr(pipe, name, None)
            if name not in wanted and module is not None:
                module.to("cpu")
        dev.release(collect=False)
    for name in wanted:
        module = getattr(pipe, name, None)
        if module is not None:
            module.to(device)


def place(pipe, device: str, *, resident: bool) -> None:
    """Place `pipe` for its next render: staged per phase (the default), or every component resident.

    Resident trades memory for speed: the text encoder and the UNet share the GPU (17.8 GB of
    weights at full size in bf16), and no weights move between phases. Either way `render`'s
    pixels are the same: placement moves weights, it never changes the arithmetic.
    """
    if resident:
        _resident.add(pipe)
    else:
        _resident.discard(pipe)
    stage(pipe, "encode", device)


def weights_variant(folder: Path) -> str | None:
    """Kolors-diffusers ships `*.fp16.safetensors`; use them when no full-precision file exists."""
    unet = folder / "unet"
    if (unet / "diffusion_pytorch_model.safetensors").is_file():
        return None
    if (unet / "diffusion_pytorch_model.fp16.safetensors").is_file():
        return "fp16"
    return None


def load_pipeline(folder: Path, placement: Placement, *, progress: bool = True):
    """KolorsPipeline.from_pretrained on a local folder (never the network), staged for encoding.

    Weights are read onto the CPU; only the text encoder goes to the device now (see `stage`).
    """
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
    if placement.vae_dtype_name != placement.dtype_name:
        pipe.vae.config.force_upcast = True  # decode in float32 (harness.device: the VAE overflows in fp16)
    pipe.set_progress_bar_config(disable=True)  # the render loop shows one bar for the story
    stage(pipe, "encode", placement.device)
    return pipe
