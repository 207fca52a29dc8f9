"""Render the validation prompts with the adapter being trained. A writer: it changes no weights.

Uses prompt embeddings computed with the training captions (cache.py) and the VAE kept on the
CPU; the UNet is the live peft-wrapped one, put back into training mode afterwards. Each prompt
has its own CPU generator, so these images never consume the trainer's random numbers.
"""

from __future__ import annotations

from pathlib import Path


def render_validation(
    unet, vae, scheduler_config, texts: dict, cfg, step: int, out: Path, device: str
) -> list[Path]:
    import torch
    from diffusers import EulerDiscreteScheduler, KolorsPipeline

    v = cfg.validation
    folder = out / "validation" / f"step-{step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    was_training = unet.training
    unet.eval()
    vae.to(device)
    pipe = KolorsPipeline(
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(scheduler_config),
    )
    pipe.set_progress_bar_config(disable=True)
    neg_e, neg_p = texts[v.negative_prompt]
    paths = []
    dtype = next(unet.parameters()).dtype
    try:
        for i, prompt in enumerate(v.prompts, start=1):
            e, p = texts[prompt]
            with torch.no_grad():
                image = pipe(
                    prompt_embeds=e.to(device, dtype),
                    pooled_prompt_embeds=p.to(device, dtype),
                    negative_prompt_embeds=neg_e.to(device, dtype),
                    negative_pooled_prompt_embeds=neg_p.to(device, dtype),
                    height=cfg.resolution,
                    width=cfg.resolution,
                    num_inference_steps=v.steps,
                    guidance_scale=v.guidance,
                    generator=torch.Generator("cpu").manual_seed(v.seed + i - 1),
                ).images[0]
            path = folder / f"{i:02d}.png"
            image.save(path)
            paths.append(path)
    finally:
        vae.to("cpu")
        unet.train(was_training)
    return paths
