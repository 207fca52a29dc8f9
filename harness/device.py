"""The one device policy: where each role runs, in which dtypes, how strict determinism is, release.

Owns every device and dtype decision of the harness. Callers name a role and what the user asked
for; `plan` answers with the device and four dtypes (see `Plan`):

| role   | device     | weights                  | compute           | text_encoder     | vae              |
|--------|------------|--------------------------|-------------------|------------------|------------------|
| any    | cpu        | float32                  | float32           | float32          | float32          |
| render | cuda, bf16 | bfloat16                 | bfloat16          | bfloat16         | bfloat16         |
| render | cuda, none | float16                  | float16           | float16          | float32 (upcast) |
| train  | cuda       | by mixed_precision       | = weights         | half (as render) | float32          |
| score  | cuda       | float32                  | float32           | float32          | float32          |

"cuda, bf16" is a GPU that supports bfloat16 (`torch.cuda.is_bf16_supported`), "none" one that
does not. Training's weights and autocast dtype follow `mixed_precision` (no: float32, fp16,
bf16; fp16/bf16 only on CUDA, bf16 only where supported); its latents are always encoded by a
float32 VAE. The tiny model is float32 everywhere, and under "auto" it stays on the CPU, so its
pixels are the same on every machine. Scores are float32 so they do not depend on a GPU's half
precision. MPS (Apple) is not used: on a Mac the harness runs on the CPU.

The machine's capabilities come from `probe()`, asked once per process; every function takes
`caps=` so the table above can be checked for any machine on any machine (tests/test_device_policy.py).
`release()` is the one way memory is handed back after models are dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from harness.errors import HarnessError

DeviceChoice = Literal["auto", "cpu", "cuda"]
Role = Literal["render", "train", "score"]
MixedPrecision = Literal["no", "fp16", "bf16"]

ROLES: tuple[str, ...] = ("render", "train", "score")
DTYPE_NAMES = ("float32", "bfloat16", "float16")
# mixed_precision (training configs) <-> the dtype the UNet's weights and autocast then use.
MIXED_PRECISION_DTYPE = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}
MIXED_PRECISION_OF = {v: k for k, v in MIXED_PRECISION_DTYPE.items()}


@dataclass(frozen=True)
class Capabilities:
    """What a machine offers the harness: a CUDA device, and bfloat16 support on it."""

    cuda: bool
    bf16: bool = False


@lru_cache(maxsize=1)
def probe() -> Capabilities:
    """This machine's capabilities (asked of torch once per process)."""
    import torch

    if not torch.cuda.is_available():
        return Capabilities(cuda=False)
    return Capabilities(cuda=True, bf16=bool(torch.cuda.is_bf16_supported()))


@dataclass(frozen=True)
class Placement:
    """Where a Kolors pipeline lives: a device and the dtype its weights are loaded in."""

    device: str  # "cpu" or "cuda"
    dtype_name: str  # "float32", "bfloat16" or "float16"

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def vae_dtype_name(self) -> str:
        """The dtype the VAE decodes in: the SDXL VAE overflows in float16, so it is upcast."""
        return "float32" if self.dtype_name == "float16" else self.dtype_name


@dataclass(frozen=True)
class Plan:
    """A role's device and dtypes (names of torch dtypes; `torch_dtype` turns one into a dtype).

    weights: the role's main model as loaded (the Kolors pipeline/UNet, or the scorers).
    compute: what its forward passes run in (training: the autocast dtype).
    text_encoder: ChatGLM's weights (rendering encodes with the pipeline's own; training with its own).
    vae: what the VAE encodes or decodes in.
    """

    role: str
    device: str
    weights: str
    compute: str
    text_encoder: str
    vae: str

    @property
    def placement(self) -> Placement:
        return Placement(self.device, self.weights)

    @property
    def autocast(self) -> bool:
        """Whether the role's forward passes run under autocast (training in half precision)."""
        return self.compute != "float32"

    @staticmethod
    def torch_dtype(name: str):
        import torch

        return getattr(torch, name)


def pick_device(requested: str = "auto", *, tiny: bool = False, caps: Capabilities | None = None) -> str:
    """cpu or cuda for a request of auto, cpu or cuda; the tiny model stays on the CPU unless told."""
    if requested not in ("auto", "cpu", "cuda"):
        raise HarnessError(f"--device: expected auto, cpu or cuda, got {requested!r}")
    if requested == "cpu" or (tiny and requested == "auto"):
        return "cpu"
    caps = caps if caps is not None else probe()
    if not caps.cuda:
        if requested == "cuda":
            raise HarnessError("--device cuda: no CUDA device is available on this machine")
        return "cpu"
    return "cuda"


def _half(caps: Capabilities) -> str:
    return "bfloat16" if caps.bf16 else "float16"


def plan(
    role: Role,
    requested: str = "auto",
    *,
    tiny: bool = False,
    mixed_precision: str = "no",
    weights: str | None = None,
    caps: Capabilities | None = None,
) -> Plan:
    """The device and dtypes of `role` (see the module's table) for a --device request.

    `mixed_precision` is the training config's; `weights` forces the weight dtype of a render
    (the benchmark's --dtype), refused where the harness would not run it.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    if mixed_precision not in MIXED_PRECISION_DTYPE:
        raise HarnessError(f"mixed_precision: expected no, fp16 or bf16, got {mixed_precision!r}")
    if weights is not None and weights not in DTYPE_NAMES:
        raise HarnessError(f"dtype: expected one of {', '.join(DTYPE_NAMES)}, got {weights!r}")
    device = pick_device(requested, tiny=tiny, caps=caps)
    if device == "cpu":
        if role == "train" and mixed_precision != "no":
            raise HarnessError(
                f'mixed_precision {mixed_precision} needs a CUDA device; use mixed_precision: "no" on the CPU'
            )
        if weights not in (None, "float32"):
            raise HarnessError(f"dtype {weights} needs a CUDA device; the CPU runs float32")
        return Plan(role, "cpu", "float32", "float32", "float32", "float32")
    caps = caps if caps is not None else probe()
    half = "float32" if tiny else _half(caps)  # the tiny model is float32 on every device
    if role == "score":
        return Plan(role, device, "float32", "float32", "float32", "float32")
    if role == "train":
        if mixed_precision == "bf16" and not caps.bf16:
            raise HarnessError("mixed_precision bf16 is not supported by this GPU; use fp16")
        w = MIXED_PRECISION_DTYPE[mixed_precision]
        return Plan(role, device, w, w, half, "float32")
    w = weights or half
    if w == "bfloat16" and not caps.bf16:
        raise HarnessError("dtype bfloat16 is not supported by this GPU; use float16")
    return Plan(role, device, w, w, w, Placement(device, w).vae_dtype_name)


def choose(model_source: str, requested: str = "auto", *, caps: Capabilities | None = None) -> Placement:
    """Where a render of a model of `model_source` ('tiny', 'local', 'modelscope') puts the pipeline."""
    return plan("render", requested, tiny=model_source == "tiny", caps=caps).placement


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


def release(*, collect: bool = True) -> None:
    """Hand memory back after models were dropped or moved off the accelerator.

    Collects unreachable objects (unless `collect` is False: a move frees by reference count
    alone), then, when CUDA is in use, waits for queued kernels and returns the allocator's
    cached blocks to the driver. On the CPU only the collection happens.
    """
    import gc
    import sys

    if collect:
        gc.collect()
    torch = sys.modules.get("torch")  # not imported: nothing of ours can be on an accelerator
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
