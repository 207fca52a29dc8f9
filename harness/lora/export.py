"""Write the trained adapter in every naming the tools read, from one state dict.

Owns: pytorch_lora_weights.safetensors (diffusers, via KolorsPipeline.save_lora_weights with the
adapter config as metadata), lora_kohya.safetensors and lora_diffsynth.safetensors (the latter
only for the full Kolors layout). Files are written beside their final names and renamed in.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.lora import formats
from harness.lora.sfwrite import save_sorted

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "lora_kohya.safetensors"
DIFFSYNTH_FILE = "lora_diffsynth.safetensors"


def _atomic_save(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    save_sorted(tensors, path, metadata)


def write_diffusers(peft_sd: dict, meta: formats.LoraMeta, out: Path) -> Path:
    """The file KolorsPipeline.load_lora_weights reads, alpha restored from its metadata.

    Same keys and metadata as KolorsPipeline.save_lora_weights writes, in a sorted byte layout.
    """
    sd, adapter_meta = formats.to_diffusers(peft_sd, meta)
    metadata = {
        "format": "pt",
        # diffusers prefixes every adapter-config key with the component name.
        formats.META_KEY: json.dumps(
            {f"unet.{k}": v for k, v in adapter_meta.items()}, indent=2, sort_keys=True
        ),
    }
    save_sorted({f"unet.{k}": v for k, v in sd.items()}, out / DIFFUSERS_FILE, metadata)
    return out / DIFFUSERS_FILE


def write_all(peft_sd: dict, meta: formats.LoraMeta, out: Path, unet_config, unet_param_names) -> dict:
    """Write every format; returns {format: file name or a reason it was skipped}."""
    from harness.lora.kolors_layout import is_kolors_layout

    peft_sd = {k: v.detach().cpu().float() for k, v in peft_sd.items()}
    files = {"diffusers": write_diffusers(peft_sd, meta, out).name}
    kmeta = {
        "ss_network_dim": str(meta.rank),
        "ss_network_alpha": str(meta.alpha),
        formats.HARNESS_META_KEY: meta.harness_metadata(),
    }
    _atomic_save(formats.to_kohya(peft_sd, meta), out / KOHYA_FILE, kmeta)
    files["kohya"] = KOHYA_FILE
    if is_kolors_layout(unet_config):
        module_map = formats.diffsynth_module_map(unet_param_names)
        _atomic_save(
            formats.to_diffsynth(peft_sd, module_map),
            out / DIFFSYNTH_FILE,
            {formats.HARNESS_META_KEY: meta.harness_metadata()},
        )
        files["diffsynth"] = DIFFSYNTH_FILE
    else:
        files["diffsynth"] = (
            "skipped: the base UNet does not have the full Kolors layout DiffSynth hard-codes"
        )
    return files
