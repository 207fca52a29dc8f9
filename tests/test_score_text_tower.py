"""open_clip scoring models with a Hugging Face text tower (xlm-roberta), made local by the harness.

The real multilingual models (xlm-roberta-base-ViT-B-32 laion5b_s13b_b90k) ship an
open_clip_config.json whose text_cfg names the text tower by hub id ("xlm-roberta-base"). The
harness rewrites it to a local folder given by the registry entry's `text_tower`. Here that path
runs on tiny real components built in-process under a fixed seed: a tiny XLMRobertaConfig tower
with a real XLMRobertaTokenizerFast (a Unigram model trained offline on Chinese and English), and
a tiny open_clip CustomTextCLIP saved in the laion layout with the hub id in its config. The
network is cut off while loading: any attempt to reach the hub is recorded and fails the test.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from harness.config.registry import ModelSpec
from harness.errors import HarnessError
from harness.models import scoring_registry
from harness.models.scoring_registry import resolve_scoring_model
from harness.render.pngmeta import save_png
from tests.score_fixtures import noise_image, tiny_config

SEED = 20240917
HUB_ID = "xlm-roberta-base"
CONTEXT_LENGTH = 32
# XLM-R's special tokens and ids: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask> last.
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
UNK_ID = 3
CORPUS = [
    "卡通，一个可爱的灰色小猫咪在草地上玩耍",
    "一只小狗在海边奔跑，天空很蓝",
    "夕阳下的城市街道，温暖的灯光",
    "小猫咪和小狗在花园里做朋友",
    "a cute grey kitten playing on the grass",
    "a small dog running on the beach under a blue sky",
    "a city street at sunset with warm lights",
    "the kitten and the puppy become friends in the garden",
]
VISION_CFG = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8}
# As in the real config: the text tower and its tokenizer named by hub id.
TEXT_CFG = {
    "hf_model_name": HUB_ID,
    "hf_tokenizer_name": HUB_ID,
    "hf_proj_type": "mlp",
    "hf_pooler_type": "mean_pooler",
    "context_length": CONTEXT_LENGTH,
}
PROMPTS = ["卡通，一个可爱的灰色小猫咪在草地上玩耍", "一只小狗在海边奔跑"]


def _build_tower(folder: Path) -> None:
    """config.json + a real XLMRobertaTokenizerFast + (differently seeded) tower weights."""
    from tokenizers import SentencePieceUnigramTokenizer, processors
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(
        CORPUS * 4, vocab_size=200, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False
    )
    unigram.add_special_tokens(["<mask>"])
    unigram.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_object=unigram._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=CONTEXT_LENGTH,
    )
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIALS] == [0, 1, 2, 3]
    tokenizer.save_pretrained(folder)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=CONTEXT_LENGTH + 2,  # roberta positions start after padding_idx
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(SEED + 100)
    # Weights of the tower itself, as the real tower folder has them; the CLIP checkpoint must win.
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)


def _build_clip(folder: Path, tower: Path) -> dict[str, torch.Tensor]:
    """A tiny CustomTextCLIP in the laion layout; its config names the tower by hub id."""
    from open_clip.model import CustomTextCLIP
    from safetensors.torch import save_file

    model_cfg = {"embed_dim": 32, "vision_cfg": VISION_CFG, "text_cfg": TEXT_CFG}
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {"size": 32}}, indent=2), encoding="utf-8"
    )
    torch.manual_seed(SEED)
    local_text_cfg = {
        **TEXT_CFG,
        "hf_model_name": str(tower),
        "hf_tokenizer_name": str(tower),
        "hf_model_pretrained": False,  # built from the tower's config.json only: no hub
    }
    model = CustomTextCLIP(embed_dim=32, vision_cfg=VISION_CFG, text_cfg=local_text_cfg)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return state


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-tower")
    tower, clip = root / "xlm-roberta-tiny", root / "clip-xlm-roberta-tiny"
    tower.mkdir()
    clip.mkdir()
    _build_tower(tower)
    state = _build_clip(clip, tower)
    return {"tower": tower, "clip": clip, "state": state}


@pytest.fixture
def offline(monkeypatch):
    """Hub offline (env and the flags read at import) and the network cut; returns the attempts."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import huggingface_hub.constants
    import transformers.utils.hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True, raising=False)
    attempts: list[str] = []

    def refuse(kind):
        def _refuse(*args, **kwargs):
            attempts.append(f"{kind}{args[1:2] or args[:1]}")
            raise OSError(f"network disabled in this test ({kind})")

        return _refuse

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def _spec(built, text_tower: bool = True, name: str = "tiny-xlmr-clip") -> ModelSpec:
    return ModelSpec(
        name=name,
        kind="open_clip",
        ref=f"local:{built['clip']}",
        text_tower=f"local:{built['tower']}" if text_tower else None,
        description="tiny xlm-roberta open_clip model (test)",
    )


def test_config_is_rewritten_to_the_local_tower_and_weights_come_from_the_checkpoint(built, offline):
    """The prepared folder names the local tower; open_clip builds from it and loads the checkpoint."""
    import open_clip

    from harness.score.models import _open_clip_dir

    resolved = resolve_scoring_model(_spec(built))
    assert resolved.text_tower == built["tower"]
    local = _open_clip_dir(resolved)
    assert local != built["clip"]  # the laion folder itself is left untouched
    original = json.loads((built["clip"] / "open_clip_config.json").read_text(encoding="utf-8"))
    assert original["model_cfg"]["text_cfg"]["hf_model_name"] == HUB_ID
    text_cfg = json.loads((local / "open_clip_config.json").read_text(encoding="utf-8"))["model_cfg"][
        "text_cfg"
    ]
    assert text_cfg["hf_model_name"] == text_cfg["hf_tokenizer_name"] == str(built["tower"])
    weights = local / "open_clip_model.safetensors"
    assert weights.is_symlink() and weights.resolve() == (built["clip"] / "open_clip_model.safetensors")

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{local}", device="cpu")
    assert type(model).__name__ == "CustomTextCLIP"
    assert type(model.text.transformer).__name__ == "XLMRobertaModel"
    loaded = model.state_dict()
    assert sorted(loaded) == sorted(built["state"])
    for key, saved in built["state"].items():
        assert torch.equal(loaded[key], saved), key
    assert offline == []


def test_load_clip_uses_the_local_tower_and_tokenizer(built, offline):
    """load_clip end to end: real XLM-R tokenizer from the tower, checkpoint weights, stable embeddings."""
    from transformers import AutoTokenizer

    from harness.score.models import load_clip

    clip = load_clip(resolve_scoring_model(_spec(built)), "cpu")
    assert offline == [], f"tried to reach the network: {offline}"

    # The tokenizer is the local XLM-R one (not open_clip's English BPE, not a hub download).
    assert type(clip.tokenizer.tokenizer).__name__ == "XLMRobertaTokenizerFast"
    reference = AutoTokenizer.from_pretrained(str(built["tower"]), local_files_only=True)
    ids = clip.tokenizer([PROMPTS[0]])
    assert ids.shape == (1, CONTEXT_LENGTH)
    expected = reference(PROMPTS[0], padding="max_length", truncation=True, max_length=CONTEXT_LENGTH)
    assert ids[0].tolist() == expected["input_ids"]
    content = [i for i in ids[0].tolist() if i not in (0, 1, 2)]
    assert content and any(i != UNK_ID for i in content)
    assert ids[0, 0] == 0 and 2 in ids[0].tolist()  # <s> ... </s> as XLM-R frames a sentence

    # The weights are the checkpoint's: not random init, not the tower folder's own weights.
    loaded = clip.model.state_dict()
    key = "text.transformer.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(loaded[key], built["state"][key])
    assert torch.equal(loaded["text.proj.0.weight"], built["state"]["text.proj.0.weight"])
    from safetensors.torch import load_file

    tower_own = load_file(str(built["tower"] / "model.safetensors"))
    tower_key = next(k for k in tower_own if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert not torch.equal(loaded[key], tower_own[tower_key])

    texts = clip.embed_texts(PROMPTS, batch_size=2)
    images = clip.embed_images([noise_image(1, 40), noise_image(2, 40)], batch_size=2)
    assert texts.shape == (2, 32) and images.shape == (2, 32)
    assert torch.isfinite(texts).all() and torch.isfinite(images).all()
    assert torch.allclose(texts.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(texts[0], texts[1])
    # The same texts again (same batches): identical embeddings, bit for bit.
    assert torch.equal(clip.embed_texts(PROMPTS, batch_size=2), texts)
    # In another batch composition only float noise may differ (CPU matmul shapes change).
    alone = clip.embed_texts([PROMPTS[0], PROMPTS[0]], batch_size=1)
    assert torch.equal(alone[0], alone[1])
    assert torch.allclose(alone[0], texts[0], atol=1e-6)
    assert offline == []


def test_hub_text_tower_without_a_local_one_is_refused(built, offline):
    from harness.score.models import load_clip

    resolved = resolve_scoring_model(_spec(built, text_tower=False))
    assert resolved.text_tower is None
    with pytest.raises(HarnessError) as info:
        load_clip(resolved, "cpu")
    message = str(info.value)
    assert f"text tower {HUB_ID!r} comes from the Hugging Face hub" in message
    assert "text_tower" in message
    assert offline == []  # refused before anything tried the network


def _prompted_panels(folder: Path) -> Path:
    folder.mkdir()
    for i, prompt in enumerate(PROMPTS):
        save_png(noise_image(10 + i, 40), folder / f"{i + 1:02d}.png", {"prompt": prompt, "panel": i + 1})
    return folder


def test_alignment_scores_chinese_prompts_with_the_text_tower_model(built, offline, monkeypatch, tmp_path):
    """The alignment metric end to end through score_run and the ModelCache.

    A scoring config names models by string; an ad-hoc `local:` reference there cannot carry a
    text tower, so the spec goes into the registry for this test only (monkeypatch restores it).
    """
    from harness.score.api import score_run

    panels = _prompted_panels(tmp_path / "panels")
    name = "tiny-xlmr-clip-test"
    monkeypatch.setitem(scoring_registry.SCORING_MODELS, name, _spec(built, name=name))
    config = tiny_config(scorers=["alignment"], alignment_model=name, device="cpu", min_panels=2)
    run = score_run(panels, config=config)
    assert run.prompts == PROMPTS
    metric = run.metrics["alignment"]
    values = [p["clip_t"] for p in metric.per_panel]
    assert all(isinstance(v, float) and -1.0 <= v <= 1.0 for v in values)
    assert metric.summary["clip_t_mean"] == pytest.approx(sum(values) / len(values))
    assert metric.models[0]["name"] == name and metric.models[0]["ref"] == f"local:{built['clip']}"
    # the text tower changes the scores too, so the scores name it and its content hash
    from harness.hashing import sha256_tree

    assert metric.models[0]["text_tower"] == f"local:{built['tower']}"
    assert metric.models[0]["text_tower_sha256"] == sha256_tree(Path(built["tower"]))
    again = score_run(panels, config=config)
    assert [p["clip_t"] for p in again.metrics["alignment"].per_panel] == values
    assert offline == []

    # The same folder as an ad-hoc reference in the config has no text tower: refused, clearly.
    with pytest.raises(HarnessError, match="comes from the Hugging Face hub"):
        score_run(panels, config=tiny_config(scorers=["alignment"], alignment_model=f"local:{built['clip']}"))
