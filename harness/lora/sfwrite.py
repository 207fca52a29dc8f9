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

import errno
import json
import os
import secrets
import stat
from pathlib import Path

from harness.errors import HarnessError

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
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def _write_streamed(path: Path, header: bytes, tensors: list) -> None:
    try:
        dfd = os.open(path.parent, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise HarnessError(
                f"{path.parent}: is not a folder (a link or a file); nothing written"
            ) from None
        raise HarnessError(f"{path.parent}: cannot write here ({e.strerror})") from None
    tmp: str | None = f".{path.name[:100]}.{secrets.token_hex(8)}.tmp"
    try:
        try:
            mode = os.stat(path.name, dir_fd=dfd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise HarnessError(f"{path}: exists and is not a file; not replaced")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644, dir_fd=dfd)
        try:
            _write_all(fd, len(header).to_bytes(8, "little"))
            _write_all(fd, header)
            for t in tensors:
                if t.numel():
                    _write_all(fd, t.view(-1).view(dtype=__import__("torch").uint8).numpy())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as e:  # a folder appeared at the name between the check and the rename
            raise HarnessError(f"{path}: cannot be replaced ({e.strerror}); nothing written") from None
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        os.close(dfd)


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
