"""The Kolors architecture: the component configs of Kwai-Kolors/Kolors-diffusers, in one place.

Owns: the UNet, VAE and ChatGLM3-6B text-encoder configs as the real model's config files give
them (shared/STACK.md "Real Kolors facts"). The tiny model is these with a few sizes overridden
(`harness.models.tiny`), the LoRA layout check builds the UNet from them
(`harness.lora.kolors_layout`), and the benchmark builds full-size Kolors from them
(bench/kolors_arch.py). Names only: nothing here imports torch or holds weights.
"""

from __future__ import annotations

from typing import Any

# UNet2DConditionModel (SDXL layout, 4096-wide text projected to 2048 cross-attention).
KOLORS_UNET: dict[str, Any] = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048,
    encoder_hid_dim=4096,
    encoder_hid_dim_type="text_proj",
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=5632,  # 4096 pooled + 6 time ids x 256
    use_linear_projection=True,
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
)

# The SDXL VAE as Kolors ships it.
KOLORS_VAE: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)

# ChatGLM3-6B (the Kolors text encoder): 28 layers, multi-query attention with 2 groups.
KOLORS_CHATGLM: dict[str, Any] = dict(
    num_layers=28,
    padded_vocab_size=65024,
    hidden_size=4096,
    ffn_hidden_size=13696,
    kv_channels=128,
    num_attention_heads=32,
    seq_length=32768,
    multi_query_attention=True,
    multi_query_group_num=2,
    add_qkv_bias=True,
    add_bias_linear=False,
    rmsnorm=True,
    post_layer_norm=True,
    layernorm_epsilon=1e-5,
    apply_query_key_layer_scaling=True,
    attention_softmax_in_fp32=True,
    original_rope=True,  # the real config.json sets it; ChatGLMConfig's __init__ does not
)

# What makes a UNet "the Kolors layout" (a DiffSynth-naming LoRA export needs exactly these).
UNET_STRUCTURE = (
    "block_out_channels",
    "layers_per_block",
    "down_block_types",
    "up_block_types",
    "transformer_layers_per_block",
    "encoder_hid_dim_type",
    "addition_embed_type",
)


def with_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` replacing some of its keys; a key `base` lacks is refused (a typo
    would otherwise build a model the overrides do not describe)."""
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise KeyError(f"overrides name keys the base config does not have: {', '.join(unknown)}")
    return {**base, **overrides}
