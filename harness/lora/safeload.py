"""Read a LoRA file into a flat {name: tensor} dict without ever executing a pickle.

Owns: the one place an untrusted LoRA file is opened. A .safetensors file is read without
pickle; a .ckpt/.pt/.pth/.bin only through torch.load(weights_only=True), and its content must be
a flat mapping of names to tensors (a Lightning checkpoint may nest that mapping one level deep
under 'state_dict'). Also the cap on the number of tensors. Anything else is refused with one
line starting with the path. What the names mean is harness.lora.formats' business.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import HarnessError, first_line

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MAX_LORA_TENSORS = 20_000  # kohya on all 744 Linears of the Kolors UNet: 2,232 (down, up, alpha)
_FLAT = "only a flat mapping of names to tensors is accepted"


def _unpickling_reason(e: Exception) -> str:
    """torch's weights_only refusal is a paragraph; keep the part naming what it rejected."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"refused: holds pickled Python objects that weights_only loading rejects (global {found[1]})"
    lines = [ln.strip() for ln in text.split("WeightsUnpickler error:", 1)[-1].splitlines() if ln.strip()]
    detail = lines[0] if "WeightsUnpickler error:" in text and lines else first_line(e)
    return f"refused: not a plain tensor checkpoint ({detail})"


def _flat_tensors(obj, path: Path) -> dict:
    import torch

    where = ""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj, where = obj["state_dict"], "'state_dict' -> "  # Lightning's nesting
    if not isinstance(obj, dict):
        raise HarnessError(
            f"{path}: refused: holds a {type(obj).__name__}, not a flat mapping of names to tensors"
        )
    if not obj:
        raise HarnessError(f"{path}: holds no tensors")
    if len(obj) > MAX_LORA_TENSORS:
        raise HarnessError(f"{path}: {len(obj)} tensors is over the cap of {MAX_LORA_TENSORS}")
    for k, v in obj.items():
        if not isinstance(k, str):
            raise HarnessError(f"{path}: refused: {where}key {k!r} is not a string ({_FLAT})")
        if not isinstance(v, torch.Tensor):
            raise HarnessError(
                f"{path}: refused: {where}{k!r} holds a {type(v).__name__}, not a tensor ({_FLAT})"
            )
    return dict(obj)


def _read_safetensors(path: Path) -> tuple[dict, dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            keys = list(f.keys())
            if len(keys) > MAX_LORA_TENSORS:  # refused before any tensor is read
                raise HarnessError(f"{path}: {len(keys)} tensors is over the cap of {MAX_LORA_TENSORS}")
            sd = {k: f.get_tensor(k) for k in keys}
    except HarnessError:
        raise
    except Exception as e:  # malformed header, truncated payload
        raise HarnessError(
            f"{path}: not a readable safetensors file ({type(e).__name__}: {first_line(e)})"
        ) from None
    if not sd:
        raise HarnessError(f"{path}: holds no tensors")
    return sd, meta


def load_lora_file(path: str | Path) -> tuple[dict, dict[str, str]]:
    """(state dict of CPU tensors, safetensors metadata or {}) for a .safetensors or pickle file.

    HarnessError("<path>: <reason>") for a missing, unreadable, oversized or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix not in PICKLE_SUFFIXES:
        raise HarnessError(f"{path}: unknown LoRA file type {path.suffix!r} (use .safetensors or .ckpt)")
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for forbidden globals, zip errors for garbage
        raise HarnessError(f"{path}: {_unpickling_reason(e)}") from None
    return _flat_tensors(obj, path), {}
