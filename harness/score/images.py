"""Find and load the panels to score, refusing what could hurt and converting what is odd.

Owns: which files in a folder are panels (every regular file is tried, as the competition's
evaluate() does, but non-images are reported and skipped instead of crashing), applying
the given pixel limit, conversion to RGB exactly as the competition's CLIPProcessor does (PIL
`convert("RGB")`), and reading embedded harness parameters. Each file is read once through
`harness.safeio.read_bytes` (no link followed, no FIFO opened, at most MAX_FILE_BYTES) and
decoded from memory through `harness.imaging` (decompression bombs, truncated files); its
parameters come from the same bytes (`harness.render.pngmeta`: chunk size and depth capped).
At most MAX_FILES entries of a folder are looked at. Must not load models.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.layout import IMAGES, RUN_MANIFEST

# Modes PIL's convert("RGB") clips rather than scales: a 16-bit or float image scores as the
# competition would score it, which is usually not what its author sees.
_CLIPPED_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_FILE_BYTES = 64 << 20  # per image file
MAX_FILES = 1024  # entries looked at in one folder (a story has 8 panels)


@dataclass
class Panel:
    """One loaded image: position in the story, source file, RGB pixels, embedded parameters."""

    index: int  # 1-based position in the scored order
    path: Path
    image: Any  # PIL.Image.Image in RGB
    mode: str  # the file's original PIL mode
    params: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Skipped:
    path: Path
    reason: str


@dataclass
class ImageSet:
    folder: Path
    panels: list[Panel]
    skipped: list[Skipped]


def image_folder(path: Path) -> Path:
    """The folder holding the panels: `<run>/images` for a harness run, else `path` itself."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"{path}: no such folder")
    if not path.is_dir():
        raise HarnessError(f"{path}: not a folder (score a run folder or a folder of images)")
    images = path / IMAGES
    if (path / RUN_MANIFEST).is_file() and os.path.lexists(images):
        # a bundle is untrusted: its images/ must be the real folder, never a link to elsewhere
        st = os.lstat(images)
        if stat.S_ISLNK(st.st_mode):
            raise HarnessError(f"{images}: is a symlink; the panels must be in the folder itself")
        if stat.S_ISDIR(st.st_mode):
            return images
    return path


def _decode(data: bytes, max_pixels: int) -> tuple[Any, str, list[str], str | None]:
    """(RGB image, original mode, notes, `harness` PNG chunk or None) of an image file's bytes."""
    import io

    from harness.imaging import open_untrusted
    from harness.render.pngmeta import png_text

    with open_untrusted(io.BytesIO(data), max_pixels) as im:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        im.load()
        mode = im.mode
        notes = []
        if mode in _CLIPPED_MODES:
            notes.append(
                f"{mode} image converted as the competition's processor does "
                "(PIL clips values above 255); save 8-bit RGB to be scored fairly"
            )
        elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
            notes.append("alpha channel dropped, as the competition's processor does")
        elif mode != "RGB":
            notes.append(f"{mode} image converted to RGB")
        rgb = im.convert("RGB")
        text = png_text(im)
    return rgb, mode, notes, text


def open_rgb(path: Path, max_pixels: int):
    """(RGB image, original mode, notes) or HarnessError saying why the file is not usable."""
    from harness.safeio import read_bytes

    data = read_bytes(path, max_bytes=MAX_FILE_BYTES)
    rgb, mode, notes, _ = _decode(data, max_pixels)
    return rgb, mode, notes


def load_images(path: Path, *, max_pixels: int) -> ImageSet:
    """Load every usable image in the folder, in file-name order; the rest are listed as skipped."""
    from harness.render.pngmeta import params_from_text
    from harness.safeio import read_bytes

    folder = image_folder(path)
    panels: list[Panel] = []
    skipped: list[Skipped] = []
    with os.scandir(folder) as it:
        entries = []
        for entry in it:
            entries.append(entry)
            if len(entries) > MAX_FILES:
                raise HarnessError(f"{folder}: more than {MAX_FILES} entries; not a folder of panels")
    for entry in sorted(entries, key=lambda e: e.name):
        file = Path(entry.path)
        if not entry.is_file(follow_symlinks=False):
            if not entry.is_dir(follow_symlinks=False):
                skipped.append(Skipped(file, "not a regular file"))
            continue
        try:
            data = read_bytes(file, max_bytes=MAX_FILE_BYTES, what=file.name)
            rgb, mode, notes, text = _decode(data, max_pixels)
        except HarnessError as e:
            skipped.append(Skipped(file, str(e).removeprefix(f"{file.name}: ")))
            continue
        try:
            params = params_from_text(text, file.name)
        except HarnessError as e:
            params = None
            notes.append(f"no reproducibility check possible: {str(e).removeprefix(f'{file.name}: ')}")
        panels.append(Panel(len(panels) + 1, file, rgb, mode, params, notes))
    return ImageSet(folder, panels, skipped)
