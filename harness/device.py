"""The one place that decides device and dtype, and how strict determinism is.

The tiny model always runs on the CPU in float32 so its pixels are the same on every machine.
Real weights go to CUDA when present (bf16 where supported, else fp16), else CPU float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from harness.errors import HarnessError

DeviceChoice = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda"
    dtype_name: str  # "float32", "bfloat16" or "float16"

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)


def choose(model_source: str, requested: DeviceChoice = "auto") -> Placement:
    """Pick device and dtype for a model of `model_source` ('tiny', 'local', 'modelscope')."""
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise HarnessError(f"--device: expected auto, cpu or cuda, got {requested!r}")
    if model_source == "tiny" and requested != "cuda":
        return Placement("cpu", "float32")
    if requested == "cpu":
        return Placement("cpu", "float32")
    if not torch.cuda.is_available():
        if requested == "cuda":
            raise HarnessError("--device cuda: no CUDA device is available on this machine")
        return Placement("cpu", "float32")
    if model_source == "tiny":
        return Placement("cuda", "float32")
    return Placement("cuda", "bfloat16" if torch.cuda.is_bf16_supported() else "float16")


def make_deterministic(placement: Placement) -> None:
    """Settings under which repeated renders on one machine are bit-identical."""
    import torch

    if placement.device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def free_memory() -> None:
    """Collect dropped models and hand the accelerator's cached blocks back (after a release)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
