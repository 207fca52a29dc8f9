"""Write safetensors files whose bytes depend only on their content.

The safetensors library keeps metadata in a Rust HashMap, so two processes can write the same
tensors and metadata in different key orders (different bytes). This writer sorts tensors and
metadata keys; the result is a standard safetensors file any reader loads.
"""

from __future__ import annotations

import json
import os
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


def save_sorted(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Atomically write `tensors` (CPU) to `path` with sorted names and sorted metadata."""
    path = Path(path)
    header: dict = {}
    if metadata:
        header["__metadata__"] = {k: str(metadata[k]) for k in sorted(metadata)}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        dtype = _DTYPES[str(t.dtype).removeprefix("torch.")]
        data = t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
