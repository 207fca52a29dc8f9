"""Write a small synthetic image folder for the tiny demo training (no images live in the repo).

`python -m harness.data.demo FOLDER` writes 8 seeded 96x80 PNGs with .txt captions, some of them
unusable on purpose (a corrupt file, a too-small image, a stray text file) so that
`harness data prepare stories/lora-demo.yaml` has something to report.
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_demo_images(folder: str | Path, count: int = 8, *, with_bad: bool = True) -> Path:
    """Seeded colourful images: a red left half (the 'style') over noise; captions in Chinese."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240808)
    for i in range(count):
        a = (rng.random((80, 96, 3)) * 255).astype("uint8")
        a[:, :48, 0] = 255
        Image.fromarray(a).save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text("二次元，红色", encoding="utf-8")
    if with_bad:
        (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(folder / "tiny.png")
        (folder / "tiny.txt").write_text("二次元", encoding="utf-8")
        (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m harness.data.demo FOLDER", file=sys.stderr)
        raise SystemExit(2)
    print(write_demo_images(sys.argv[1]))
