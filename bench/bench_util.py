"""Small shared pieces of the benchmark: settings, clocks, GPU memory, machine facts.

Owns: the `Settings` every section reads (with the harness's device plans for rendering,
training and scoring, decided once by `harness.device`), synchronised timing (a CUDA clock
reading means nothing until the queued kernels are done), peak-memory bookkeeping (reset at the
start of each measured part), and the machine/library description written into the result.
Freeing memory is the harness's own `harness.device.release`.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.device import Plan

GIB = 1024**3


@dataclass
class Settings:
    device: str  # "cuda" or "cpu"
    dtype_name: str  # the render weights: "bfloat16", "float16" or "float32"
    render: "Plan"  # harness.device.plan("render", ...): the story and floor sections
    train: "Plan"  # harness.device.plan("train", ...): the train section
    score: "Plan"  # harness.device.plan("score", ...): the score section
    tiny: bool
    size: int
    steps: int
    panels: int
    guidance: float
    story: str
    batch_size: int = 1
    compile: bool = False
    determinism: str = "harness"  # "harness" (as render_story/train set it) or "stock"
    train_steps: int = 10
    train_warmup: int = 2
    lora_rank: int = 16
    lora_alpha: float = 4.0
    grad_checkpointing: bool = True
    scorers: str = "auto"  # "auto": full size unless --tiny; "tiny"; "full"
    variants: list[str] = field(default_factory=list)  # extra harness renders (bench_story.VARIANTS)
    notes: list[str] = field(default_factory=list)

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def now(device: str) -> float:
    """A clock reading taken after every queued kernel has finished."""
    sync(device)
    return time.perf_counter()


def reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    """Peak allocated GPU memory in GiB since the last reset (None on the CPU: not measured there)."""
    if device != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / GIB, 3)


def allocated_gib(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return round(torch.cuda.memory_allocated() / GIB, 3)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(device: str) -> dict:
    """GPU, CPU and library versions: enough to know what the numbers were measured on."""
    import torch

    from harness.device import probe

    gpu = None
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": torch.cuda.get_device_name(0),
            "memory_gib": round(props.total_memory / GIB, 1),
            "capability": f"{props.major}.{props.minor}",
            "bf16_supported": probe().bf16,
            "cuda": torch.version.cuda,
            "driver_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
    return {
        "device": device,
        "gpu": gpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": {
            n: _version(n)
            for n in ("harness", "torch", "diffusers", "transformers", "peft", "open_clip_torch", "numpy")
        },
    }


def error_record(e: BaseException) -> dict:
    """What a failed section leaves in the result: the error and the end of its traceback."""
    import traceback

    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return {
        "status": "error",
        "error": f"{type(e).__name__}: {e}".strip()[:2000],
        "traceback": "".join(tb)[-4000:],
    }
