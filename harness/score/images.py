"""Find and load the panels to score, refusing what could hurt and converting what is odd.

Owns: which files in a folder are panels (every regular file is tried, as the competition's
evaluate() does, but non-images are reported and skipped instead of crashing), applying
the given pixel limit, conversion to RGB exactly as the competition's CLIPProcessor does (PIL
`convert("RGB")`), and reading embedded harness parameters. Opening (decompression bombs,
truncated files) goes through `harness.imaging`. Must not load models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

# Modes PIL's convert("RGB") clips rather than scales: a 16-bit or float image scores as the
# competition would score it, which is usually not what its author sees.
_CLIPPED_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


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
    if (path / "manifest.json").is_file() and (path / "images").is_dir():
        return path / "images"
    return path


def open_rgb(path: Path, max_pixels: int):
    """(RGB image, original mode, notes) or HarnessError saying why the file is not usable."""
    from harness.imaging import open_untrusted

    with open_untrusted(path, max_pixels) as im:
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
    return rgb, mode, notes


def _params(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    from harness.render.pngmeta import read_params

    try:
        return read_params(path), None
    except HarnessError as e:
        return None, str(e).removeprefix(f"{path}: ")


def load_images(path: Path, *, max_pixels: int) -> ImageSet:
    """Load every usable image in the folder, in file-name order; the rest are listed as skipped."""
    folder = image_folder(path)
    panels: list[Panel] = []
    skipped: list[Skipped] = []
    for file in sorted(folder.iterdir(), key=lambda p: p.name):
        if not file.is_file() or file.is_symlink():
            if file.is_symlink() or not file.is_dir():
                skipped.append(Skipped(file, "not a regular file"))
            continue
        try:
            rgb, mode, notes = open_rgb(file, max_pixels)
        except HarnessError as e:
            skipped.append(Skipped(file, str(e)))
            continue
        params, why = _params(file)
        if why:
            notes.append(f"no reproducibility check possible: {why}")
        panels.append(Panel(len(panels) + 1, file, rgb, mode, params, notes))
    return ImageSet(folder, panels, skipped)
