"""Check what is inside a LoRA file before anyone loads it: the judges' check and render's.

Owns: recognised Kolors UNet LoRA key names (diffusers/PEFT, kohya, DiffSynth), finite
float16/bfloat16/float32/float64 values, 2-D A/B pairs agreeing on a rank from 1 to a cap, an
alpha of one positive value, a DoRA magnitude of lora_B's width, and shapes against the base
UNet's Linear layers in every naming (kohya and DiffSynth module names are mapped by
harness.lora.formats). Opening is `harness.lora.safeload`'s (no pickle executed, tensor cap,
memory bounded by the file size). Render, verify and `lora import` all run `check_tensors`.
Every problem is returned as one line; nothing here raises on bad content. torch is imported
inside the functions.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

MAX_LORA_RANK = 1024

# diffusers / PEFT naming on the UNet (what the harness renders with):
#   unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight
_DIFFUSERS = re.compile(
    r"^(?:unet\.)?(?P<module>(?:down_blocks|up_blocks)\.\d+\.[A-Za-z0-9_.]+|mid_block\.[A-Za-z0-9_.]+)"
    r"\.(?P<part>lora_A|lora_B|lora\.down|lora\.up)(?:\.default)?\.weight$"
)
_DIFFUSERS_ALPHA = re.compile(r"^(?:unet\.)?(?:down_blocks|up_blocks|mid_block)[A-Za-z0-9_.]*\.alpha$")
# DoRA's magnitude vector (peft's name, which diffusers keeps): <module>.lora_magnitude_vector
_DIFFUSERS_DORA = re.compile(
    r"^(?:unet\.)?(?P<module>(?:down_blocks|up_blocks)\.\d+\.[A-Za-z0-9_.]+|mid_block\.[A-Za-z0-9_.]+)"
    r"\.lora_magnitude_vector(?:\.default)?(?:\.weight)?$"
)
# DiffSynth naming (its baseline .ckpt): blocks.7.transformer_blocks.0.attn1.to_q.lora_A.default.weight
_DIFFSYNTH = re.compile(
    r"^(?P<module>blocks\.\d+\.[A-Za-z0-9_.]+)\.(?P<part>lora_A|lora_B)\.default\.weight$"
)
# kohya / ComfyUI naming (the training stage exports it too):
#   lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight
_KOHYA = re.compile(r"^(?P<module>lora_unet_[A-Za-z0-9_]+)\.(?P<part>lora_down|lora_up)\.weight$")
_KOHYA_ALPHA = re.compile(r"^lora_unet_[A-Za-z0-9_]+\.alpha$")
_KOHYA_DORA = re.compile(r"^(?P<module>lora_unet_[A-Za-z0-9_]+)\.dora_scale$")
_DOWN = ("lora_A", "lora.down", "lora_down")
_SGM_BLOCK = re.compile(r"^lora_unet_(?:input_blocks|middle_block|output_blocks)_")
_NAMINGS = {
    "diffusers": (_DIFFUSERS, _DIFFUSERS_ALPHA, _DIFFUSERS_DORA),
    "kohya": (_KOHYA, _KOHYA_ALPHA, _KOHYA_DORA),
    "diffsynth": (_DIFFSYNTH,),
}
_ALPHAS = {"diffusers": _DIFFUSERS_ALPHA, "kohya": _KOHYA_ALPHA}


def linear_shapes(unet) -> dict[str, tuple[int, int]]:
    """{module name: (in_features, out_features)} of every Linear in `unet`."""
    import torch

    return {
        name: (m.in_features, m.out_features)
        for name, m in unet.named_modules()
        if isinstance(m, torch.nn.Linear)
    }


def unet_linear_shapes(unet_config: Path) -> dict[str, tuple[int, int]]:
    """`linear_shapes` of the UNet a saved config describes, built on the meta device (no weights)."""
    import torch
    from diffusers import UNet2DConditionModel

    from harness.safeio import MiB, loads_json, read_text

    # The base model's own config (the harness cache or a folder the user named): links followed.
    config = loads_json(read_text(unet_config, max_bytes=MiB, follow_links=True), source=str(unet_config))
    if not isinstance(config, dict):
        raise HarnessError(f"{unet_config}: not a UNet config (a JSON object)")
    with torch.device("meta"):
        return linear_shapes(UNet2DConditionModel.from_config(config))


def lora_format(keys: list[str]) -> str:
    """'diffusers', 'kohya', 'diffsynth', or 'unknown' for a set of tensor names."""
    for fmt, patterns in _NAMINGS.items():
        if keys and all(any(p.fullmatch(k) for p in patterns) for k in keys):
            return fmt
    return "unknown"


def _shape_problem(
    module: str, target: str | None, fmt: str, features: tuple[int, int], base: dict[str, tuple[int, int]]
) -> str | None:
    """Why the LoRA on `module` (diffusers path `target`) does not fit the base UNet, or None."""
    if target is None:
        if fmt == "diffsynth":
            return f"{module}: not a layer of DiffSynth's Kolors UNet (no diffusers name for it)"
        if fmt == "kohya" and _SGM_BLOCK.search(module):
            return (
                f"{module}: no such Linear layer in the base model's UNet (kohya-ss SDXL block names "
                "input_blocks/middle_block/output_blocks are not read; export with diffusers block names)"
            )
        return f"{module}: no such Linear layer in the base model's UNet"
    named = module if target == module else f"{module} ({target})"
    if target not in base:
        return f"{named}: no such Linear layer in the base model's UNet"
    if features != base[target]:
        return (
            f"{named}: LoRA maps {features[0]} -> {features[1]} features, the base model's layer "
            f"maps {base[target][0]} -> {base[target][1]} (made for another model?)"
        )
    return None


FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
MAX_ALPHA = 4096.0  # the same bound `lora import --alpha` has


def _dtype_name(t) -> str:
    return str(t.dtype).removeprefix("torch.")


def check_lora(
    path: Path, base_shapes: dict[str, tuple[int, int]] | None = None
) -> tuple[list[str], dict[str, Any]]:
    """(problems, facts: format, rank, tensors, metadata, shapes_checked) for one LoRA file.

    `base_shapes` (from `unet_linear_shapes`) enables the shape check, in every naming.
    """
    from harness.lora.safeload import load_lora_file

    facts: dict[str, Any] = {"file": path.name}
    try:
        tensors, metadata = load_lora_file(path)
    except HarnessError as e:
        return [str(e).removeprefix(f"{path}: ")], facts
    if path.suffix.lower() == ".safetensors":
        facts["metadata"] = {k: v[:200] for k, v in list(metadata.items())[:20]}
    problems, more = check_tensors(tensors, base_shapes)
    facts.update(more)
    return problems + metadata_problems(metadata), facts


def metadata_problems(metadata: dict[str, str]) -> list[str]:
    """Problems with the adapter config a diffusers or harness file stores beside its tensors:
    it must be a JSON object (depth checked before parsing), its alpha a number in (0, MAX_ALPHA]."""
    from harness.lora.formats import HARNESS_META_KEY, META_KEY
    from harness.safeio import loads_json

    problems = []
    for key in (META_KEY, HARNESS_META_KEY):
        if key not in metadata:
            continue
        try:
            value = loads_json(metadata[key], source=f"metadata {key}", max_depth=8)
        except HarnessError as e:
            problems.append(str(e))
            continue
        if not isinstance(value, dict):
            problems.append(f"metadata {key}: not a JSON object")
            continue
        config = {str(k).removeprefix("unet."): v for k, v in value.items()}
        for name in ("lora_alpha", "alpha"):
            a = config.get(name)
            if name in config and (
                isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a <= MAX_ALPHA
            ):
                problems.append(
                    f"metadata {key}: {name} {str(a)[:40]!r} is not a number in (0, {MAX_ALPHA:g}]"
                )
    return problems


def check_tensors(
    tensors: dict, base_shapes: dict[str, tuple[int, int]] | None = None
) -> tuple[list[str], dict[str, Any]]:
    """`check_lora` on a state dict already read by `harness.lora.safeload` (`lora import` reads once).

    Every tensor must be float16/bfloat16/float32/float64 and finite; LoRA matrices 2-D with a
    rank from 1 to MAX_LORA_RANK; an alpha one positive value; a DoRA magnitude a vector.
    """
    import torch

    from harness.lora.formats import diffusers_modules

    keys = sorted(tensors)
    fmt = lora_format(keys)
    facts: dict[str, Any] = {"format": fmt, "tensors": len(keys)}
    problems: list[str] = []
    if fmt == "unknown":
        bad = [k for k in keys if not any(p.fullmatch(k) for ps in _NAMINGS.values() for p in ps)]
        shown = bad[0] if bad else keys[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return [f"key {shown!r:.200} is not a recognised Kolors UNet LoRA key{more}"], facts
    alpha = _ALPHAS.get(fmt)
    for k in keys:
        t = tensors[k]
        if _dtype_name(t) not in FLOAT_DTYPES:
            problems.append(f"{k}: dtype {_dtype_name(t)} is not one of {', '.join(FLOAT_DTYPES)}")
        elif not bool(torch.isfinite(t).all()):
            problems.append(f"{k}: holds NaN or Inf values")
        elif alpha is not None and alpha.fullmatch(k):
            if t.numel() != 1 or t.dim() > 1:
                problems.append(f"{k}: an alpha must be one value (got shape {tuple(t.shape)})")
            elif not 0 < float(t.reshape(())) <= MAX_ALPHA:
                problems.append(f"{k}: alpha {float(t.reshape(()))} is not in (0, {MAX_ALPHA:g}]")
        if len(problems) >= 5:
            break
    pattern = {"diffusers": _DIFFUSERS, "kohya": _KOHYA}.get(fmt, _DIFFSYNTH)
    dora = {"diffusers": _DIFFUSERS_DORA, "kohya": _KOHYA_DORA}.get(fmt)
    pairs: dict[str, dict[str, Any]] = {}
    for k in keys:
        m = pattern.fullmatch(k)
        if m:
            side = "down" if m["part"] in _DOWN else "up"
            pairs.setdefault(m["module"], {})[side] = tensors[k].shape
        elif dora is not None and (m := dora.fullmatch(k)):
            pairs.setdefault(m["module"], {})["magnitude"] = tensors[k].shape
    targets = diffusers_modules(fmt, pairs, base_shapes) if base_shapes is not None else {}
    ranks = set()
    for module, pair in sorted(pairs.items()):
        if not {"down", "up"} <= set(pair):
            half = "lora_A" if "down" in pair else "lora_B" if "up" in pair else "a DoRA magnitude"
            problems.append(f"{module}: has only {half} (lora_A and lora_B both needed)")
            continue
        down, up = pair["down"], pair["up"]
        if len(down) != 2 or len(up) != 2:
            problems.append(f"{module}: LoRA matrices must be 2-D (got {tuple(down)} and {tuple(up)})")
            continue
        magnitude = pair.get("magnitude")
        if magnitude is not None and (
            sum(d != 1 for d in magnitude) > 1 or len(magnitude) > 2 or magnitude.numel() != up[0]
        ):
            problems.append(
                f"{module}: DoRA magnitude of shape {tuple(magnitude)} is not a vector of "
                f"lora_B's {up[0]} values"
            )
            continue
        rank = down[0]
        ranks.add(rank)
        if up[1] != rank:
            problems.append(f"{module}: lora_A rank {rank} and lora_B rank {up[1]} differ")
        elif not 1 <= rank <= MAX_LORA_RANK:
            problems.append(f"{module}: rank {rank} is not in 1 .. {MAX_LORA_RANK}")
        elif base_shapes is not None:
            why = _shape_problem(module, targets[module], fmt, (down[1], up[0]), base_shapes)
            if why:
                problems.append(why)
        if len(problems) >= 10:
            break
    facts["rank"] = sorted(ranks)[0] if len(ranks) == 1 else sorted(ranks)
    facts["modules"] = len(pairs)
    facts["shapes_checked"] = base_shapes is not None
    return problems, facts
