"""Kolors at full size with random weights, built directly on the target device and dtype.

Owns: the real Kolors component configs (UNet in the SDXL layout, ChatGLM3-6B, SDXL VAE, the
Euler scheduler; values from shared/STACK.md "Real Kolors facts" and the Kolors-diffusers
config files) and building them without ever holding 6B float32 parameters on the CPU: modules
are constructed under `torch.device(device)` with the default dtype set to the target dtype, so
every tensor is born where and how it will be used. `device="meta"` builds the architecture
with no memory at all (used to count parameters on machines without a GPU).

The tiny model is the harness's own (`harness.models.tiny.build_tiny_pipeline`), assembled from
the same classes, so the benchmark runs one code path at both sizes.
"""

from __future__ import annotations

import contextlib

from harness.config.schedulers import KOLORS_SCHEDULER_CONFIG
from harness.models.tiny import init_chatglm_weights

# UNet2DConditionModel config of Kwai-Kolors/Kolors-diffusers (SDXL layout, 4096-wide text).
UNET_CONFIG = dict(
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
VAE_CONFIG = dict(
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
CHATGLM_CONFIG = dict(
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

SCHEDULER_CONFIG = KOLORS_SCHEDULER_CONFIG  # the harness's own copy of the real config

INIT_SEED = 20241107


@contextlib.contextmanager
def born_on(device, dtype):
    """Create tensors on `device` in `dtype` (no float32 CPU copy is ever made)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _seed(device, offset: int) -> None:
    """Fixed random weights; the meta device has none (and the caller's RNG is left alone)."""
    import torch

    if torch.device(device).type != "meta":
        torch.manual_seed(INIT_SEED + offset)


def build_unet(device, dtype):
    from diffusers import UNet2DConditionModel

    _seed(device, 0)
    with born_on(device, dtype):
        return UNet2DConditionModel(**UNET_CONFIG).eval()


def build_vae(device, dtype):
    from diffusers import AutoencoderKL

    _seed(device, 1)
    with born_on(device, dtype):
        return AutoencoderKL(**VAE_CONFIG).eval()


def build_text_encoder(device, dtype):
    from diffusers.pipelines.kolors import ChatGLMModel
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig

    _seed(device, 2)
    name = str(dtype).removeprefix("torch.")
    config = ChatGLMConfig(**CHATGLM_CONFIG, torch_dtype=name)
    with born_on(device, dtype):
        model = ChatGLMModel(config, empty_init=False)
    init_chatglm_weights(model)  # in place on the device, from the seeded global RNG
    return model.eval()


def build_tokenizer():
    from diffusers.pipelines.kolors import ChatGLMTokenizer

    from harness.config.tokens import kolors_tokenizer_dir

    return ChatGLMTokenizer.from_pretrained(str(kolors_tokenizer_dir()))


def build_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**SCHEDULER_CONFIG)


def build_pipeline(device, dtype, *, tiny: bool):
    """A KolorsPipeline: the harness's tiny one, or full size with random weights on `device`."""
    from diffusers import KolorsPipeline

    if tiny:
        from harness.models.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline().to(device, dtype)
    else:
        pipe = KolorsPipeline(
            vae=build_vae(device, dtype),
            text_encoder=build_text_encoder(device, dtype),
            tokenizer=build_tokenizer(),
            unet=build_unet(device, dtype),
            scheduler=build_scheduler(),
            force_zeros_for_empty_prompt=False,
        )
    if str(dtype) == "torch.float16":
        pipe.vae.config.force_upcast = True  # as harness.models.loader does for fp16
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_parts(device, dtypes: dict, *, tiny: bool) -> dict:
    """Only the named components, each in its own dtype ({"unet": torch.bfloat16, ...}), plus the
    tokenizer and scheduler (training builds the UNet apart from the encoders)."""
    if tiny:
        from harness.models.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline()
        out = {p: getattr(pipe, p).to(device=device, dtype=dt) for p, dt in dtypes.items()}
        out["tokenizer"] = pipe.tokenizer
        out["scheduler"] = pipe.scheduler
        return out
    builders = {"unet": build_unet, "vae": build_vae, "text_encoder": build_text_encoder}
    out = {p: builders[p](device, dt) for p, dt in dtypes.items()}
    out["tokenizer"] = build_tokenizer()
    out["scheduler"] = build_scheduler()
    return out


def param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def text_hidden_size(text_encoder) -> int:
    return int(text_encoder.config.hidden_size)
