"""Open image files the harness did not write (datasets, bundles, panels to score) safely.

Owns: PIL's process-wide decompression-bomb guard, set once here at import and never changed
per call (the leaderboard serves from several threads; no other module assigns
`Image.MAX_IMAGE_PIXELS`), and `open_untrusted`, which applies the caller's own pixel cap
before anything is decoded and turns every PIL failure into one HarnessError line. Each caller
keeps its cap and decides what to do with the image (verify, decode, convert, read chunks).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from PIL import Image, UnidentifiedImageError

from harness.errors import HarnessError, first_line

# The largest cap any caller uses (data/images.MAX_PIXELS). PIL refuses at open only above
# twice its guard, so every caller's own cap, checked right after open, decides first.
GUARD_PIXELS = 16384 * 16384
Image.MAX_IMAGE_PIXELS = GUARD_PIXELS
# PIL picks a decoder from the bytes, not the name, and some of its 40-odd formats run programs
# (EPS runs Ghostscript on the file's PostScript). Untrusted files are decoded only as these.
FORMATS = ("PNG", "JPEG", "WEBP")


def _no_ghostscript() -> None:
    """Belt and braces for any other code path in this process: PIL's EPS plugin finds no
    Ghostscript to run (it would otherwise run `gs` on a team's PostScript)."""
    from PIL import EpsImagePlugin

    EpsImagePlugin.gs_binary = False
    EpsImagePlugin.gs_windows_binary = False


_no_ghostscript()


@contextmanager
def open_untrusted(path: str | Path, max_pixels: int) -> Iterator[Image.Image]:
    """The PIL image at `path`, opened lazily, once its width x height is known to fit `max_pixels`.

    Raises HarnessError with a one-line reason when the file is over the cap, not an image, or
    corrupt; failures while the caller decodes inside the `with` block (a truncated file fails
    only at `load()`) are reported the same way. The file is closed on leaving the block.
    """
    if max_pixels > GUARD_PIXELS:
        raise ValueError(f"max_pixels {max_pixels} is over PIL's guard {GUARD_PIXELS} (harness.imaging)")
    try:
        with warnings.catch_warnings():
            # Only images over the guard warn, and the cap below refuses them all anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise HarnessError(f"{w}x{h} = {w * h} pixels is over the limit of {max_pixels}")
                yield im
    except HarnessError:
        raise
    except Image.DecompressionBombError as e:
        raise HarnessError(f"refused as a decompression bomb ({first_line(e)})") from None
    except UnidentifiedImageError:
        raise HarnessError("not an image") from None  # or not one of FORMATS
    except (OSError, SyntaxError, ValueError) as e:  # truncated data, corrupt chunk, bad header
        raise HarnessError(f"unreadable or truncated image ({first_line(e)})") from None
