"""The training loop: peft LoRA on the Kolors UNet, epsilon objective on the 1100-step schedule.

Owns: adapter injection and its checks, optimizer and LR schedule, the data order (a seeded
permutation per epoch, so it is a pure function of seed and epoch), noise and timesteps (drawn
from one CPU generator whose state is checkpointed), min-SNR weighting, noise offset, mixed
precision (autocast in the compute dtype of `harness.device.plan("train", ...)`, a grad scaler
for float16), gradient accumulation and clipping. Same config + seed on the CPU => same bytes,
with or without a kill and `--resume` in between.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.config.training import TrainingConfig
from harness.device import Plan
from harness.errors import HarnessError

# Test hook: stall forever after the checkpoint of this step is written (so a test can SIGKILL).
STALL_ENV = "HARNESS_TRAIN_STALL_AFTER_STEP"


@dataclass
class LoopResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    resumed_from: int | None = None
    validations: list[str] = field(default_factory=list)


def target_matches(unet, targets: list[str]) -> dict[str, int]:
    """How many UNet modules each target name selects (peft's rule: exact or `.name` suffix)."""
    names = [n for n, _ in unet.named_modules()]
    return {t: sum(1 for n in names if n == t or n.endswith("." + t)) for t in targets}


def check_targets(unet, targets: list[str]) -> None:
    counts = target_matches(unet, targets)
    empty = [t for t, n in counts.items() if n == 0]
    if empty:
        raise HarnessError(
            f"lora.target_modules: {', '.join(empty)} match(es) nothing in the UNet "
            "(Kolors attention layers are to_q, to_k, to_v, to_out.0)"
        )


def total_steps(cfg: TrainingConfig, n_examples: int) -> int:
    per_epoch = math.ceil(n_examples / cfg.batch_size)
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * per_epoch / cfg.gradient_accumulation))


def _order(seed: int, epoch: int, n: int) -> list[int]:
    import torch

    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=g).tolist()


def _micro_batch(k: int, seed: int, n: int, bs: int) -> list[int]:
    per_epoch = math.ceil(n / bs)
    epoch, pos = divmod(k, per_epoch)
    return _order(seed, epoch, n)[pos * bs : (pos + 1) * bs]


def add_lora(unet, cfg: TrainingConfig) -> None:
    """Inject the adapter with gaussian-initialised A (seeded) and zero B, kept in float32."""
    import torch
    from peft import LoraConfig

    check_targets(unet, cfg.lora.target_modules)
    unet.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    unet.add_adapter(
        LoraConfig(
            r=cfg.lora.rank,
            lora_alpha=cfg.lora.alpha,
            target_modules=list(cfg.lora.target_modules),
            init_lora_weights="gaussian",
            use_dora=cfg.lora.dora,
        )
    )
    for p in unet.parameters():
        if p.requires_grad:
            p.data = p.data.float()


def run(
    cfg: TrainingConfig,
    *,
    unet,
    enc,
    examples,
    key: str,
    out: Path,
    plan: Plan,
    scheduler_config,
    resume_from: Path | None,
    progress: bool,
    on_validate=None,
    on_checkpoint=None,
) -> LoopResult:
    import torch
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from harness.train import checkpoint

    noise_sched = DDPMScheduler.from_config(scheduler_config)
    alphas_cumprod = noise_sched.alphas_cumprod.float()
    num_t = noise_sched.config.num_train_timesteps

    params = [p for p in unet.parameters() if p.requires_grad]
    o = cfg.optimizer
    if o.name == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise HarnessError(
                "optimizer.name prodigy needs the prodigyopt package: pip install prodigyopt"
            ) from None
        optimizer = Prodigy(
            params, lr=o.learning_rate, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, eps=o.epsilon
        )
    else:
        optimizer = torch.optim.AdamW(
            params,
            lr=o.learning_rate,
            betas=(o.beta1, o.beta2),
            weight_decay=o.weight_decay,
            eps=o.epsilon,
            foreach=False,
        )
    steps = total_steps(cfg, len(examples))
    lr_scheduler = get_scheduler(
        cfg.schedule.name, optimizer, num_warmup_steps=cfg.schedule.warmup_steps, num_training_steps=steps
    )
    device = plan.device
    weight_dtype = plan.torch_dtype(plan.weights)  # the frozen UNet's; inputs are cast to it
    amp_dtype = plan.torch_dtype(plan.compute)  # under autocast only when the policy says half
    scaler = torch.amp.GradScaler("cuda") if plan.compute == "float16" else None  # fp16 needs scaling
    noise_gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()

    result = LoopResult(steps=steps)
    start = 0
    if resume_from is not None:
        st = checkpoint.load(
            resume_from,
            key=key,
            unet=unet,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            scaler=scaler,
            noise_gen=noise_gen,
        )
        start, result.losses, result.lrs, result.resumed_from = st.step, st.losses, st.lrs, st.step

    stall = int(os.environ.get(STALL_ENV, "0") or 0)
    n = len(examples)
    bar = tqdm(total=steps, initial=start, desc="training", unit="step", disable=not progress)
    for step in range(start, steps):
        step_loss = 0.0
        for a in range(cfg.gradient_accumulation):
            idx = _micro_batch(step * cfg.gradient_accumulation + a, cfg.seed, n, cfg.batch_size)
            latents = torch.cat([enc.latents[i] for i in idx]).to(device)
            caps = [examples[i].item.caption for i in idx]
            embeds = torch.cat([enc.texts[c][0] for c in caps]).to(device)
            pooled = torch.cat([enc.texts[c][1] for c in caps]).to(device)
            time_ids = torch.tensor([examples[i].time_ids for i in idx], dtype=torch.float32, device=device)
            noise = torch.randn(latents.shape, generator=noise_gen)
            if cfg.noise_offset:
                noise = noise + cfg.noise_offset * torch.randn(
                    (latents.shape[0], latents.shape[1], 1, 1), generator=noise_gen
                )
            t = torch.randint(0, num_t, (latents.shape[0],), generator=noise_gen)
            noise = noise.to(device)
            noisy = noise_sched.add_noise(latents, noise, t.to(device))
            with torch.autocast(device_type=device, dtype=amp_dtype, enabled=plan.autocast):
                pred = unet(
                    noisy.to(weight_dtype),
                    t.to(device),
                    encoder_hidden_states=embeds.to(weight_dtype),
                    added_cond_kwargs={
                        "text_embeds": pooled.to(weight_dtype),
                        "time_ids": time_ids.to(weight_dtype),
                    },
                ).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise.float(), reduction="none").mean(
                dim=(1, 2, 3)
            )
            if cfg.min_snr_gamma is not None:
                ac = alphas_cumprod[t]
                snr = ac / (1 - ac)
                loss = loss * (torch.clamp(snr, max=cfg.min_snr_gamma) / snr).to(loss.device)
            loss = loss.mean() / cfg.gradient_accumulation
            (scaler.scale(loss) if scaler is not None else loss).backward()
            step_loss += float(loss.detach())
        if scaler is not None:
            scaler.unscale_(optimizer)
        if o.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        result.lrs.append(float(lr_scheduler.get_last_lr()[0]))
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        result.losses.append(step_loss)
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}")
        if (
            on_validate is not None
            and cfg.validation.every
            and done % cfg.validation.every == 0
            and done < steps
        ):
            result.validations.extend(on_validate(done))
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < steps:
            checkpoint.save(
                out,
                step=done,
                key=key,
                unet=unet,
                optimizer=optimizer,
                lr_scheduler=lr_scheduler,
                scaler=scaler,
                noise_gen=noise_gen,
                losses=result.losses,
                lrs=result.lrs,
                keep=cfg.keep_checkpoints,
            )
            if on_checkpoint is not None:
                on_checkpoint(done, result)
            if stall and done == stall:
                time.sleep(3600)
    bar.close()
    return result
