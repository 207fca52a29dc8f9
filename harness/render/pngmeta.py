"""Embed generation parameters in a PNG and read them back.

The parameters (`harness.render.records.PanelParams`) go in an iTXt chunk named `harness`
(UTF-8 JSON, so Chinese prompts survive), plus a human-readable `parameters` chunk in the layout
other image tools display. `params_from_text`/`read_params` give the bounded JSON mapping as
found (tests forge panels from it); `panel_params_from_text`/`read_panel_params` give the typed
record every reader uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from harness.errors import HarnessError
from harness.render.records import PanelParams, parse

CHUNK = "harness"
MAX_PIXELS = 64 * 1024 * 1024  # refuse decompression bombs when inspecting untrusted files
MAX_PNG_BYTES = 64 << 20  # a 2048x2048 16-bit RGBA panel stored uncompressed is 32 MiB
MAX_PARAMS_CHARS = 16 << 10  # the harness writes ~1 KB; two 4096-character prompts fit with room
MAX_PARAMS_DEPTH = 8  # the harness writes 2 levels (model, lora)


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


def save_png(image, path: Path, params: PanelParams | Mapping[str, Any]) -> None:
    """Write `image` to `path` atomically with `params` embedded (`harness.safeio.write_atomic`:
    a link planted at the name or at a temporary name is replaced or refused, never followed).
    The render passes a `PanelParams`; a mapping is written as given (tests forge panels)."""
    from harness.safeio import write_atomic

    write_atomic(path, png_bytes(image, params))


def png_bytes(image, params: PanelParams | Mapping[str, Any]) -> bytes:
    """The PNG file `save_png` writes, as bytes (a Ray worker returns these; the driver writes)."""
    import io

    from PIL.PngImagePlugin import PngInfo

    params = params.to_json() if isinstance(params, PanelParams) else dict(params)
    info = PngInfo()
    info.add_itxt(CHUNK, json.dumps(params, ensure_ascii=False, sort_keys=True))
    info.add_itxt("parameters", _a1111_text(params))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def params_from_text(text: str | None, label: str) -> dict[str, Any]:
    """The harness parameters from the text of a PNG's `harness` chunk, checked: at most
    MAX_PARAMS_CHARS characters, JSON nested at most MAX_PARAMS_DEPTH deep, a mapping.
    HarnessError (one line starting with `label`) otherwise."""
    from harness.safeio import loads_json

    if text is None:
        raise HarnessError(f"{label}: no harness parameters embedded (not rendered by harness?)")
    if len(text) > MAX_PARAMS_CHARS:
        raise HarnessError(
            f"{label}: the embedded harness parameters are {len(text)} characters, over the cap of "
            f"{MAX_PARAMS_CHARS}"
        )
    try:
        data = loads_json(text, source="embedded harness parameters", max_depth=MAX_PARAMS_DEPTH)
    except HarnessError as e:
        raise HarnessError(f"{label}: {e}") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{label}: the embedded harness parameters are not a mapping")
    return data


def panel_params_from_text(text: str | None, label: str) -> PanelParams:
    """`params_from_text`, then the typed record: HarnessError (a `RecordError` naming the field
    when the JSON is not a `PanelParams`) with one line starting with `label`."""
    return parse(PanelParams, params_from_text(text, label), f"{label}: embedded harness parameters")


def png_text(im) -> str | None:
    """The `harness` chunk of an open PIL image (None when absent or not a PNG). PIL itself caps
    each compressed text chunk at PngImagePlugin.MAX_TEXT_CHUNK (1 MB) inflated and all text at
    MAX_TEXT_MEMORY (64 MB); `params_from_text` then caps the one chunk read."""
    if im.format != "PNG":
        return None
    text = im.text.get(CHUNK)
    return text if isinstance(text, str) else None


def read_params(path: str | Path, *, follow_links: bool = False) -> dict[str, Any]:
    """The embedded parameters of a harness PNG; HarnessError if absent or unreadable.

    The file is read through `harness.safeio.read_bytes` (no link followed unless
    `follow_links`, no FIFO opened, at most MAX_PNG_BYTES) and decoded from memory under
    MAX_PIXELS, so an untrusted panel can neither point elsewhere nor inflate without bound.
    """
    import io

    from harness.imaging import open_untrusted
    from harness.safeio import read_bytes

    path = Path(path)
    data = read_bytes(path, max_bytes=MAX_PNG_BYTES, follow_links=follow_links)
    try:
        with open_untrusted(io.BytesIO(data), MAX_PIXELS) as im:
            fmt = im.format
            text = png_text(im)
    except HarnessError as e:
        raise HarnessError(f"{path}: not a readable image ({e})") from None
    if fmt != "PNG":
        raise HarnessError(f"{path}: not a PNG ({fmt}); parameters live in PNG chunks")
    return params_from_text(text, str(path))


def read_panel_params(path: str | Path, *, follow_links: bool = False) -> PanelParams:
    """`read_params`, typed (see `panel_params_from_text`)."""
    return parse(
        PanelParams, read_params(path, follow_links=follow_links), f"{path}: embedded harness parameters"
    )


def describe(params: PanelParams) -> str:
    """Multi-line, aligned summary of embedded parameters for `harness inspect`."""
    p, lora = params, params.lora
    rows = [
        ("story", f"{p.team}/{p.name}, panel {p.panel}"),
        ("prompt", p.prompt),
        ("negative", p.negative_prompt or "(none)"),
        ("seed", p.seed),
        ("steps", p.steps),
        ("guidance", p.guidance),
        ("size", f"{p.width}x{p.height}"),
        ("scheduler", p.scheduler),
        ("model", f"{p.model.ref} (sha256 {p.model.sha256})"),
        ("lora", f"{lora.file} x {lora.scale} (sha256 {lora.sha256})" if lora else "(none)"),
        ("rendered", f"{p.device} {p.dtype}, batch size {p.batch_size}, harness {p.harness_version}"),
    ]
    return "\n".join(f"{k:<10} {v}" for k, v in rows)
