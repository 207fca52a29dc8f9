"""Read a LoRA file into a flat {name: tensor} dict without ever executing a pickle.

Owns: the one place an untrusted LoRA file is opened, and the memory bound on it. A
.safetensors file is read without pickle, its header checked by hand first (length, tensor
count, dtypes, sizes against the file) so a lying header is refused before anything is
allocated. A .ckpt/.pt/.pth/.bin is read only as the zip torch.save writes: its directory is
checked first (entries stored uncompressed, declared sizes adding up to no more than the file,
entry and pickle caps), then torch.load(weights_only=True) reads a copy of exactly the entries
checked; a legacy (non-zip) torch file is refused. Its content must be a flat mapping of names
to tensors (a Lightning checkpoint may nest that mapping one level deep under 'state_dict').
Every tensor must be a plain CPU tensor whose bytes lie in its own storage, and all tensors
together may hold no more bytes than the file: what the checks and conversions later allocate is
bounded by the file size. Anything else is refused with one line starting with the path. What
the names mean is harness.lora.formats' business.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import warnings
import zipfile
from pathlib import Path

from harness.errors import HarnessError, first_line

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MiB = 1 << 20
MAX_LORA_BYTES = 2048 * MiB  # the bundle's cap on a LoRA file (harness.bundle.manifest)
MAX_LORA_TENSORS = 20_000  # kohya on all 744 Linears of the Kolors UNet: 2,232 (down, up, alpha)
MAX_HEADER_BYTES = 16 * MiB  # a safetensors JSON header, metadata included
MAX_PICKLE_BYTES = 64 * MiB  # a checkpoint's data.pkl (20,000 tensors take about 3 MiB)
MAX_ZIP_ENTRIES = MAX_LORA_TENSORS + 64  # one per storage plus torch's few bookkeeping records
_FLAT = "only a flat mapping of names to tensors is accepted"
_ZIP_MAGIC = b"PK\x03\x04"
# Bytes per element of the dtypes safetensors declares (F4/F6 pack below one byte: not LoRA dtypes).
_SF_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "C64": 8,
}


def _unpickling_reason(e: Exception) -> str:
    """torch's weights_only refusal is a paragraph; keep the part naming what it rejected."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"refused: holds pickled Python objects that weights_only loading rejects (global {found[1]})"
    lines = [ln.strip() for ln in text.split("WeightsUnpickler error:", 1)[-1].splitlines() if ln.strip()]
    detail = lines[0] if "WeightsUnpickler error:" in text and lines else first_line(e)
    return f"refused: not a plain tensor checkpoint ({detail[:200]})"


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
            raise HarnessError(f"{path}: refused: {where}key {k!r:.80} is not a string ({_FLAT})")
        if not isinstance(v, torch.Tensor):
            raise HarnessError(
                f"{path}: refused: {where}{k!r:.200} holds a {type(v).__name__}, not a tensor ({_FLAT})"
            )
    return dict(obj)


def _bounded(tensors: dict, path: Path, file_size: int) -> dict:
    """Refuse tensors that are not plain CPU arrays held in their own bytes, or that together
    claim more bytes than the file has (an expanded view: a huge shape with stride 0 over one
    value would make every later pass over its values allocate that huge shape)."""
    import torch

    total = 0
    for k, t in tensors.items():
        name = f"{k!r:.200}"
        if type(t) not in (torch.Tensor, torch.nn.Parameter) or t.layout != torch.strided:
            raise HarnessError(
                f"{path}: refused: {name} is a {t.layout} {type(t).__name__}, not a dense tensor"
            )
        odd = "quantized" if t.is_quantized else "nested" if t.is_nested else f"on device {t.device.type}"
        if t.device.type != "cpu" or t.is_quantized or t.is_nested:
            raise HarnessError(f"{path}: refused: {name} is not a plain tensor ({odd})")
        nbytes = t.numel() * t.element_size()
        held = t.untyped_storage().nbytes()
        if nbytes > held:
            raise HarnessError(
                f"{path}: refused: {name} claims {nbytes} bytes of values over {held} stored bytes"
            )
        total += nbytes
        if total > file_size:
            raise HarnessError(f"{path}: refused: its tensors claim more bytes than the file's {file_size}")
    return tensors


def _regular_size(path: Path) -> int:
    """The size of the regular file at `path` (a link the user named is followed), under the cap."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise HarnessError(f"{path}: no such file") from None
    except OSError as e:
        raise HarnessError(f"{path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise HarnessError(f"{path}: is {kind}, not a LoRA file")
    if st.st_size > MAX_LORA_BYTES:
        raise HarnessError(f"{path}: {st.st_size} bytes is over the cap of {MAX_LORA_BYTES}")
    return st.st_size


def _check_safetensors_header(path: Path, size: int) -> None:
    """Refuse a header that lies, before the safetensors library parses or maps anything."""
    from harness.safeio import loads_json

    bad = f"{path}: not a readable safetensors file"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HarnessError(f"{bad} ({size} bytes, shorter than a header)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise HarnessError(f"{bad} (header of {n} bytes is over the cap of {MAX_HEADER_BYTES})")
        if n > size - 8:
            raise HarnessError(f"{bad} (header claims {n} bytes, the file has {size - 8} after its length)")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HarnessError(f"{bad} (header is not UTF-8 at byte {e.start})") from None
    header = loads_json(text, source=f"{path}: safetensors header", max_depth=3)
    if not isinstance(header, dict):
        raise HarnessError(f"{bad} (header is not a JSON object)")
    count = len(header) - ("__metadata__" in header)
    if count > MAX_LORA_TENSORS:
        raise HarnessError(f"{path}: {count} tensors is over the cap of {MAX_LORA_TENSORS}")
    data_bytes, claimed = size - 8 - n, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise HarnessError(f"{bad} (tensor {name!r:.200} has no shape)")
        per = _SF_DTYPE_BYTES.get(info.get("dtype"))
        if per is None:
            raise HarnessError(
                f"{path}: tensor {name!r:.200} has dtype {str(info.get('dtype'))[:20]!r}, not read"
            )
        numel = 1
        for d in info["shape"]:
            if type(d) is not int or d < 0:
                raise HarnessError(f"{bad} (tensor {name!r:.200} has shape entry {str(d)[:20]!r})")
            numel *= d
        claimed += numel * per  # Python ints: no overflow to wrap a huge claim round to a small one
        if claimed > data_bytes:
            raise HarnessError(f"{bad} (tensors claim more than the {data_bytes} data bytes the file holds)")


def _read_safetensors(path: Path, size: int) -> tuple[dict, dict[str, str]]:
    from safetensors import safe_open

    _check_safetensors_header(path, size)
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
            f"{path}: not a readable safetensors file ({type(e).__name__}: {first_line(e, 200)})"
        ) from None
    if not sd:
        raise HarnessError(f"{path}: holds no tensors")
    return _bounded(sd, path, size), meta


def _checked_zip_copy(path: Path, size: int) -> io.BytesIO:
    """The checkpoint's zip entries, checked from its directory and copied into a fresh zip.

    torch.save stores every entry uncompressed, so a sound checkpoint's entries add up to less
    than the file. A compressed entry, a declared size that lies, more entries than tensors
    allow or a pickle over its cap is refused before any entry is inflated; torch then reads the
    copy, so what it parses is exactly what was checked here (never its own view of the bytes).
    """
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != _ZIP_MAGIC:
        raise HarnessError(
            f"{path}: refused: not a zip checkpoint (a legacy torch file or a bare pickle); "
            "only checkpoints written by torch.save since torch 1.6 are read"
        )
    try:
        zf = zipfile.ZipFile(path)
    except Exception as e:  # zipfile parses untrusted bytes: BadZipFile, struct.error, EOFError...
        raise HarnessError(f"{path}: not a readable torch checkpoint (zip: {first_line(e, 200)})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise HarnessError(
                f"{path}: refused: {len(infos)} zip entries is over the cap of {MAX_ZIP_ENTRIES}"
            )
        names, total = set(), 0
        for i in infos:
            what = f"{path}: refused: zip entry {i.filename!r:.200}"
            if i.compress_type != zipfile.ZIP_STORED:
                raise HarnessError(
                    f"{what} is compressed (torch.save stores entries uncompressed; this one could inflate)"
                )
            if i.file_size != i.compress_size:
                raise HarnessError(f"{what} declares {i.file_size} bytes but stores {i.compress_size}")
            if i.filename in names:
                raise HarnessError(f"{what} appears twice")
            names.add(i.filename)
            if i.filename.endswith("data.pkl") and i.file_size > MAX_PICKLE_BYTES:
                raise HarnessError(f"{what} is {i.file_size} bytes, over the cap of {MAX_PICKLE_BYTES}")
            total += i.file_size
            if i.header_offset + i.compress_size > size or total > size:
                raise HarnessError(f"{what}: entries declare more bytes than the file's {size}")
        copy = io.BytesIO()
        try:
            with zipfile.ZipFile(copy, "w", compression=zipfile.ZIP_STORED) as out:
                for i in infos:
                    out.writestr(i.filename, zf.read(i))  # CRC and local header checked by zipfile
        except Exception as e:  # bad CRC, a local header that disagrees with the directory, ...
            raise HarnessError(
                f"{path}: not a readable torch checkpoint (zip: {first_line(e, 200)})"
            ) from None
    copy.seek(0)
    return copy


def load_lora_file(path: str | Path) -> tuple[dict, dict[str, str]]:
    """(state dict of CPU tensors, safetensors metadata or {}) for a .safetensors or pickle file.

    HarnessError("<path>: <reason>") for a missing, unreadable, oversized or unsafe file. Memory
    stays within a small multiple of the file size (itself capped at MAX_LORA_BYTES).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != ".safetensors" and suffix not in PICKLE_SUFFIXES:
        if not path.exists():
            raise HarnessError(f"{path}: no such file")
        raise HarnessError(f"{path}: unknown LoRA file type {path.suffix!r} (use .safetensors or .ckpt)")
    size = _regular_size(path)
    if suffix == ".safetensors":
        return _read_safetensors(path, size)
    copy = _checked_zip_copy(path, size)
    import torch

    try:
        with warnings.catch_warnings():  # torch warns on stderr about what it rebuilds: one line only
            warnings.simplefilter("ignore")
            obj = torch.load(copy, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for forbidden globals, size mismatches, zip errors
        raise HarnessError(f"{path}: {_unpickling_reason(e)}") from None
    finally:
        del copy
    return _bounded(_flat_tensors(obj, path), path, size), {}
