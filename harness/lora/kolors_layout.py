"""The full-size Kolors UNet's layout, built on the meta device (no weights, a few seconds).

Owns: the check whether some UNet config has the Kolors layout (the config itself is
`harness.models.kolors_arch.KOLORS_UNET`), which decides whether a DiffSynth-naming export makes
sense, and the names and shapes of the full-size UNet's layers.
"""

from __future__ import annotations

from functools import lru_cache

from harness.models.kolors_arch import KOLORS_UNET, UNET_STRUCTURE

KOLORS_UNET_CONFIG = KOLORS_UNET  # the one config (harness.models.kolors_arch)
_STRUCTURE = UNET_STRUCTURE


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
