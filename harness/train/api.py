"""Train a LoRA from a config: the one orchestration function, and the reuse rule for `harness run`.

Flow: validate config -> prepare data (reused when unchanged) -> resolve base model -> key ->
decide reuse / resume / fresh for the run folder -> check targets and image sizes -> encode and
cache -> release encoders -> train -> write every format, loss curve and manifest (last).
All input checks happen before anything is written into the run folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import __version__
from harness.config.training import LoadedTrainingConfig, load_training_config
from harness.config.yamlio import MAX_CONFIG_BYTES
from harness.device import release
from harness.errors import HarnessError
from harness.lora.export import DIFFUSERS_FILE
from harness.safeio import read_bytes, write_atomic
from harness.train import outdir

CONFIG_COPY = "config.yaml"


@dataclass
class TrainResult:
    out: Path
    manifest: dict[str, Any]
    reused: bool

    @property
    def lora(self) -> Path:
        return self.out / DIFFUSERS_FILE


def default_out(loaded: LoadedTrainingConfig, key: str) -> Path:
    from harness.paths import cache_dir

    return cache_dir() / "loras" / f"{loaded.path.stem}-{key[:16]}"


def _oom_message(cfg) -> str:
    tips = []
    if not cfg.gradient_checkpointing:
        tips.append("gradient_checkpointing: true")
    if cfg.mixed_precision == "no":
        tips.append("mixed_precision: bf16 (or fp16)")
    if cfg.batch_size > 1:
        tips.append(f"batch_size: 1 with gradient_accumulation: {cfg.batch_size * cfg.gradient_accumulation}")
    tips.append(f"a lower resolution than {cfg.resolution}")
    tips.append(
        f"a lower lora.rank than {cfg.lora.rank}" if cfg.lora.rank > 4 else "close other GPU programs"
    )
    return (
        "CUDA out of memory while training; settings that lower memory: "
        + ", ".join(tips)
        + " (checkpoints so far are kept: rerun with --resume)"
    )


def train(
    loaded: LoadedTrainingConfig,
    out: Path | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> TrainResult:
    """Train (or reuse, or resume) the LoRA `loaded` describes; see module docstring."""
    cfg = loaded.config
    from harness.data.prepare import ensure_prepared
    from harness.models.resolve import resolve
    from harness.train.dataset import check_sizes
    from harness.train.dataset import examples as make_examples

    if out is not None:  # a folder the user named: refused before anything is prepared or loaded
        outdir.check_out(Path(out))
    data = ensure_prepared(loaded)
    check_sizes(cfg, data)
    model = resolve(loaded.model_ref)
    key = outdir.training_key(cfg, data.data_sha256, model.sha256)
    label = f"--out {out}" if out is not None else None
    out = Path(out) if out is not None else default_out(loaded, key)
    action = outdir.decide(out, key, resume=resume, force=force, label=label or f"training folder {out}")
    if action == "reuse":
        return TrainResult(out, outdir.read_manifest(out), reused=True)

    import torch
    from diffusers import UNet2DConditionModel

    from harness import device as dev
    from harness.train import checkpoint, loop
    from harness.versions import library_versions

    # Device, UNet/autocast dtype and text-encoder dtype: the one policy (mixed_precision checks too).
    plan = dev.plan("train", device, tiny=model.ref.source == "tiny", mixed_precision=cfg.mixed_precision)
    folder = model.folder
    unet_config = UNet2DConditionModel.load_config(str(folder / "unet"))
    with torch.device("meta"):
        meta_unet = UNet2DConditionModel.from_config(unet_config)
    loop.check_targets(meta_unet, cfg.lora.target_modules)
    param_names = [n for n, _ in meta_unet.named_parameters()]
    del meta_unet
    exs = make_examples(cfg, data)

    # From here on the run folder is ours.
    resume_from = checkpoint.latest(out) if action == "resume" else None
    if action == "fresh" and out.exists():
        outdir.clear(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"{label or out}: cannot be created ({e.strerror})") from None
    manifest: dict[str, Any] = {
        "kind": "harness.train",
        "harness_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "training",
        "key": key,
        "config": cfg.model_dump(mode="json"),
        "config_source": str(loaded.path),
        "data": {
            "folder": str(data.folder),
            "sha256": data.data_sha256,
            "images": len(data.items),
            "examples": len(exs),
        },
        "model": {"ref": str(model.ref), "sha256": model.sha256},
        "seed": cfg.seed,
        "placement": {
            "device": plan.device,
            "weight_dtype": plan.weights,
            "mixed_precision": cfg.mixed_precision,
        },
        "libraries": library_versions(),
    }
    outdir.write_manifest(out, manifest)  # first: the marker that makes the folder the harness's
    write_atomic(out / CONFIG_COPY, read_bytes(loaded.path, max_bytes=MAX_CONFIG_BYTES, follow_links=True))

    dev.make_deterministic(plan.placement)
    threads = torch.get_num_threads()
    if plan.device == "cpu":
        # One thread: CPU bytes then do not depend on the core count (and the tiny model is faster).
        torch.set_num_threads(1)
    try:
        unet, result, t_encode, t_train, enc = _encode_and_train(
            loaded, out, data, folder, exs, key, plan, manifest, resume_from, progress
        )
    finally:
        torch.set_num_threads(threads)

    from peft.utils import get_peft_model_state_dict

    from harness.lora.export import write_all
    from harness.lora.formats import LoraMeta
    from harness.train.plots import write_loss_csv, write_loss_plot

    meta = LoraMeta(cfg.lora.rank, float(cfg.lora.alpha), tuple(cfg.lora.target_modules), cfg.lora.dora)
    files = write_all(get_peft_model_state_dict(unet), meta, out, unet_config, param_names)
    write_loss_csv(out / "loss.csv", result.losses, result.lrs)
    write_loss_plot(
        out / "loss.png", result.losses, f"{loaded.path.name}: rank {cfg.lora.rank}, alpha {cfg.lora.alpha}"
    )
    from harness.hashing import sha256_file

    manifest.update(
        status="complete",
        steps=result.steps,
        final_loss=result.losses[-1] if result.losses else None,
        resumed_from_step=result.resumed_from,
        files={
            fmt: ({"file": f, "sha256": sha256_file(out / f)} if (out / f).is_file() else {"skipped": f})
            for fmt, f in files.items()
        },
        loss_curve={"csv": "loss.csv", "png": "loss.png"},
        validation=result.validations,
        cache={"hits": enc.hits, "misses": enc.misses},
        timings_s={"encode": round(t_encode, 3), "train": round(t_train, 3)},
    )
    outdir.write_manifest(out, manifest)
    return TrainResult(out, manifest, reused=False)


def _encode_and_train(loaded, out, data, folder, exs, key, plan, manifest, resume_from, progress):
    import torch
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    from harness.hashing import sha256_tree
    from harness.models.loader import weights_variant
    from harness.paths import cache_dir
    from harness.train import loop
    from harness.train.cache import encode_all

    cfg = loaded.config
    t0 = time.perf_counter()
    digests = cache_dir() / "digests.json"
    v = cfg.validation
    texts = [e.item.caption for e in exs] + (list(v.prompts) + [v.negative_prompt] if v.prompts else [])
    enc, vae = encode_all(
        data.folder,
        folder,
        exs,
        texts,
        resolution=cfg.resolution,
        vae_sha256=sha256_tree(folder / "vae", digests),
        te_sha256=sha256_tree(folder / "text_encoder", digests),
        device=plan.device,
        te_dtype=plan.torch_dtype(plan.text_encoder),
        vae_dtype=plan.torch_dtype(plan.vae),
        cache_root=cache_dir() / "train-cache",
        keep_vae=bool(v.prompts),
        progress=progress,
    )
    t_encode = time.perf_counter() - t0

    unet = UNet2DConditionModel.from_pretrained(
        str(folder),
        subfolder="unet",
        variant=weights_variant(folder),
        torch_dtype=plan.torch_dtype(plan.weights),
        local_files_only=True,
    )
    unet.to(plan.device)
    loop.add_lora(unet, cfg)
    scheduler_config = EulerDiscreteScheduler.load_config(str(folder / "scheduler"))

    def on_validate(step: int) -> list[str]:
        from harness.train.validation import render_validation

        paths = render_validation(unet, vae, scheduler_config, enc.texts, cfg, step, out, plan.device)
        return [p.relative_to(out).as_posix() for p in paths]

    def on_checkpoint(step: int, partial) -> None:
        from harness.train.plots import write_loss_csv

        write_loss_csv(out / "loss.csv", partial.losses, partial.lrs)
        manifest["last_checkpoint"] = step
        outdir.write_manifest(out, manifest)

    t1 = time.perf_counter()
    try:
        result = loop.run(
            cfg,
            unet=unet,
            enc=enc,
            examples=exs,
            key=key,
            out=out,
            plan=plan,
            scheduler_config=scheduler_config,
            resume_from=resume_from,
            progress=progress,
            on_validate=on_validate if v.prompts else None,
            on_checkpoint=on_checkpoint,
        )
    except torch.cuda.OutOfMemoryError:
        release()
        raise HarnessError(_oom_message(cfg)) from None
    t_train = time.perf_counter() - t1
    if v.prompts:
        result.validations.extend(on_validate(result.steps))

    return unet, result, t_encode, t_train, enc


def ensure_trained(
    config_path: str | Path,
    out: Path | None = None,
    *,
    device: str = "auto",
    progress: bool = True,
    inside: str | Path | None = None,
) -> Path:
    """For `harness run`: the diffusers LoRA file of this config, training only when needed.

    A finished training with the same key (config + data + base model) is reused; an unfinished
    one of the same key is resumed from its last checkpoint; otherwise training starts. `out`
    defaults to $HARNESS_CACHE/loras/<config name>-<key>. `inside` is the folder of the story
    that named the config: the config's own paths must stay inside it (checked before anything
    is prepared or trained).
    """
    loaded = load_training_config(config_path, inside=inside)
    return train(loaded, out, resume=True, device=device, progress=progress).lora
