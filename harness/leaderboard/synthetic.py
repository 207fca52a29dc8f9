"""Synthetic bundles: the real bundle layout and manifest, with made-up pictures and scores.

For the leaderboard's benchmark, its tests and a demo board without real submissions. The files
are what `harness bundle` writes (story.yaml, prompts.json, scores.json, images/NN.png, a
manifest built by the real manifest code); the images are small gradients and the numbers are
given, not measured. Their manifest says so: versions["synthetic"] = "yes".
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from harness.bundle import manifest as mf
from harness.config.gate import AESTHETIC_GATE
from harness.config.naming import model_id


@dataclass
class Spec:
    team: str
    name: str
    aesthetic: float | None  # None: no scores.json (an unscored bundle)
    consistency: float = 0.8
    alignment: float = 0.3
    title: str = ""
    size: int = 64
    noise: bool = False  # random pixels: as many bytes as a real panel (benchmarks of hashing)


def _image(path: Path, seed: int, size: int, noise: bool = False) -> None:
    from PIL import Image

    if noise:
        Image.frombytes("RGB", (size, size), random.Random(seed).randbytes(size * size * 3)).save(path)
        return
    rng = random.Random(seed)
    a = [rng.randrange(256) for _ in range(3)]
    b = [rng.randrange(256) for _ in range(3)]
    img = Image.linear_gradient("L").resize((size, size))
    Image.merge("RGB", [img.point(lambda v, i=i: a[i] + (b[i] - a[i]) * v // 255) for i in range(3)]).save(
        path
    )


def write(root: Path, spec: Spec, seed: int = 0) -> Path:
    """Write one synthetic bundle at root/<team>/<name>/ and return its folder."""
    folder = Path(root) / spec.team / spec.name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    prompts = [f"{spec.title or spec.name}, panel {i}, 二次元, 古风" for i in range(1, 9)]
    story = {
        "team": spec.team,
        "name": spec.name,
        "title": spec.title,
        "base_model": "tiny",
        "panels": [{"prompt": p, "seed": i} for i, p in enumerate(prompts, start=1)],
    }
    import yaml

    (folder / "story.yaml").write_text(yaml.safe_dump(story, allow_unicode=True, sort_keys=False), "utf-8")
    rows = []
    for i, prompt in enumerate(prompts, start=1):
        _image(folder / "images" / f"{i:02d}.png", seed * 8 + i, spec.size, spec.noise)
        rows.append(
            {"index": i, "file": f"images/{i:02d}.png", "seed": i, "prompt": prompt, "negative_prompt": ""}
        )
    (folder / "prompts.json").write_text(json.dumps(rows, ensure_ascii=False, indent=2), "utf-8")
    if spec.aesthetic is not None:
        rng = random.Random(seed)
        per = [spec.aesthetic + d for d in (-0.3, 0.3, -0.2, 0.2, -0.1, 0.1, 0.0, 0.0)]
        scores = {
            "kind": "harness.scores",
            "summary": {
                "panels": 8,
                "required_panels": 8,
                "valid": spec.aesthetic >= AESTHETIC_GATE,
                "aesthetic_mean": spec.aesthetic,
                "clip_i": spec.consistency,
                "clip_t_mean": spec.alignment,
            },
            "panels": [
                {
                    "index": i,
                    "file": f"{i:02d}.png",
                    "prompt": prompts[i - 1],
                    "aesthetic": per[i - 1],
                    "consistency": spec.consistency + rng.uniform(-0.05, 0.05),
                    "clip_t": spec.alignment + rng.uniform(-0.02, 0.02),
                }
                for i in range(1, 9)
            ],
        }
        (folder / "scores.json").write_text(json.dumps(scores, ensure_ascii=False, indent=2), "utf-8")
    header = {
        "kind": "harness.bundle",
        "format": mf.FORMAT,
        "model_id": str(model_id("synthetic", spec.team, spec.name)),
        "team": spec.team,
        "name": spec.name,
        "created": "2026-01-01T00:00:00+00:00",
        "scored": spec.aesthetic is not None,
        "lora": [],
        "versions": {"synthetic": "yes"},
    }
    mf.write(folder, mf.build(folder, header))
    return folder


def board(root: Path, n: int, seed: int = 0, *, size: int = 32, noise: bool = False) -> list[Path]:
    """`n` synthetic bundles with spread-out scores: most valid, some under the gate, some unscored."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        aesthetic = None if i % 17 == 16 else round(rng.uniform(5.2, 7.4), 4)
        spec = Spec(
            team=f"team{i // 4:04d}",
            name=f"story{i % 4}",
            aesthetic=aesthetic,
            consistency=round(rng.uniform(0.55, 0.95), 4),
            alignment=round(rng.uniform(0.2, 0.4), 4),
            title=f"故事 {i}",
            size=size,
            noise=noise,
        )
        out.append(write(root, spec, seed=i))
    return out
