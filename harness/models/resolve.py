"""Turn a model reference into a local diffusers-layout folder (downloading when needed).

`modelscope:` ids are fetched with modelscope's snapshot_download into the harness cache
($HARNESS_CACHE/modelscope), `local:` paths are checked, `tiny` is built once into the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.config.refs import ModelRef
from harness.errors import HarnessError, first_line
from harness.paths import cache_dir


@dataclass(frozen=True)
class ResolvedModel:
    ref: ModelRef
    folder: Path
    sha256: str  # content hash of the folder


def _modelscope_folder(ref: ModelRef, root: Path) -> Path:
    try:
        from modelscope import snapshot_download
    except ImportError as e:  # pragma: no cover - modelscope is a hard dependency
        raise HarnessError(f"modelscope is not importable ({e}); reinstall the harness") from None
    try:
        path = snapshot_download(
            ref.location,
            revision=ref.revision,
            cache_dir=str(root / "modelscope"),
        )
    except Exception as e:  # network, auth, unknown id: one line, not a traceback
        raise HarnessError(
            f"could not download {ref} from ModelScope: {type(e).__name__}: {first_line(e)}"
        ) from None
    return Path(path)


def fetch_folder(ref: ModelRef) -> Path:
    """Any `modelscope:` or `local:` reference as a local folder, without checking its layout."""
    if ref.source == "local":
        folder = Path(ref.location).expanduser()
        if not folder.exists():
            raise HarnessError(f"{ref}: {folder} does not exist")
        return folder
    if ref.source == "modelscope":
        return _modelscope_folder(ref, cache_dir())
    raise HarnessError(f"{ref}: not a downloadable reference")


def model_folder(ref: ModelRef) -> Path:
    """The local folder for `ref`, downloading or building it if needed."""
    root = cache_dir()
    if ref.source == "tiny":
        from harness.models.tiny import ensure_tiny

        return ensure_tiny(root)
    if ref.source == "local":
        folder = Path(ref.location).expanduser()
    else:
        folder = _modelscope_folder(ref, root)
    if not (folder / "model_index.json").is_file():
        raise HarnessError(f"{ref}: {folder} is not a diffusers-layout folder (no model_index.json)")
    return folder


def resolve(ref: ModelRef) -> ResolvedModel:
    """Locate (or fetch) the model and hash its content."""
    from harness.hashing import sha256_tree

    folder = model_folder(ref)
    return ResolvedModel(ref, folder, sha256_tree(folder, cache_dir() / "digests.json"))
