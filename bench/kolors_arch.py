"""Kolors at full size with random weights, built directly on the target device and dtype.

Owns: building the real Kolors components (their configs are the harness's own,
`harness.models.kolors_arch` and `harness.config.schedulers`: UNet in the SDXL layout,
ChatGLM3-6B, SDXL VAE, the Euler scheduler) without ever holding 6B float32 parameters on the
CPU: modules are constructed under `torch.device(device)` with the default dtype set to the target dtype, so
every tensor is born where and how it will be used. `device="meta"` builds the architecture
with no memory at all (used to count parameters on machines without a GPU).

The tiny model is the harness's own (`harness.models.tiny.build_tiny_pipeline`), assembled from
the same classes, so the benchmark runs one code path at both sizes.
"""

from __future__ import annotations

import contextlib

from harness.config.schedulers import KOLORS_SCHEDULER_CONFIG
from harness.models.kolors_arch import KOLORS_CHATGLM, KOLORS_UNET, KOLORS_VAE
from harness.models.tiny import init_chatglm_weights

# The real Kolors component configs: the harness's one copy (the tiny model overrides them).
UNET_CONFIG, VAE_CONFIG, CHATGLM_CONFIG = KOLORS_UNET, KOLORS_VAE, KOLORS_CHATGLM

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
