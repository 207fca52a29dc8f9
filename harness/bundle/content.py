"""Open untrusted bundle files safely and check what is inside: images and LoRA weights.

Owns: the image pixel cap (decompression bombs), LoRA reading without pickle (safetensors), the
one allowed way to open a pickled checkpoint (`torch.load(weights_only=True)`, and only a flat
mapping of names to tensors is accepted), finite values, recognised Kolors UNet LoRA key names,
and shapes against the base UNet when its config is at hand. Every problem is returned as one
line; nothing here raises on bad content. torch is imported inside the functions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MAX_IMAGE_PIXELS = 16 * 1024 * 1024  # 4096x4096; the story caps panels at 2048x2048
MAX_LORA_TENSORS = 20_000
MAX_LORA_RANK = 1024

# diffusers / PEFT naming on the UNet (what the harness renders with):
#   unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight
_DIFFUSERS = re.compile(
    r"^(?:unet\.)?(?P<module>(?:down_blocks|up_blocks)\.\d+\.[A-Za-z0-9_.]+|mid_block\.[A-Za-z0-9_.]+)"
    r"\.(?P<part>lora_A|lora_B|lora\.down|lora\.up)(?:\.default)?\.weight$"
)
_DIFFUSERS_ALPHA = re.compile(r"^(?:unet\.)?(?:down_blocks|up_blocks|mid_block)[A-Za-z0-9_.]*\.alpha$")
# DiffSynth naming (its baseline .ckpt): blocks.7.transformer_blocks.0.attn1.to_q.lora_A.default.weight
_DIFFSYNTH = re.compile(
    r"^(?P<module>blocks\.\d+\.[A-Za-z0-9_.]+)\.(?P<part>lora_A|lora_B)\.default\.weight$"
)
# kohya / ComfyUI naming (the training stage exports it too):
#   lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight
_KOHYA = re.compile(r"^(?P<module>lora_unet_[A-Za-z0-9_]+)\.(?P<part>lora_down|lora_up)\.weight$")
_KOHYA_ALPHA = re.compile(r"^lora_unet_[A-Za-z0-9_]+\.alpha$")
_DOWN = ("lora_A", "lora.down", "lora_down")


def check_image(
    path: Path, expect_size: tuple[int, int] | None = None
) -> tuple[list[str], dict[str, Any] | None]:
    """(problems, embedded harness parameters or None) for one image file."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from harness.render.pngmeta import CHUNK

    problems: list[str] = []
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    params = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    return [f"{w}x{h} pixels is over the cap of {MAX_IMAGE_PIXELS}"], None
                im.load()  # decode fully: a truncated file fails here
                text = getattr(im, "text", {}).get(CHUNK) if im.format == "PNG" else None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return [f"refused as a decompression bomb ({e})".splitlines()[0]], None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return [f"not a readable image ({type(e).__name__}: {e})".splitlines()[0]], None
    if expect_size is not None and (w, h) != expect_size:
        problems.append(f"{w}x{h} pixels, the story renders {expect_size[0]}x{expect_size[1]}")
    if text is not None:
        try:
            params = json.loads(text)
        except ValueError:
            problems.append("embedded harness parameters are not valid JSON")
        if params is not None and not isinstance(params, dict):
            params, _ = None, problems.append("embedded harness parameters are not a mapping")
    return problems, params


def _read_safetensors(path: Path) -> tuple[dict[str, Any] | None, dict[str, str], str | None]:
    from safetensors import safe_open

    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            keys = list(f.keys())
            if len(keys) > MAX_LORA_TENSORS:
                return None, {}, f"{len(keys)} tensors is over the cap of {MAX_LORA_TENSORS}"
            for k in keys:
                tensors[k] = f.get_tensor(k)
        return tensors, metadata, None
    except Exception as e:  # malformed header, truncated data: one line
        return None, {}, f"not a readable safetensors file ({type(e).__name__}: {e})".splitlines()[0]


def _read_pickle_checkpoint(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """torch.load with weights_only=True (no arbitrary code), accepting only {str: Tensor}."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        for line in str(e).splitlines():  # torch puts the offending global on its own line
            if "Unsupported global" in line or "GLOBAL" in line:
                first = line.strip()
                break
        return None, f"refused: holds pickled Python objects that weights_only loading rejects ({first})"
    if not isinstance(obj, dict):
        return None, f"refused: holds a {type(obj).__name__}, not a flat mapping of names to tensors"
    for k, v in obj.items():
        if not isinstance(k, str):
            return (
                None,
                f"refused: key {k!r} is not a string (only a flat mapping of names to tensors is accepted)",
            )
        if not isinstance(v, torch.Tensor):
            return None, (
                f"refused: {k!r} holds a {type(v).__name__}, not a tensor "
                "(only a flat mapping of names to tensors is accepted)"
            )
    if len(obj) > MAX_LORA_TENSORS:
        return None, f"{len(obj)} tensors is over the cap of {MAX_LORA_TENSORS}"
    return dict(obj), None


def unet_linear_shapes(unet_config: Path) -> dict[str, tuple[int, int]]:
    """{module name: (in_features, out_features)} of every Linear in a UNet built on the meta device."""
    import torch
    from diffusers import UNet2DConditionModel

    config = json.loads(unet_config.read_text(encoding="utf-8"))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    return {
        name: (m.in_features, m.out_features)
        for name, m in unet.named_modules()
        if isinstance(m, torch.nn.Linear)
    }


def lora_format(keys: list[str]) -> str:
    """'diffusers', 'kohya', 'diffsynth', or 'unknown' for a set of tensor names."""
    if keys and all(_DIFFUSERS.match(k) or _DIFFUSERS_ALPHA.match(k) for k in keys):
        return "diffusers"
    if keys and all(_KOHYA.match(k) or _KOHYA_ALPHA.match(k) for k in keys):
        return "kohya"
    if keys and all(_DIFFSYNTH.match(k) for k in keys):
        return "diffsynth"
    return "unknown"


def check_lora(
    path: Path, base_shapes: dict[str, tuple[int, int]] | None = None
) -> tuple[list[str], dict[str, Any]]:
    """(problems, facts: format, rank, tensors, metadata) for one LoRA file.

    `base_shapes` (from `unet_linear_shapes`) enables the shape check of diffusers-named keys.
    """
    import torch

    facts: dict[str, Any] = {"file": path.name}
    if path.suffix.lower() == ".safetensors":
        tensors, metadata, err = _read_safetensors(path)
        facts["metadata"] = {k: v[:200] for k, v in list(metadata.items())[:20]}
    else:
        tensors, err = _read_pickle_checkpoint(path)
    if err is not None or tensors is None:
        return [err or "unreadable"], facts
    if not tensors:
        return ["holds no tensors"], facts
    keys = sorted(tensors)
    fmt = lora_format(keys)
    facts.update(format=fmt, tensors=len(keys))
    problems: list[str] = []
    if fmt == "unknown":
        known = (_DIFFUSERS, _DIFFUSERS_ALPHA, _KOHYA, _KOHYA_ALPHA, _DIFFSYNTH)
        bad = [k for k in keys if not any(p.match(k) for p in known)]
        shown = bad[0] if bad else keys[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return [f"key {shown!r} is not a recognised Kolors UNet LoRA key{more}"], facts
    for k in keys:
        t = tensors[k]
        if not t.is_floating_point():
            problems.append(f"{k}: dtype {t.dtype} is not a floating-point type")
        elif not bool(torch.isfinite(t).all()):
            problems.append(f"{k}: holds NaN or Inf values")
        if len(problems) >= 5:
            break
    pattern = {"diffusers": _DIFFUSERS, "kohya": _KOHYA}.get(fmt, _DIFFSYNTH)
    pairs: dict[str, dict[str, Any]] = {}
    for k in keys:
        m = pattern.match(k)
        if m:
            side = "down" if m["part"] in _DOWN else "up"
            pairs.setdefault(m["module"], {})[side] = tensors[k].shape
    ranks = set()
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"down", "up"}:
            problems.append(f"{module}: has only lora_{'A' if 'down' in pair else 'B'} (both halves needed)")
            continue
        down, up = pair["down"], pair["up"]
        if len(down) != 2 or len(up) != 2:
            problems.append(f"{module}: LoRA matrices must be 2-D (got {tuple(down)} and {tuple(up)})")
            continue
        rank = down[0]
        ranks.add(rank)
        if up[1] != rank:
            problems.append(f"{module}: lora_A rank {rank} and lora_B rank {up[1]} differ")
        elif rank > MAX_LORA_RANK:
            problems.append(f"{module}: rank {rank} is over the cap of {MAX_LORA_RANK}")
        elif base_shapes is not None and fmt == "diffusers":
            if module not in base_shapes:
                problems.append(f"{module}: no such Linear layer in the base model's UNet")
            elif (down[1], up[0]) != base_shapes[module]:
                problems.append(
                    f"{module}: LoRA maps {down[1]} -> {up[0]} features, the base model's layer "
                    f"maps {base_shapes[module][0]} -> {base_shapes[module][1]} (made for another model?)"
                )
        if len(problems) >= 10:
            break
    facts["rank"] = sorted(ranks)[0] if len(ranks) == 1 else sorted(ranks)
    facts["modules"] = len(pairs)
    facts["shapes_checked"] = base_shapes is not None and fmt == "diffusers"
    return problems, facts
