"""Write safetensors files whose bytes depend only on their content, without following links.

The safetensors library keeps metadata in a Rust HashMap, so two processes can write the same
tensors and metadata in different key orders (different bytes). This writer sorts tensors and
metadata keys; the result is a standard safetensors file any reader loads.

The write is harness.safeio.write_atomic's, streamed tensor by tensor (a LoRA can be large): the
folder is opened without following a link, the temporary file is created exclusively with a
random name and O_NOFOLLOW, and the rename replaces whatever name is at the target (a planted
link or hardlink is replaced, never written through; a planted folder or special file is refused).
"""

from __future__ import annotations

import json
from pathlib import Path

_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}


def _write_streamed(path: Path, header: bytes, tensors: list) -> None:
    import torch

    from harness.safeio import write_atomic

    def produce(write) -> None:
        write(len(header).to_bytes(8, "little"))
        write(header)
        for t in tensors:
            if t.numel():
                write(t.view(-1).view(dtype=torch.uint8).numpy())

    write_atomic(path, produce)


def save_sorted(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Atomically write `tensors` (CPU) to `path` with sorted names and sorted metadata."""
    path = Path(path)
    header: dict = {}
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    ordered = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        dtype = _DTYPES[str(t.dtype).removeprefix("torch.")]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        ordered.append(t)
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    _write_streamed(path, text, ordered)
