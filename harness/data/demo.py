"""The demo training data: small seeded images for the tiny model (no images live in the repo).

Owns: the `data.source: demo` kind (`demo_items`, images made in memory, so `harness train
configs/lora-demo.yaml` needs no other command and writes nothing but its prepared folder and
run) and `write_demo_images`, the same images as files for tests of the folder source. Both come
from one seeded generator: 8 images of 96x80 with a red left half (the "style") over noise and a
Chinese caption, plus a few unusable on purpose so that `harness data prepare` has something to
report. Files are written with `harness.safeio.write_atomic`, so a link planted at one of its
names is replaced, not written through.
"""

from __future__ import annotations

from pathlib import Path

from harness.data.sources import RawItem

DEMO_VERSION = 1  # bump when the generated images change: prepared demo data is then rebuilt
DEMO_COUNT = 8
CAPTION = "二次元，红色"


def _arrays(count: int, with_bad: bool):
    """(name, uint8 HxWx3 array, caption or None) in a fixed order from a fixed seed."""
    import numpy as np

    rng = np.random.default_rng(20240808)
    for i in range(count):
        a = (rng.random((80, 96, 3)) * 255).astype("uint8")
        a[:, :48, 0] = 255
        yield f"img{i:02d}", a, CAPTION
    if with_bad:
        yield "tiny", (rng.random((16, 16, 3)) * 255).astype("uint8"), "二次元"  # below min_width
        a = (rng.random((80, 96, 3)) * 255).astype("uint8")
        yield "uncaptioned", a, None


def demo_items(
    count: int = DEMO_COUNT, *, max_images: int | None = None, caption: str | None = None
) -> list[RawItem]:
    """The demo source's items: decoded images named `demo:<name>` in reports, with their own
    captions or `caption` for every one (`data.caption`)."""
    from PIL import Image

    items = [
        RawItem(f"demo:{name}", None, caption if caption is not None else own, image=Image.fromarray(a))
        for name, a, own in _arrays(count, with_bad=True)
    ]
    return items[:max_images] if max_images is not None else items


def write_demo_images(folder: str | Path, count: int = DEMO_COUNT, *, with_bad: bool = True) -> Path:
    """The demo images as PNG files with .txt captions in `folder` (for the folder source).

    With `with_bad`, also a corrupt PNG and a stray text file besides the too-small image and
    the uncaptioned one."""
    import io

    from PIL import Image

    from harness.safeio import write_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, a, caption in _arrays(count, with_bad):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        write_atomic(folder / f"{name}.png", buf.getvalue())
        if caption is not None:
            write_atomic(folder / f"{name}.txt", caption)
    if with_bad:
        write_atomic(folder / "corrupt.png", b"\x89PNG\r\n\x1a\nnot really a png")
        write_atomic(folder / "notes.txt", "not an image")
    return folder
