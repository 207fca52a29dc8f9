"""Files the leaderboard may show: regular files inside the submissions root, nothing else.

Owns: turning a (bundle, file) pair from the index into a path on disk. Both parts must be safe
relative paths by the manifest's rules, no component may be a symlink, and the resolved path
must lie inside the root. Everything the app and the export show goes through `resolve_file`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from harness.bundle.manifest import unsafe_path_reason
from harness.errors import HarnessError

MAX_PIXELS = 16_000_000  # decompression bombs are refused before decoding


def resolve_file(root: Path, bundle: str, rel: str) -> Path:
    """root/bundle/rel as a regular file inside `root`, or HarnessError saying why not."""
    for what, part in (("bundle", bundle), ("file", rel)):
        reason = unsafe_path_reason(part)
        if reason is not None:
            raise HarnessError(f"{what} path {part!r} refused: {reason}")
    root = Path(root).resolve()
    path = root
    for name in [*bundle.split("/"), *rel.split("/")]:
        path = path / name
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            raise HarnessError(f"{bundle}/{rel}: no such file in the submissions root") from None
        if stat.S_ISLNK(mode):
            raise HarnessError(f"{bundle}/{rel}: refused (a symlink on the way)")
    if not stat.S_ISREG(mode):
        raise HarnessError(f"{bundle}/{rel}: not a regular file")
    if root not in path.resolve().parents:
        raise HarnessError(f"{bundle}/{rel}: outside the submissions root")
    return path


def load_panel(root: Path, bundle: str, rel: str, max_side: int):
    """The panel root/bundle/rel decoded (under MAX_PIXELS) as RGB and shrunk to fit `max_side`."""
    from harness.score.images import open_rgb

    img, _, _ = open_rgb(resolve_file(root, bundle, rel), MAX_PIXELS)
    img.thumbnail((max_side, max_side))
    return img
