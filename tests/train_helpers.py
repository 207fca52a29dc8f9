"""Helpers shared by the training tests: tiny image folders and tiny training configs."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.data.demo import write_demo_images


def tiny_config(tmp: Path, name: str = "train.yaml", images: Path | None = None, **overrides) -> Path:
    """A 64 px, few-step training config on the tiny model with its own image folder."""
    data_path = str(images)
    if images is None and "data" not in overrides:
        images = write_demo_images(tmp / "data", count=4, with_bad=False)
        data_path = "data"  # relative to the config, so a story beside it may name the config
    cfg = {
        "base_model": "tiny",
        "data": {
            "source": "folder",
            "path": data_path,
            "prepared": f"prepared-{Path(name).stem}",
        },
        "resolution": 64,
        "lora": {"rank": 4, "alpha": 4.0},
        "optimizer": {"learning_rate": 1.0e-2},
        "max_steps": 4,
        "seed": 7,
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
