"""Built-in miniature scoring models: the real classes at toy size, seeded, saved in real formats.

Owns: `tiny-aesthetic` (AestheticsPredictorV2Linear over a tiny CLIPVisionConfig with the real
768-wide projection, saved with save_pretrained beside a CLIPImageProcessor config) and
`tiny-clip` / `tiny-clip-ml` (a tiny open_clip model saved as open_clip_config.json plus
open_clip_model.safetensors, the layout of the laion repositories). They are loaded back through
exactly the code that loads the real models. Their scores are meaningless; their plumbing is not.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

TINY_SCORING_VERSION = "1"
TINY_SEED = 20240917

# 32x32 input, one transformer layer; the text tower uses open_clip's built-in BPE tokenizer.
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _build_aesthetic(folder: Path) -> None:
    import torch
    from aesthetics_predictor import AestheticsPredictorV2Linear
    from transformers import CLIPImageProcessor, CLIPVisionConfig

    torch.manual_seed(TINY_SEED)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=768,  # the head's first layer is hard-wired to 768 inputs
    )
    model = AestheticsPredictorV2Linear(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )


def _build_clip(folder: Path, seed: int) -> None:
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    config_path = folder / "open_clip_config.json"
    config_path.write_text(
        json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {"size": 32}}, indent=2), encoding="utf-8"
    )
    torch.manual_seed(seed)
    model = CLIP(**TINY_CLIP_CFG)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))


def ensure_tiny_scorer(name: str, cache_root: Path) -> Path:
    """The folder holding tiny scoring model `name`, built once (atomically) if absent."""
    target = cache_root / "models" / f"{name}-v{TINY_SCORING_VERSION}"
    marker = target / ".complete"
    if marker.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        if name == "tiny-aesthetic":
            _build_aesthetic(staging)
        elif name in ("tiny-clip", "tiny-clip-ml"):
            _build_clip(staging, TINY_SEED + (1 if name == "tiny-clip" else 2))
        else:
            raise ValueError(f"no tiny scoring model named {name!r}")
        (staging / ".complete").write_text("ok\n")
        try:
            staging.rename(target)
        except OSError:
            if not marker.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
