"""The built-in miniature Kolors: the real diffusers classes at toy size, seeded, saved to disk.

Owns: the tiny architecture and its deterministic initialisation. The result is written with
`save_pretrained` in the diffusers layout and loaded back through the same `from_pretrained`
path as the real Kolors, so tests and the demo exercise the real loading code. The tokenizer is
the REAL Kolors (ChatGLM3) tokenizer shipped in the diffsynth package, so Chinese prompts
tokenize exactly as in Kolors.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from harness.config.schedulers import KOLORS_SCHEDULER_CONFIG
from harness.config.tokens import kolors_tokenizer_dir

# Bump when the architecture or initialisation changes: it names the cache folder.
TINY_VERSION = "1"
TINY_SEED = 20240808

# Sizes: text hidden 32 (Kolors 4096), cross-attention 32 (2048), time embed 8 (256).
_TE_HIDDEN = 32
_TIME_DIM = 8


def init_chatglm_weights(model, generator=None) -> None:
    """ChatGLMModel leaves weights uninitialised (skip_init, torch.empty norms): set them all.

    Norm weights 1, other vectors 0, matrices N(0, 0.02), in name order: drawn on the CPU from
    `generator` (the tiny model: the same values on every machine) or, without one, in place on
    the model's device from torch's global RNG (the benchmark's full-size model). A model on the
    meta device has no values to set.
    """
    import torch

    if next(model.parameters()).device.type == "meta":
        return
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if param.ndim == 1 and "norm" in name:
                param.fill_(1.0)
            elif param.ndim == 1:
                param.zero_()
            elif generator is not None:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            else:
                param.normal_(0.0, 0.02)


def build_tiny_pipeline():
    """Build the seeded miniature KolorsPipeline in memory (CPU, float32)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, KolorsPipeline, UNet2DConditionModel
    from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig

    torch.manual_seed(TINY_SEED)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        cross_attention_dim=32,
        encoder_hid_dim=_TE_HIDDEN,
        encoder_hid_dim_type="text_proj",
        addition_embed_type="text_time",
        addition_time_embed_dim=_TIME_DIM,
        projection_class_embeddings_input_dim=_TE_HIDDEN + 6 * _TIME_DIM,
        use_linear_projection=True,
        norm_num_groups=32,
    )
    torch.manual_seed(TINY_SEED + 2)
    # Four blocks -> downsampling factor 8, as in the real SDXL VAE.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.13025,
        force_upcast=True,
    )
    config = ChatGLMConfig(
        num_layers=2,
        padded_vocab_size=65024,
        hidden_size=_TE_HIDDEN,
        ffn_hidden_size=64,
        kv_channels=8,
        num_attention_heads=4,
        seq_length=256,
        multi_query_attention=True,
        multi_query_group_num=2,
        original_rope=True,  # the real config.json sets it; ChatGLMConfig's __init__ does not
        torch_dtype="float32",
    )
    text_encoder = ChatGLMModel(config, empty_init=False)
    init_chatglm_weights(text_encoder, torch.Generator().manual_seed(TINY_SEED + 1))
    tokenizer = ChatGLMTokenizer.from_pretrained(str(kolors_tokenizer_dir()))
    scheduler = EulerDiscreteScheduler(**KOLORS_SCHEDULER_CONFIG)  # Kolors' real one
    return KolorsPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=False,
    )


def ensure_tiny(cache_root: Path) -> Path:
    """Return the folder holding the saved tiny model, building it once (atomically) if absent."""
    target = cache_root / "models" / f"tiny-v{TINY_VERSION}"
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        build_tiny_pipeline().save_pretrained(staging, safe_serialization=True)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model_index.json").is_file():  # lost a race only if the other won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
