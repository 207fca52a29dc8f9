"""Encode every training image and caption once, and keep the results on disk by content.

Owns: the VAE latent cache (key: image sha256, crop, resolution, VAE hash) and the ChatGLM
embedding cache (key: text, text-encoder hash), both safetensors under the harness cache, the
Kolors prompt encoding (hidden_states[-2] and the pooled last token of hidden_states[-1], 256
tokens, as KolorsPipeline.encode_prompt), and releasing both encoders afterwards so the UNet
has the GPU to itself. The VAE can be kept on the CPU for validation images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.device import release
from harness.errors import HarnessError
from harness.safeio import write_atomic
from harness.train.dataset import Example, pixels

MAX_TOKENS = 256
CACHE_VERSION = 1


def _key(**parts) -> str:
    return hashlib.sha256(json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True).encode()).hexdigest()


def _save(path: Path, tensors: dict) -> None:
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, save({k: v.contiguous().cpu() for k, v in tensors.items()}))


def _load(path: Path) -> dict | None:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception:  # absent or torn: recompute
        return None


class EncodedData:
    """Latents per example and embeddings per text, all CPU float32 tensors."""

    def __init__(self):
        self.latents: list = []
        self.texts: dict[str, tuple] = {}
        self.hits = 0
        self.misses = 0


def encode_all(
    folder: Path,
    model_folder: Path,
    examples: list[Example],
    texts: list[str],
    *,
    resolution: int,
    vae_sha256: str,
    te_sha256: str,
    device: str,
    te_dtype,
    vae_dtype,
    cache_root: Path,
    keep_vae: bool,
    progress: bool = True,
):
    """Return (EncodedData, vae or None). Loads each encoder only when something is missing.

    `te_dtype` and `vae_dtype` are the training plan's (`harness.device.plan("train", ...)`);
    they are part of the cache keys, so embeddings made in half precision never stand in for
    float32 ones.
    """
    import torch
    from tqdm.auto import tqdm

    enc = EncodedData()
    lat_paths = [
        cache_root
        / "latents"
        / (
            _key(
                image=ex.item.sha256,
                res=resolution,
                top=ex.top,
                left=ex.left,
                w=ex.scaled_w,
                h=ex.scaled_h,
                vae=vae_sha256,
                mode="mean",
                dtype=str(vae_dtype).removeprefix("torch."),
            )
            + ".safetensors"
        )
        for ex in examples
    ]
    text_paths = {
        t: cache_root
        / "text"
        / (
            _key(text=t, te=te_sha256, max_tokens=MAX_TOKENS, dtype=str(te_dtype).removeprefix("torch."))
            + ".safetensors"
        )
        for t in dict.fromkeys(texts)
    }

    vae = None
    missing_lat = [i for i, p in enumerate(lat_paths) if not p.is_file()]
    if missing_lat or keep_vae:
        from diffusers import AutoencoderKL

        vae = (
            AutoencoderKL.from_pretrained(
                str(model_folder), subfolder="vae", torch_dtype=vae_dtype, local_files_only=True
            )
            .to(device)
            .eval()
        )
    with torch.no_grad():
        for i in tqdm(missing_lat, desc="encoding images", disable=not progress or not missing_lat):
            px = pixels(folder, examples[i], resolution).to(device, vae_dtype)
            lat = vae.encode(px).latent_dist.mean * vae.config.scaling_factor
            _save(lat_paths[i], {"latent": lat.float()})
    for p in lat_paths:
        t = _load(p)
        if t is None:
            raise HarnessError(f"latent cache file {p} is unreadable; delete it and run again")
        enc.latents.append(t["latent"])
    enc.misses += len(missing_lat)
    enc.hits += len(lat_paths) - len(missing_lat)

    missing_txt = [t for t, p in text_paths.items() if not p.is_file()]
    if missing_txt:
        _encode_texts(model_folder, missing_txt, text_paths, device, te_dtype, progress)
    for t, p in text_paths.items():
        d = _load(p)
        if d is None:
            raise HarnessError(f"text cache file {p} is unreadable; delete it and run again")
        enc.texts[t] = (d["embeds"], d["pooled"])
    enc.misses += len(missing_txt)
    enc.hits += len(text_paths) - len(missing_txt)

    if vae is not None and not keep_vae:
        del vae
        vae = None
    elif vae is not None:
        vae.to("cpu")
    release()  # before the UNet is loaded
    return enc, vae


def _encode_texts(
    model_folder: Path, texts: list[str], paths: dict, device: str, dtype, progress: bool
) -> None:
    import torch
    from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer
    from tqdm.auto import tqdm

    tok = ChatGLMTokenizer.from_pretrained(str(model_folder / "tokenizer"))
    for t in texts:
        n = len(tok(t)["input_ids"])
        if n > MAX_TOKENS:
            raise HarnessError(f"caption has {n} tokens, Kolors reads at most {MAX_TOKENS}: {t[:60]!r}")
    te = ChatGLMModel.from_pretrained(str(model_folder / "text_encoder"), torch_dtype=dtype).to(device).eval()
    with torch.no_grad():
        for t in tqdm(texts, desc="encoding captions", disable=not progress):
            inputs = tok(
                [t], padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
            ).to(device)
            out = te(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                position_ids=inputs["position_ids"],
                output_hidden_states=True,
            )
            embeds = out.hidden_states[-2].permute(1, 0, 2).float()
            pooled = out.hidden_states[-1][-1, :, :].float()
            _save(paths[t], {"embeds": embeds, "pooled": pooled})
    del te
    release()  # before the UNet is loaded
