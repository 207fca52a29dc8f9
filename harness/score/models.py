"""Load scoring models once and run them in batches: the aesthetic predictor and open_clip.

Owns: loading a resolved scoring model onto the scoring device in the scoring dtypes (both from
`harness.device.plan("score", ...)`: float32, so scores do not depend on a GPU's half-precision
support), embedding images and texts in batches, and a cache so a model shared by two scores (or
by consistency and the reproducibility check) loads once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.errors import HarnessError, first_line
from harness.models.scoring_registry import ResolvedScoringModel, ScoringKind, lookup, resolve_scoring_model


def scoring_plan(requested: str = "auto"):
    """The scoring role's device and dtypes under the harness's one device policy."""
    from harness import device as dev

    return dev.plan("score", requested)


def scoring_device(requested: str) -> str:
    """cpu or cuda for a --device request (see `scoring_plan`)."""
    return scoring_plan(requested).device


def _to_scoring(model, device: str):
    """The model in eval mode on `device`, in the scoring role's weight dtype."""
    plan = scoring_plan(device)
    return model.eval().to(device=plan.device, dtype=plan.torch_dtype(plan.weights))


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class AestheticModel:
    """AestheticsPredictorV2Linear with its CLIP image processor (the competition's scorer)."""

    resolved: ResolvedScoringModel
    model: Any
    processor: Any
    device: str

    def scores(self, images: list, batch_size: int) -> list[float]:
        """logits[i][0] per image, as the competition's get_aesthetic_score returns it."""
        import torch

        out: list[float] = []
        with torch.no_grad():
            for batch in _chunks(images, batch_size):
                inputs = self.processor(images=batch, return_tensors="pt")
                logits = self.model(pixel_values=inputs["pixel_values"].to(self.device)).logits
                out.extend(float(v) for v in logits[:, 0].float().cpu().tolist())
        return out


def load_aesthetic(resolved: ResolvedScoringModel, device: str) -> AestheticModel:
    from aesthetics_predictor import AestheticsPredictorV2Linear
    from transformers import CLIPImageProcessor

    try:
        model = AestheticsPredictorV2Linear.from_pretrained(str(resolved.folder), local_files_only=True)
        # The competition calls CLIPProcessor; its image half is this CLIPImageProcessor.
        processor = CLIPImageProcessor.from_pretrained(str(resolved.folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise HarnessError(
            f"aesthetic model {resolved.spec.name} ({resolved.folder}): {first_line(e)}"
        ) from None
    return AestheticModel(resolved, _to_scoring(model, device), processor, device)


@dataclass
class ClipModel:
    """An open_clip model with its eval transform and tokenizer; embeddings are L2-normalised."""

    resolved: ResolvedScoringModel
    model: Any
    preprocess: Any
    tokenizer: Any
    device: str

    def embed_images(self, images: list, batch_size: int):
        import torch

        chunks = []
        with torch.no_grad():
            for batch in _chunks(images, batch_size):
                x = torch.stack([self.preprocess(im) for im in batch]).to(self.device)
                chunks.append(torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0)

    def embed_texts(self, texts: list[str], batch_size: int):
        import torch

        chunks = []
        with torch.no_grad():
            for batch in _chunks(texts, batch_size):
                tokens = self.tokenizer(batch).to(self.device)
                chunks.append(
                    torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()
                )
        return torch.cat(chunks) if chunks else torch.empty(0)


_CHECKPOINTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
)


def _open_clip_dir(resolved: ResolvedScoringModel) -> Path:
    """A folder open_clip's `local-dir:` loader accepts, with any HF text tower made local.

    The laion repositories (and their ModelScope mirrors) hold open_clip_config.json and the
    weights. Where the config is missing, or names a Hugging Face text tower by hub id (the
    xlm-roberta models), a prepared folder in the cache gets a config pointing at local files
    and a link to the untouched weights, so nothing is fetched from the Hugging Face hub.
    """
    from harness.hashing import sha256_bytes
    from harness.paths import cache_dir

    folder = resolved.folder
    spec = resolved.spec
    config_file = folder / "open_clip_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
    elif spec.arch:
        import open_clip

        cfg = open_clip.get_model_config(spec.arch)
        if cfg is None:
            raise HarnessError(f"scoring model {spec.name}: open_clip has no architecture {spec.arch!r}")
        config = {"model_cfg": cfg, "preprocess_cfg": {}}
    else:
        raise HarnessError(f"scoring model {spec.name}: {folder} has no open_clip_config.json")
    text_cfg = config.get("model_cfg", {}).get("text_cfg", {})
    hf_name = text_cfg.get("hf_model_name")
    # only an absolute folder counts as local: a relative name is a hub id, whatever the cwd holds
    needs_tower = bool(hf_name) and not (Path(hf_name).is_absolute() and Path(hf_name).is_dir())
    if config_file.is_file() and not needs_tower:
        return folder
    if needs_tower:
        if resolved.text_tower is None:
            raise HarnessError(
                f"scoring model {spec.name}: its text tower {hf_name!r} comes from the Hugging Face "
                "hub; register a local or ModelScope text_tower for it"
            )
        text_cfg["hf_model_name"] = str(resolved.text_tower)
        text_cfg["hf_tokenizer_name"] = str(resolved.text_tower)
    weights = next((folder / n for n in _CHECKPOINTS if (folder / n).is_file()), None)
    if weights is None:
        raise HarnessError(
            f"scoring model {spec.name}: no open_clip weights in {folder} (expected one of {_CHECKPOINTS})"
        )
    key = (
        resolved.sha256
        if resolved.text_tower_sha256 is None
        else sha256_bytes(f"{resolved.sha256}\0{resolved.text_tower_sha256}".encode())
    )
    prepared = cache_dir() / "scoring" / key[:16]  # one per (weights, text tower) pair
    prepared.mkdir(parents=True, exist_ok=True)
    (prepared / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    link = prepared / weights.name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(weights.resolve())
    return prepared


def _clip_tokenizer(local: Path):
    """open_clip's tokenizer for `local`, reading a local HF tokenizer from where the config says.

    open_clip's `local-dir:` tokenizer always reads HF tokenizer files from `local` itself; a
    prepared folder holds only the config and the weights, the tokenizer is in the text tower.
    """
    import open_clip
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer

    config = json.loads((local / "open_clip_config.json").read_text(encoding="utf-8"))
    text_cfg = config.get("model_cfg", {}).get("text_cfg", {})
    source = text_cfg.get("hf_tokenizer_name")
    if source and Path(source).is_absolute() and Path(source).is_dir():
        return HFTokenizer(
            source,
            context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **text_cfg.get("tokenizer_kwargs", {}),
        )
    return open_clip.get_tokenizer(f"local-dir:{local}")


def load_clip(resolved: ResolvedScoringModel, device: str) -> ClipModel:
    import open_clip

    local = _open_clip_dir(resolved)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{local}", device=device)
        tokenizer = _clip_tokenizer(local)
    except (OSError, ValueError, RuntimeError) as e:
        raise HarnessError(
            f"open_clip model {resolved.spec.name} ({resolved.folder}): {first_line(e)}"
        ) from None
    return ClipModel(resolved, _to_scoring(model, device), preprocess, tokenizer, device)


class ModelCache:
    """Loaded scoring models by (kind, reference): each one loads once, however many runs use it.

    `park` moves them all to host memory (Kolors re-renders while they wait); `get` brings one
    back to the scoring device.
    """

    def __init__(self, device: str = "auto", pins: Mapping[str, str] | None = None):
        self.requested = device
        self.pins = dict(pins or {})  # name or reference -> sha256 its folder must have
        self._device: str | None = None
        self._loaded: dict[tuple[str, str], Any] = {}
        self._parked: set[tuple[str, str]] = set()

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = scoring_device(self.requested)
        return self._device

    def get(self, kind: ScoringKind, name: str):
        key = (kind, name)
        if key not in self._loaded:
            resolved = resolve_scoring_model(lookup(name, kind), self.pins)
            loader = load_aesthetic if kind == "aesthetic" else load_clip
            self._loaded[key] = loader(resolved, self.device)
        if key in self._parked:
            self._loaded[key].model.to(self.device)
            self._parked.discard(key)
        return self._loaded[key]

    def park(self) -> None:
        """Move every loaded model off the accelerator; on the CPU nothing moves."""
        if not self._loaded or self.device == "cpu":
            return
        from harness.device import release

        for key, loaded in self._loaded.items():
            loaded.model.to("cpu")
            self._parked.add(key)
        release(collect=False)


# A judges' batch (`verify --all`) scores bundle after bundle with the same models: one cache per
# process, for one device request and one set of pins (other pins start a new one).
_shared: list[tuple[tuple, ModelCache]] = []


def shared_cache(device: str = "auto", pins: Mapping[str, str] | None = None) -> ModelCache:
    """The process's ModelCache for this device request and these pins."""
    key = (device, tuple(sorted((pins or {}).items())))
    if not _shared or _shared[0][0] != key:
        release_scoring_models()
        _shared.append((key, ModelCache(device, pins)))
    return _shared[0][1]


def release_scoring_models() -> None:
    """Drop the shared cache and give its memory back."""
    from harness.device import release

    if _shared:
        _shared.clear()
        release()
