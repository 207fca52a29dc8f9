"""Training section: LoRA steps per second and peak GPU memory, the baseline way and cached.

Both ways run the harness's own training step (`harness.train.loop.add_lora` and
`harness.train.loop.run`: noise and timesteps from a CPU generator, epsilon MSE, AdamW on the
LoRA parameters kept in float32, autocast, optional gradient checkpointing) on one image at the
benchmark resolution with the baseline's caption. What differs is where the conditioning comes
from:
- "baseline_way": as the DiffSynth baseline, the VAE encodes the image and ChatGLM encodes the
  caption at every step; text encoder, VAE and UNet all stay on the device. The loop reads
  `enc.latents[i]` and `enc.texts[caption]`; here those lookups run the encoders.
- "cached": as `harness.train.cache.encode_all`, latents (VAE in float32) and embeddings are
  computed once, both encoders are released, then the UNet is built and trained alone.
Devices and dtypes are the harness's training plan (`Settings.train`, from `harness.device`):
UNet weights and autocast by mixed precision, the text encoder in the plan's text-encoder dtype,
the cached way's VAE in the plan's VAE dtype (float32); the baseline way's VAE runs in the UNet's
dtype, as DiffSynth does. Memory is freed with `harness.device.release`.
Nothing is written except the loop's (unused) run folder under a temporary directory.
"""

from __future__ import annotations

import tempfile
from types import SimpleNamespace

from bench.bench_util import Settings, log, now, peak_gib, reset_peak
from harness.device import MIXED_PRECISION_OF, release

CAPTION = "二次元"  # every caption of the DiffSynth baseline
MAX_TOKENS = 256


def _image(size: int):
    """A fixed random picture as the VAE sees it: [1, 3, size, size] in [-1, 1]."""
    import torch

    gen = torch.Generator("cpu").manual_seed(1234)
    return torch.rand((1, 3, size, size), generator=gen) * 2 - 1


def encode_image(vae, px, device):
    import torch

    with torch.no_grad():
        lat = vae.encode(px.to(device, vae.dtype)).latent_dist.mean * vae.config.scaling_factor
    return lat.float()


def encode_caption(te, tok, text: str, device):
    """Kolors' prompt encoding, as harness.train.cache does it: hidden_states[-2], pooled last token."""
    import torch

    inputs = tok(
        [text], padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).to(device)
    with torch.no_grad():
        out = te(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            position_ids=inputs["position_ids"],
            output_hidden_states=True,
        )
    return out.hidden_states[-2].permute(1, 0, 2).float(), out.hidden_states[-1][-1, :, :].float()


class _EveryStep:
    """Stands in for harness.train.cache.EncodedData: each micro-batch runs both encoders again.

    The loop reads the latent first, then the caption's embeddings twice (embeds, pooled); the
    caption is encoded once per latent read, so each step costs one VAE and one ChatGLM pass.
    """

    def __init__(self, encode_latent, encode_text):
        outer = self
        self._memo: dict = {}
        self.counts = {"vae": 0, "text": 0}

        class Latents:
            def __getitem__(self, i):
                outer._memo.clear()
                outer.counts["vae"] += 1
                return encode_latent(i)

        class Texts:
            def __getitem__(self, text):
                if text not in outer._memo:
                    outer.counts["text"] += 1
                    outer._memo[text] = encode_text(text)
                return outer._memo[text]

        self.latents = Latents()
        self.texts = Texts()


def _config(settings: Settings, steps: int):
    from harness.config.training import DataConfig, LoraConfigSpec, TrainingConfig

    mixed = MIXED_PRECISION_OF[settings.train.weights]  # the plan was made from this mixed precision
    return TrainingConfig(
        data=DataConfig(source="folder", path="(benchmark: one in-memory image)"),
        resolution=settings.size,
        lora=LoraConfigSpec(rank=settings.lora_rank, alpha=settings.lora_alpha),
        mixed_precision=mixed,
        gradient_checkpointing=settings.grad_checkpointing,
        max_steps=steps,
        seed=0,
    )


def _train(settings: Settings, unet, enc, scheduler_config, out_dir) -> dict:
    """Warm-up steps, then the timed steps, through harness.train.loop.run."""
    import math

    from harness.train import loop

    dev = settings.device
    s = settings.size
    examples = [SimpleNamespace(item=SimpleNamespace(caption=CAPTION), time_ids=[s, s, 0, 0, s, s])]
    common = dict(
        unet=unet,
        enc=enc,
        examples=examples,
        key="kolors-bench",
        out=out_dir,
        plan=settings.train,
        scheduler_config=scheduler_config,
        resume_from=None,
        progress=False,
    )
    cfg = _config(settings, settings.train_steps)
    loop.add_lora(unet, cfg)
    lora_params = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    if settings.train_warmup:
        loop.run(cfg.model_copy(update={"max_steps": settings.train_warmup}), **common)
    t0 = now(dev)
    result = loop.run(cfg, **common)
    seconds = now(dev) - t0
    return {
        "steps": settings.train_steps,
        "warmup_steps": settings.train_warmup,
        "seconds": round(seconds, 4),
        "seconds_per_step": round(seconds / settings.train_steps, 4),
        "steps_per_s": round(settings.train_steps / seconds, 4),
        "peak_vram_gib": peak_gib(dev),
        "lora_params": lora_params,
        "losses_finite": all(math.isfinite(v) for v in result.losses),
        "mixed_precision": cfg.mixed_precision,
        "gradient_checkpointing": cfg.gradient_checkpointing,
    }


def run_baseline_way(settings: Settings, out_dir) -> dict:
    from bench.kolors_arch import build_parts

    plan = settings.train
    dev, dt = plan.device, plan.torch_dtype(plan.weights)
    log("train (baseline way): building UNet, VAE and text encoder on the device")
    release()
    reset_peak(dev)
    parts = build_parts(
        dev, {"unet": dt, "vae": dt, "text_encoder": plan.torch_dtype(plan.text_encoder)}, tiny=settings.tiny
    )
    te, tok, vae = parts["text_encoder"], parts["tokenizer"], parts["vae"]
    px = _image(settings.size)
    enc = _EveryStep(lambda i: encode_image(vae, px, dev), lambda text: encode_caption(te, tok, text, dev))
    log(f"train (baseline way): {settings.train_warmup} warm-up + {settings.train_steps} timed steps")
    result = _train(settings, parts["unet"], enc, parts["scheduler"].config, out_dir)
    result["encoder_calls"] = dict(enc.counts)
    result["what"] = "VAE-encode the image and text-encode the caption at every step (DiffSynth baseline)"
    result["vae_dtype"] = plan.weights
    result["text_encoder_dtype"] = plan.text_encoder
    return result  # the models go with this frame; run_train frees the memory


def run_cached(settings: Settings, out_dir) -> dict:
    from bench.kolors_arch import build_parts
    from harness.train.cache import EncodedData

    plan = settings.train
    dev = plan.device
    log(f"train (cached): encoding once with the VAE ({plan.vae}) and the text encoder ({plan.text_encoder})")
    release()
    reset_peak(dev)
    t0 = now(dev)
    te_vae = {"vae": plan.torch_dtype(plan.vae), "text_encoder": plan.torch_dtype(plan.text_encoder)}
    parts = build_parts(dev, te_vae, tiny=settings.tiny)
    enc = EncodedData()
    enc.latents.append(encode_image(parts["vae"], _image(settings.size), dev).cpu())
    embeds, pooled = encode_caption(parts["text_encoder"], parts["tokenizer"], CAPTION, dev)
    enc.texts[CAPTION] = (embeds.cpu(), pooled.cpu())
    encode_s = now(dev) - t0
    encode_peak = peak_gib(dev)
    scheduler_config = parts["scheduler"].config
    del parts
    release()  # as harness.train.cache does after encoding

    reset_peak(dev)
    log("train (cached): building the UNet alone")
    unet = build_parts(dev, {"unet": plan.torch_dtype(plan.weights)}, tiny=settings.tiny)["unet"]
    log(f"train (cached): {settings.train_warmup} warm-up + {settings.train_steps} timed steps")
    result = _train(settings, unet, enc, scheduler_config, out_dir)
    result["what"] = "latents and embeddings computed once, encoders released; UNet forward/backward only"
    result["encode_once_s"] = round(encode_s, 4)
    result["encode_peak_vram_gib"] = encode_peak
    result["vae_dtype"] = plan.vae
    result["text_encoder_dtype"] = plan.text_encoder
    return result


def run_train(settings: Settings, state: dict) -> dict:
    """Both ways; one failing (e.g. out of memory) leaves the other's numbers."""
    from bench.bench_util import error_record

    out: dict = {"resolution": settings.size, "batch_size": 1, "lora_rank": settings.lora_rank}
    with tempfile.TemporaryDirectory(prefix="kolors-bench-train-") as tmp:
        for name, fn in (("baseline_way", run_baseline_way), ("cached", run_cached)):
            try:
                out[name] = {"status": "ok", **fn(settings, tmp)}
            except Exception as e:
                out[name] = error_record(e)
                log(f"train ({name}) failed: {type(e).__name__}: {e}")
            release()
    a, b = out.get("baseline_way", {}), out.get("cached", {})
    if a.get("status") == "ok" and b.get("status") == "ok":
        out["speedup_cached_over_baseline"] = round(b["steps_per_s"] / a["steps_per_s"], 4)
    else:
        out["speedup_cached_over_baseline"] = None
    return out
