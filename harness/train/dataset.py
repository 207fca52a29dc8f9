"""Turn prepared images into fixed training examples: resize, crop and SDXL time ids.

Owns: the crop rule (scale the shorter side to `resolution`, then a centre crop or a seeded
random crop chosen once per image and repeat, so its latent can be cached) and the refusal of
images smaller than the resolution unless `allow_upscale`. No model code here.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from harness.config.training import TrainingConfig
from harness.data.prepare import PreparedData, PreparedItem
from harness.errors import HarnessError


@dataclass(frozen=True)
class Example:
    item: PreparedItem
    variant: int  # which seeded random crop (always 0 for centre crops)
    top: int
    left: int
    scaled_w: int
    scaled_h: int

    @property
    def time_ids(self) -> list[int]:
        """SDXL/Kolors micro-conditioning: original size, crop top-left, target size."""
        res = min(self.scaled_w, self.scaled_h)
        return [self.item.height, self.item.width, self.top, self.left, res, res]


def _scaled(w: int, h: int, res: int) -> tuple[int, int]:
    if w <= h:
        return res, max(res, round(h * res / w))
    return max(res, round(w * res / h)), res


def check_sizes(cfg: TrainingConfig, data: PreparedData) -> None:
    """Refuse images smaller than the resolution (cropping would have to upscale them)."""
    if cfg.allow_upscale:
        return
    small = [it for it in data.items if min(it.width, it.height) < cfg.resolution]
    if small:
        first = small[0]
        raise HarnessError(
            f"{len(small)} of {len(data.items)} images are smaller than resolution {cfg.resolution} "
            f"(e.g. {first.file}: {first.width}x{first.height}); set data.min_width/min_height to "
            f"{cfg.resolution}, lower resolution, or set allow_upscale: true"
        )


def examples(cfg: TrainingConfig, data: PreparedData) -> list[Example]:
    """One example per image and repeat (random crops differ per repeat, centre crops do not)."""
    out = []
    for it in data.items:
        sw, sh = _scaled(it.width, it.height, cfg.resolution)
        for r in range(cfg.repeats):
            if cfg.crop == "center":
                top, left, variant = (sh - cfg.resolution) // 2, (sw - cfg.resolution) // 2, 0
            else:
                seed = hashlib.sha256(f"{cfg.seed}\0{it.sha256}\0{r}".encode()).digest()
                n = int.from_bytes(seed[:8], "big")
                top = n % (sh - cfg.resolution + 1)
                left = (n >> 32) % (sw - cfg.resolution + 1)
                variant = r
            out.append(Example(it, variant, top, left, sw, sh))
    return out


def pixels(folder, ex: Example, res: int):
    """The example's crop as a float tensor [1, 3, res, res] in [-1, 1].

    The prepared file is opened without following a link and decoded under the dataset's pixel
    cap, like any file the harness reads back from disk."""
    import numpy as np
    import torch
    from PIL import Image

    from harness.data.images import MAX_PIXELS
    from harness.imaging import open_untrusted

    path = Path(folder) / ex.item.file
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        f = os.fdopen(os.open(path, flags), "rb")
    except OSError as e:
        raise HarnessError(
            f"{path}: cannot be read ({e.strerror}); run `harness data prepare` again"
        ) from None
    with f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise HarnessError(f"{path}: not a plain file; run `harness data prepare` again")
        try:
            with open_untrusted(f, MAX_PIXELS) as im:  # type: ignore[arg-type]
                im = im.convert("RGB").resize((ex.scaled_w, ex.scaled_h), Image.Resampling.BICUBIC)
        except HarnessError as e:
            raise HarnessError(f"{path}: {e}") from None
    im = im.crop((ex.left, ex.top, ex.left + res, ex.top + res))
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0)
