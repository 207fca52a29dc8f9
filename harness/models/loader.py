"""Load a KolorsPipeline from a resolved folder onto a placement, and apply a LoRA.

Owns: from_pretrained arguments (fp16 variant detection, offline), device moves (`stage`),
LoRA application with its strength, and keeping the last pipeline for an identical next request
(`pipeline_for`). The same code loads the real Kolors and the tiny one.

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
from dataclasses import dataclass
from pathlib import Path

from harness import device as dev
from harness.device import Placement
from harness.errors import HarnessError, first_line

LORA_ADAPTER = "story"

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


@dataclass
class _Kept:
    """The one pipeline kept between requests: its base (model sha256, placement) and LoRA."""

    model_sha256: str
    placement: Placement
    pipe: object
    lora: tuple[str, float] | None = None  # (LoRA sha256, scale) now applied, or None


# `harness run` renders, then re-renders for the reproducibility check; `harness verify --all`
# re-renders bundle after bundle, each with its own LoRA on the same Kolors. Neither should read
# 17.8 GB of weights more than once: the last pipeline is kept, and a request for another LoRA on
# the same base swaps the LoRA (unloading a PEFT adapter leaves the base weights untouched, so the
# pixels are those of a fresh load). At most one pipeline is kept; another base releases it first.
_kept: list[_Kept] = []


def pipeline_for(
    folder: Path,
    model_sha256: str,
    placement: Placement,
    lora: Path | None = None,
    lora_sha256: str | None = None,
    lora_scale: float = 1.0,
    *,
    progress: bool = True,
):
    """A loaded pipeline for this model and placement with this LoRA (or none) applied.

    The key is content, not paths: the model folder's sha256 and the LoRA file's. The same base
    is reused across LoRAs and scales; a different base is loaded after the kept one is released.
    """
    if not _kept or (_kept[0].model_sha256, _kept[0].placement) != (model_sha256, placement):
        release_pipeline()
        _kept.append(_Kept(model_sha256, placement, load_pipeline(folder, placement, progress=progress)))
    kept = _kept[0]
    if lora is not None and lora_sha256 is None:
        from harness.hashing import sha256_file

        lora_sha256 = sha256_file(lora)
    wanted = (lora_sha256, float(lora_scale)) if lora is not None else None
    if kept.lora == wanted:
        return kept.pipe
    if kept.lora is not None and (wanted is None or kept.lora[0] != wanted[0]):
        kept.pipe.unload_lora_weights()  # removes the PEFT layers; base weights were never changed
        kept.lora = None
    if wanted is not None:
        if kept.lora is None:
            try:
                apply_lora(kept.pipe, lora, wanted[1])
            except HarnessError:
                release_pipeline()  # a half-applied adapter must not serve the next request
                raise
        else:
            kept.pipe.set_adapters([LORA_ADAPTER], adapter_weights=[wanted[1]])
        kept.lora = wanted
    return kept.pipe


def park_pipeline() -> None:
    """Move the kept pipeline's weights off the accelerator (kept in host memory for reuse).

    Scoring calls this before loading its own models, so Kolors and the scorers are never on the
    GPU together. A parked pipeline renders as before: `render` stages what each phase needs.
    """
    if _kept:
        stage(_kept[0].pipe, None, _kept[0].placement.device)


def release_pipeline() -> None:
    """Drop the kept pipeline and give its memory back."""
    if _kept:
        _kept.clear()
        dev.release()


def apply_lora(pipe, path: Path, scale: float) -> None:
    """Load a diffusers/PEFT- or kohya-naming LoRA into the UNet and set its strength.

    The file first goes through the judges' check against this UNet (`harness.lora.checks`):
    what renders here is what `verify` accepts, and a wrong file gets that check's one line.
    """
    from diffusers.utils import logging as dlog

    from harness.lora.checks import check_lora, linear_shapes

    problems, facts = check_lora(path, linear_shapes(pipe.unet))
    if not problems and facts.get("format") == "diffsynth":
        problems = ["DiffSynth naming; convert it with `harness lora import FILE --out DIR` first"]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise HarnessError(f"{path}: cannot be applied as a Kolors LoRA: {problems[0]}{more}")
    dlog.disable_default_handler()  # diffusers logs a failure in full before raising it
    try:
        pipe.load_lora_weights(str(path), adapter_name=LORA_ADAPTER)
    except Exception as e:  # anything the check above could not see: one line naming the file
        raise HarnessError(f"{path}: cannot be applied as a Kolors LoRA: {first_line(e)}") from None
    finally:
        dlog.enable_default_handler()
    pipe.set_adapters([LORA_ADAPTER], adapter_weights=[scale])
