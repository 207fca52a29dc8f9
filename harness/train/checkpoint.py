"""Checkpoints that hold the whole training state, written atomically, read without pickles.

Owns: checkpoints/step-NNNNNN/ with lora.safetensors (the trainable tensors under their PEFT
parameter names) and state.pt (optimizer, LR scheduler, grad scaler, every RNG state, step,
loss history), plus state.json for humans. A folder appears under its final name only when
complete, so a SIGKILL mid-write leaves at worst a stray `.tmp` folder that is ignored. A
checkpoint is read only from real folders and files in the run folder (no link followed).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.safeio import read_json, write_atomic

CHECKPOINTS = "checkpoints"


@dataclass
class TrainState:
    step: int
    losses: list[float]
    lrs: list[float]


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / CHECKPOINTS / f"step-{step:06d}"


def _is(path: Path, kind) -> bool:
    try:
        return kind(os.lstat(path).st_mode)
    except OSError:
        return False


def latest(out: Path) -> Path | None:
    root = out / CHECKPOINTS
    if not _is(root, stat.S_ISDIR):
        return None
    done = sorted(
        p
        for p in root.iterdir()
        if p.name.startswith("step-")
        and not p.name.endswith(".tmp")
        and _is(p, stat.S_ISDIR)
        and _is(p / "state.json", stat.S_ISREG)
    )
    return done[-1] if done else None


def save(
    out: Path,
    *,
    step: int,
    key: str,
    unet,
    optimizer,
    lr_scheduler,
    scaler,
    noise_gen,
    losses: list[float],
    lrs: list[float],
    keep: int,
) -> Path:
    import torch
    from safetensors.torch import save_file

    final = checkpoint_dir(out, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().cpu().contiguous() for n, p in unet.named_parameters() if p.requires_grad}
    save_file(trainable, str(tmp / "lora.safetensors"))
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "noise_rng": noise_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "losses": list(losses),
        "lrs": list(lrs),
    }
    torch.save(state, tmp / "state.pt")
    write_atomic(
        tmp / "state.json", json.dumps({"step": step, "key": key, "loss": losses[-1] if losses else None})
    )
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    done = sorted(
        p
        for p in (out / CHECKPOINTS).iterdir()
        if p.is_dir() and p.name.startswith("step-") and not p.name.endswith(".tmp")
    )
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(folder: Path, *, key: str, unet, optimizer, lr_scheduler, scaler, noise_gen) -> TrainState:
    """Restore everything `save` wrote into live objects; refuses a checkpoint of another config."""
    import torch
    from safetensors.torch import load_file

    for name in ("state.json", "lora.safetensors", "state.pt"):
        if not _is(folder / name, stat.S_ISREG):
            raise HarnessError(f"{folder / name}: missing or not a plain file; cannot resume")
    info = read_json(folder / "state.json")
    if not isinstance(info, dict) or info.get("key") != key:
        raise HarnessError(
            f"{folder}: checkpoint belongs to a different training config or data; cannot resume"
        )
    tensors = load_file(str(folder / "lora.safetensors"))
    params = dict(unet.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    if missing or any(n not in params for n in tensors):
        raise HarnessError(f"{folder}: checkpoint tensors do not match the adapter ({len(missing)} missing)")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    noise_gen.set_state(state["noise_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return TrainState(int(state["step"]), list(state["losses"]), list(state["lrs"]))
