"""Embed generation parameters in a PNG and read them back.

The parameters go in an iTXt chunk named `harness` (UTF-8 JSON, so Chinese prompts survive),
plus a human-readable `parameters` chunk in the layout other image tools display.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

CHUNK = "harness"
MAX_PIXELS = 64 * 1024 * 1024  # refuse decompression bombs when inspecting untrusted files


def _a1111_text(p: dict[str, Any]) -> str:
    lines = [p.get("prompt", "")]
    if p.get("negative_prompt"):
        lines.append(f"Negative prompt: {p['negative_prompt']}")
    lines.append(
        f"Steps: {p.get('steps')}, Sampler: {p.get('scheduler')}, CFG scale: {p.get('guidance')}, "
        f"Seed: {p.get('seed')}, Size: {p.get('width')}x{p.get('height')}, "
        f"Model: {p.get('model', {}).get('ref')}, Model hash: {str(p.get('model', {}).get('sha256'))[:10]}"
    )
    return "\n".join(lines)


def save_png(image, path: Path, params: dict[str, Any]) -> None:
    """Write `image` to `path` atomically with `params` embedded (`harness.safeio.write_atomic`:
    a link planted at the name or at a temporary name is replaced or refused, never followed)."""
    import io

    from PIL.PngImagePlugin import PngInfo

    from harness.safeio import write_atomic

    info = PngInfo()
    info.add_itxt(CHUNK, json.dumps(params, ensure_ascii=False, sort_keys=True))
    info.add_itxt("parameters", _a1111_text(params))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    write_atomic(path, buf.getvalue())


def read_params(path: str | Path) -> dict[str, Any]:
    """The embedded parameters of a harness PNG; HarnessError if absent or unreadable."""
    from harness.imaging import open_untrusted

    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such file")
    try:
        with open_untrusted(path, MAX_PIXELS) as im:
            fmt = im.format
            text = im.text.get(CHUNK) if fmt == "PNG" else None
    except HarnessError as e:
        raise HarnessError(f"{path}: not a readable image ({e})") from None
    if fmt != "PNG":
        raise HarnessError(f"{path}: not a PNG ({fmt}); parameters live in PNG chunks")
    if text is None:
        raise HarnessError(f"{path}: no harness parameters embedded (not rendered by harness?)")
    try:
        data = json.loads(text)
    except ValueError:
        raise HarnessError(f"{path}: the embedded harness parameters are not valid JSON") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: the embedded harness parameters are not a mapping")
    return data


def describe(params: dict[str, Any]) -> str:
    """Multi-line, aligned summary of embedded parameters for `harness inspect`."""
    model = params.get("model") or {}
    lora = params.get("lora")
    rows = [
        ("story", f"{params.get('team')}/{params.get('name')}, panel {params.get('panel')}"),
        ("prompt", params.get("prompt")),
        ("negative", params.get("negative_prompt") or "(none)"),
        ("seed", params.get("seed")),
        ("steps", params.get("steps")),
        ("guidance", params.get("guidance")),
        ("size", f"{params.get('width')}x{params.get('height')}"),
        ("scheduler", params.get("scheduler")),
        ("model", f"{model.get('ref')} (sha256 {model.get('sha256')})"),
        (
            "lora",
            f"{lora.get('file')} x {lora.get('scale')} (sha256 {lora.get('sha256')})" if lora else "(none)",
        ),
        (
            "rendered",
            f"{params.get('device')} {params.get('dtype')}, batch size {params.get('batch_size')}, "
            f"harness {params.get('harness_version')}",
        ),
    ]
    return "\n".join(f"{k:<10} {v}" for k, v in rows)
