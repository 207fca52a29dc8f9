"""The built-in miniature Kolors: the real diffusers classes at toy size, seeded, saved to disk.

Owns: the tiny architecture, as a few sizes overridden in the real Kolors configs
(`harness.models.kolors_arch`), and its deterministic initialisation. The result is written with
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
from harness.models.kolors_arch import KOLORS_CHATGLM, KOLORS_UNET, KOLORS_VAE, with_overrides

# Bump when the architecture or initialisation changes: it names the cache folder.
TINY_VERSION = "1"
TINY_SEED = 20240808

# Sizes: text hidden 32 (Kolors 4096), cross-attention 32 (2048), time embed 8 (256).
_TE_HIDDEN = 32
_TIME_DIM = 8

# The tiny model is Kolors with these sizes; everything else is the real config's.
TINY_UNET = with_overrides(
    KOLORS_UNET,
    dict(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        cross_attention_dim=32,
        encoder_hid_dim=_TE_HIDDEN,
        addition_time_embed_dim=_TIME_DIM,
        projection_class_embeddings_input_dim=_TE_HIDDEN + 6 * _TIME_DIM,
    ),
)
# Four blocks -> downsampling factor 8, as in the real SDXL VAE.
TINY_VAE = with_overrides(
    KOLORS_VAE,
    dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=64),
)
TINY_CHATGLM = with_overrides(
    KOLORS_CHATGLM,
    dict(
        num_layers=2,
        hidden_size=_TE_HIDDEN,
        ffn_hidden_size=64,
        kv_channels=8,
        num_attention_heads=4,
        seq_length=256,
        add_qkv_bias=False,  # the tiny model has been built without q/k/v biases since v1
    ),
)


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
    unet = UNet2DConditionModel(**TINY_UNET)
    torch.manual_seed(TINY_SEED + 2)
    vae = AutoencoderKL(**TINY_VAE)
    config = ChatGLMConfig(**TINY_CHATGLM, torch_dtype="float32")
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
