"""Denoise story panels with a loaded KolorsPipeline.

Owns: prompt encoding (each distinct text once), per-panel CPU generators, batching and the
progress bar. It returns PIL images; it never writes files.

Reproducibility contract: a panel's initial noise comes only from its own CPU generator seeded
with its seed, so it does not depend on which panels share its batch. With batch_size 1 (the
default) every panel is its own conditional+unconditional pair and its pixels are bit-identical
whether it is rendered alone or within the story. Larger batches are faster on a GPU, but batched
kernels may round differently (measured on CPU: ~1e-6), which can flip a uint8 pixel; the batch
size is recorded with every panel so a re-render can replay it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from PIL import Image

    from harness.config.story import Sampling


@dataclass(frozen=True)
class PanelJob:
    index: int  # 1-based panel number
    prompt: str
    negative_prompt: str
    seed: int


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def encode_texts(pipe, texts: list[str], device: str) -> dict[str, tuple]:
    """Encode each distinct text once: text -> (embeds [1,256,H], pooled [1,H])."""
    import torch

    out: dict[str, tuple] = {}
    with torch.inference_mode():
        for text in dict.fromkeys(texts):
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=[text], device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            out[text] = (embeds, pooled)
    return out


def render(
    pipe,
    jobs: list[PanelJob],
    sampling: "Sampling",
    *,
    device: str,
    batch_size: int = 1,
    progress: bool = True,
    on_batch=None,
) -> list[tuple[PanelJob, "Image.Image"]]:
    """Render `jobs`; calls `on_batch(list of (job, image))` after each batch if given.

    Each phase's components are put on `device` first (`harness.models.loader.stage`: the
    text encoder for encoding, then the UNet and VAE; a pipeline `place`d resident keeps all).
    """
    import torch
    from tqdm.auto import tqdm

    from harness.config.schedulers import make_scheduler
    from harness.models.loader import stage

    original_scheduler = pipe.scheduler
    base_scheduler_config = original_scheduler.config
    stage(pipe, "encode", device)
    encoded = encode_texts(pipe, [t for j in jobs for t in (j.prompt, j.negative_prompt)], device)
    stage(pipe, "denoise", device)  # ChatGLM leaves the GPU before the UNet arrives

    bar = tqdm(
        total=len(jobs) * sampling.steps, desc="denoising", unit="step", disable=not progress, leave=True
    )

    def step_done(_pipe, _step, _t, kwargs):
        bar.update(len(batch))
        return kwargs

    results: list[tuple[PanelJob, Image.Image]] = []
    try:
        for batch in _chunks(jobs, batch_size):
            bar.set_postfix_str("panels " + ",".join(str(j.index) for j in batch))
            pipe.scheduler = make_scheduler(sampling.scheduler, base_scheduler_config)
            generators = [torch.Generator("cpu").manual_seed(j.seed) for j in batch]
            with torch.inference_mode():
                images = pipe(
                    prompt_embeds=torch.cat([encoded[j.prompt][0] for j in batch]),
                    pooled_prompt_embeds=torch.cat([encoded[j.prompt][1] for j in batch]),
                    negative_prompt_embeds=torch.cat([encoded[j.negative_prompt][0] for j in batch]),
                    negative_pooled_prompt_embeds=torch.cat([encoded[j.negative_prompt][1] for j in batch]),
                    num_inference_steps=sampling.steps,
                    guidance_scale=sampling.guidance,
                    height=sampling.height,
                    width=sampling.width,
                    generator=generators,
                    output_type="pil",
                    callback_on_step_end=step_done,
                ).images
            done = list(zip(batch, images, strict=True))
            results.extend(done)
            if on_batch is not None:
                on_batch(done)
    finally:
        bar.close()
        pipe.scheduler = original_scheduler
    return results
