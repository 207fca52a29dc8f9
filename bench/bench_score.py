"""Scoring section: the harness's scoring models over one story's panels, timed per component.

Owns: building the three models `harness score` uses by default and timing the harness's own
model wrappers (`harness.score.models.AestheticModel.scores`, `ClipModel.embed_images`,
`ClipModel.embed_texts`), in the harness's scoring plan (`harness.device`: float32).
- "full": the real architectures with random weights, built offline: the aesthetic predictor
  (AestheticsPredictorV2Linear over CLIP ViT-L/14 with the default CLIP image processor),
  open_clip ViT-H-14 (`create_model(name, pretrained=None)`) for consistency, and open_clip
  xlm-roberta-base-ViT-B-32 for alignment, its xlm-roberta tower built from a locally written
  config. The xlm-roberta tokenizer files cannot be had offline, so alignment text timing feeds
  fixed random token ids of the real context length: text-tower compute is the same.
- "tiny": the harness's built-in tiny scorers (`harness.models.tiny_scorers`), saved and loaded through
  the same loaders as real ones. Their timings say nothing about full-size cost.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench.bench_util import Settings, log, now, peak_gib, reset_peak
from harness.device import release

# xlm-roberta-base (the alignment model's text tower) as published; written locally so open_clip's
# HFTextEncoder builds it without the hub.
XLMR_BASE = dict(
    vocab_size=250002,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)

# CLIP ViT-L/14 vision tower of the aesthetic predictor (projection 768 feeds the linear head).
VIT_L14 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
)


def panel_images(settings: Settings, state: dict) -> tuple[list, str]:
    """The story section's panels when it ran, else fixed random pictures of the same size."""
    if state.get("images"):
        return list(state["images"]), "the story section's harness panels"
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (settings.size, settings.size, 3), dtype=np.uint8))
        for _ in range(settings.panels)
    ], "random pictures (the story section did not run)"


class _RandomTokens:
    """Stand-in for the xlm-roberta tokenizer (its files need the hub): fixed ids, real length."""

    def __init__(self, vocab: int, context_length: int):
        self.vocab, self.context_length = vocab, context_length

    def __call__(self, texts):
        import torch

        gen = torch.Generator("cpu").manual_seed(len(texts))
        ids = torch.randint(3, self.vocab, (len(texts), self.context_length), generator=gen)
        ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
        return ids


def _resolved(name: str, folder: Path, note: str):
    from harness.config.registry import SCORING_MODELS
    from harness.models.scoring_registry import ResolvedScoringModel

    return ResolvedScoringModel(SCORING_MODELS[name], folder, note)


def _full_models(plan, tmp: Path) -> dict:
    import open_clip
    import torch
    from aesthetics_predictor import AestheticsPredictorV2Linear
    from transformers import CLIPImageProcessor, CLIPVisionConfig, XLMRobertaConfig

    from bench.kolors_arch import born_on
    from harness.score.models import AestheticModel, ClipModel

    device, dtype = plan.device, plan.torch_dtype(plan.weights)
    models: dict = {}
    t0 = now(device)
    torch.manual_seed(0)
    with born_on(device, dtype):
        aesthetic = AestheticsPredictorV2Linear(CLIPVisionConfig(**VIT_L14)).eval()
    models["aesthetic"] = (
        AestheticModel(
            _resolved("aesthetic-v2-linear", tmp, "random-weights"), aesthetic, CLIPImageProcessor(), device
        ),
        round(now(device) - t0, 3),
    )

    t0 = now(device)
    clip, _, preprocess = open_clip.create_model_and_transforms("ViT-H-14", pretrained=None, device=device)
    models["consistency"] = (
        ClipModel(
            _resolved("clip-vit-h-14", tmp, "random-weights"),
            clip.eval(),
            preprocess,
            open_clip.get_tokenizer("ViT-H-14"),
            device,
        ),
        round(now(device) - t0, 3),
    )

    t0 = now(device)
    tower = tmp / "xlm-roberta-base"
    XLMRobertaConfig(**XLMR_BASE).save_pretrained(tower)
    cfg = open_clip.get_model_config("xlm-roberta-base-ViT-B-32")
    cfg["text_cfg"].update(hf_model_name=str(tower), hf_tokenizer_name=str(tower), hf_model_pretrained=False)
    local = tmp / "xlm-roberta-base-ViT-B-32"
    local.mkdir()
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    ml, _, ml_pre = open_clip.create_model_and_transforms(
        f"local-dir:{local}", load_weights=False, pretrained_text=False, device=device
    )
    # open_clip's get_tokenizer pads to text_cfg's context_length, default 77 (not the tower's 514).
    tokens = _RandomTokens(XLMR_BASE["vocab_size"], int(cfg["text_cfg"].get("context_length", 77)))
    models["alignment"] = (
        ClipModel(
            _resolved("xlm-roberta-base-vit-b-32", tmp, "random-weights"), ml.eval(), ml_pre, tokens, device
        ),
        round(now(device) - t0, 3),
    )
    return models


def _tiny_models(plan, tmp: Path) -> dict:
    from harness.models.tiny_scorers import ensure_tiny_scorer
    from harness.score.models import load_aesthetic, load_clip

    device = plan.device
    models: dict = {}
    for key, name, loader in (
        ("aesthetic", "tiny-aesthetic", load_aesthetic),
        ("consistency", "tiny-clip", load_clip),
        ("alignment", "tiny-clip-ml", load_clip),
    ):
        t0 = now(device)
        folder = ensure_tiny_scorer(name, tmp)
        models[key] = (loader(_resolved(name, folder, "tiny (unhashed)"), device), round(now(device) - t0, 3))
    return models


def run_score(settings: Settings, state: dict) -> dict:
    dev = settings.score.device
    mode = settings.scorers if settings.scorers != "auto" else ("tiny" if settings.tiny else "full")
    images, source = panel_images(settings, state)
    if not state.get("prompts"):
        from bench.bench_story import story_jobs

        state["prompts"] = [j.prompt for j in story_jobs(settings)]
    prompts = state["prompts"][: len(images)]
    batch = 8  # harness.config.scoring.ScoringConfig.batch_size default
    components: dict = {}
    with tempfile.TemporaryDirectory(prefix="kolors-bench-score-") as tmp:
        log(f"score: building the {mode} scoring models on {dev} ({settings.score.weights})")
        release()
        reset_peak(dev)
        models = (_full_models if mode == "full" else _tiny_models)(settings.score, Path(tmp))
        work = {
            "aesthetic": ("aesthetic", lambda m: m.scores(images, batch)),
            "consistency_images": ("consistency", lambda m: m.embed_images(images, batch)),
            "alignment_images": ("alignment", lambda m: m.embed_images(images, batch)),
            "alignment_texts": ("alignment", lambda m: m.embed_texts(prompts, batch)),
        }
        for label, (key, fn) in work.items():
            model, build_s = models[key]
            fn(model)  # warm-up: one-time kernel selection is not a per-story cost
            t0 = now(dev)
            fn(model)
            components[label] = {
                "model": model.resolved.spec.name,
                "seconds": round(now(dev) - t0, 4),
                "build_s": build_s,
            }
        peak = peak_gib(dev)
        del models
    release()
    return {
        "models": mode,
        "label": (
            "full-size architectures with random weights (timing only; scores meaningless)"
            if mode == "full"
            else "TINY test scorers: timings do not represent full-size scoring"
        ),
        "images": len(images),
        "image_source": source,
        "image_size": list(images[0].size),
        "batch_size": batch,
        "components": components,
        "total_s": round(sum(c["seconds"] for c in components.values()), 4),
        "peak_vram_gib": peak,
        "alignment_tokens": "random token ids (xlm-roberta tokenizer files unavailable offline)"
        if mode == "full"
        else "open_clip built-in tokenizer",
    }
