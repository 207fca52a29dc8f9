"""Read a LoRA file into a flat {name: tensor} dict without ever executing a pickle.

Owns: the one place a .ckpt/.pt/.bin is opened (torch.load with weights_only=True) and the
rule that its content must be a flat mapping of names to tensors (a Lightning checkpoint may
nest that mapping one level deep under 'state_dict'). Anything else is refused with one line.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def _flat_tensors(obj, path: Path) -> dict:
    import torch

    def is_flat(d) -> bool:
        return (
            isinstance(d, dict)
            and bool(d)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())
        )

    if is_flat(obj):
        return dict(obj)
    if isinstance(obj, dict) and is_flat(obj.get("state_dict")):
        return dict(obj["state_dict"])
    what = type(obj).__name__
    if isinstance(obj, dict):
        bad = next(
            (f"{k!r} -> {type(v).__name__}" for k, v in obj.items() if not isinstance(v, torch.Tensor)),
            "empty",
        )
        what = f"a mapping with non-tensor entries ({bad})"
    raise HarnessError(
        f"{path}: refused: a LoRA checkpoint must be a flat mapping of names to tensors, found {what}"
    )


def load_lora_file(path: str | Path) -> tuple[dict, dict[str, str]]:
    """(state dict of CPU tensors, safetensors metadata or {}) for a .safetensors or pickle file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # header or payload corrupt
            raise HarnessError(
                f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})"
            ) from None
        if not sd:
            raise HarnessError(f"{path}: holds no tensors")
        return sd, meta
    if path.suffix not in PICKLE_SUFFIXES:
        raise HarnessError(f"{path}: unknown LoRA file type {path.suffix!r} (use .safetensors or .ckpt)")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for forbidden globals, zip errors for garbage
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HarnessError(f"{path}: refused: not a plain tensor checkpoint ({first})") from None
    return _flat_tensors(obj, path), {}
