"""The full-size Kolors UNet's layout, built on the meta device (no weights, a few seconds).

Owns: the Kolors UNet config (shared/STACK.md, the same as Kwai-Kolors/Kolors-diffusers'
unet/config.json) and the check whether some UNet config has that layout, which decides
whether a DiffSynth-naming export makes sense.
"""

from __future__ import annotations

from functools import lru_cache

KOLORS_UNET_CONFIG = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048,
    "encoder_hid_dim": 4096,
    "encoder_hid_dim_type": "text_proj",
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 5632,
    "use_linear_projection": True,
}
_STRUCTURE = (
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "transformer_layers_per_block",
    "encoder_hid_dim_type",
    "addition_embed_type",
)


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def is_kolors_layout(unet_config) -> bool:
    """True when `unet_config` (a dict or diffusers FrozenDict) has the full Kolors block structure."""
    return all(_norm(unet_config.get(k)) == _norm(KOLORS_UNET_CONFIG[k]) for k in _STRUCTURE)


def meta_kolors_unet():
    """A full-size Kolors UNet2DConditionModel on the meta device (names and shapes only)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**KOLORS_UNET_CONFIG)


@lru_cache(maxsize=1)
def _names() -> tuple[tuple[str, ...], tuple[str, ...], dict[str, tuple[int, int]]]:
    import torch

    unet = meta_kolors_unet()
    params = tuple(name for name, _ in unet.named_parameters())
    shapes = {
        n: (m.in_features, m.out_features) for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear)
    }
    return params, tuple(shapes), shapes


def kolors_param_names() -> tuple[str, ...]:
    """Every parameter name of the full-size Kolors UNet in diffusers naming."""
    return _names()[0]


def kolors_linear_modules() -> tuple[str, ...]:
    """Names of every nn.Linear in the Kolors UNet (what a LoRA can target)."""
    return _names()[1]


def kolors_linear_shapes() -> dict[str, tuple[int, int]]:
    """{Linear name: (in_features, out_features)} of the full-size Kolors UNet (LoRA shape check)."""
    return dict(_names()[2])
