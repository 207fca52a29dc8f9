"""The one Kolors pipeline a process keeps between requests, with LoRAs swapped on it.

`harness run` renders, then re-renders for the reproducibility check; `harness verify --all`
and `harness sweep` render request after request, each with its own LoRA or strength on the same
Kolors. None of them should read 17.8 GB of weights more than once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import device as dev
from harness.device import Placement
from harness.errors import HarnessError
from harness.lora.apply import LORA_ADAPTER, apply_lora
from harness.models import loader  # by module: a test counting loads patches loader.load_pipeline


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
        pipe = loader.load_pipeline(folder, placement, progress=progress)
        _kept.append(_Kept(model_sha256, placement, pipe))
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
        loader.stage(_kept[0].pipe, None, _kept[0].placement.device)


def release_pipeline() -> None:
    """Drop the kept pipeline and give its memory back."""
    if _kept:
        _kept.clear()
        dev.release()
