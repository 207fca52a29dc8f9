"""Write a small synthetic image folder for the tiny demo training (no images live in the repo).

`python -m harness.data.demo FOLDER` writes 8 seeded 96x80 PNGs with .txt captions, some of them
unusable on purpose (a corrupt file, a too-small image, a stray text file) so that
`harness data prepare stories/lora-demo.yaml` has something to report. Files are written with
`harness.safeio.write_atomic`, so a link planted at one of its names is replaced, not written through.
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_demo_images(folder: str | Path, count: int = 8, *, with_bad: bool = True) -> Path:
    """Seeded colourful images: a red left half (the 'style') over noise; captions in Chinese."""
    import io

    import numpy as np
    from PIL import Image

    from harness.safeio import write_atomic

    def png(array) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        return buf.getvalue()

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240808)
    for i in range(count):
        a = (rng.random((80, 96, 3)) * 255).astype("uint8")
        a[:, :48, 0] = 255
        write_atomic(folder / f"img{i:02d}.png", png(a))
        write_atomic(folder / f"img{i:02d}.txt", "二次元，红色")
    if with_bad:
        write_atomic(folder / "corrupt.png", b"\x89PNG\r\n\x1a\nnot really a png")
        write_atomic(folder / "tiny.png", png((rng.random((16, 16, 3)) * 255).astype("uint8")))
        write_atomic(folder / "tiny.txt", "二次元")
        write_atomic(folder / "notes.txt", "not an image")
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m harness.data.demo FOLDER", file=sys.stderr)
        raise SystemExit(2)
    print(write_demo_images(sys.argv[1]))
