"""The one render path: render (`harness.render.run`) and re-render (`harness.score.reproduce`)
both go through these functions, so the pixels the judges replay are made the way the team's were.

Owns: the sequence from a (model, placement, LoRA sha256, scale) request to a pipeline ready to
draw (resolve the model reference, hold its content to an expected sha256, place it, make torch
deterministic, `harness.render.pipelines.pipeline_for`, which loads the base once and swaps LoRAs),
and rendering a list of panels on it (`harness.render.engine.render`). Must not write files:
the callers decide what happens to the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.device import Placement
    from harness.models.resolve import ResolvedModel
    from harness.render.engine import PanelJob


def resolve_model(ref: str, *, sha256: str | None = None, label: str = "base model") -> "ResolvedModel":
    """The local folder of model reference `ref`; with `sha256`, refuse content that differs
    (a re-render replays the recorded weights or none)."""
    from harness.config.refs import parse_ref
    from harness.models.resolve import resolve

    try:
        parsed = parse_ref(ref)
    except ValueError as e:
        raise HarnessError(f"{label}: {e}") from None
    model = resolve(parsed)
    if sha256 is not None and model.sha256 != sha256:
        raise HarnessError(
            f"model {parsed}: content sha256 {model.sha256[:12]}... differs from the recorded "
            f"{str(sha256)[:12]}...; refusing to re-render with different weights"
        )
    return model


def place(model: "ResolvedModel", device: str = "auto") -> "Placement":
    """Where `model` renders when `device` (auto / cpu / cuda) is asked for (`harness.device`)."""
    from harness import device as dev

    return dev.choose(model.ref.source, device)  # type: ignore[arg-type]


@dataclass(frozen=True)
class PipelineRequest:
    """Everything that decides which pipeline draws: the model's content, where it sits and in
    which dtype, and the LoRA file (by content) with its strength."""

    model: "ResolvedModel"
    placement: "Placement"
    lora_path: Path | None = None
    lora_sha256: str | None = None
    lora_scale: float = 1.0

    def __post_init__(self) -> None:
        if (self.lora_path is None) != (self.lora_sha256 is None):
            raise ValueError("a LoRA is given by both its file and its sha256, or not at all")


def prepare_pipeline(request: PipelineRequest, *, progress: bool = True) -> Any:
    """The pipeline for `request`, ready to draw: deterministic settings, the base model loaded
    once (or kept from the last call) and the LoRA swapped in at its scale."""
    from harness import device as dev
    from harness.render.pipelines import pipeline_for

    dev.make_deterministic(request.placement)
    return pipeline_for(
        request.model.folder,
        request.model.sha256,
        request.placement,
        request.lora_path,
        request.lora_sha256,
        request.lora_scale if request.lora_path is not None else 1.0,
        progress=progress,
    )


def render_panels(
    pipe: Any,
    request: PipelineRequest,
    jobs: "list[PanelJob]",
    sampling: Any,
    *,
    batch_size: int = 1,
    progress: bool = True,
    on_batch: Callable[[list], None] | None = None,
) -> list:
    """Draw `jobs` (in this order, chunked by `batch_size`) on `pipe`; [(job, PIL image)].
    `on_batch` sees each batch as it lands (the render writes panels as they come)."""
    from harness.render.engine import render

    return render(
        pipe,
        jobs,
        sampling,
        device=request.placement.device,
        batch_size=batch_size,
        progress=progress,
        on_batch=on_batch,
    )
