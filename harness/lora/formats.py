"""Convert a LoRA between the namings the tools read, through one canonical form.

Canonical form: PEFT names without prefix, `<diffusers module>.lora_A.weight`, `.lora_B.weight`
and for DoRA `.lora_magnitude_vector`, plus a `LoraMeta` (rank, alpha, targets, DoRA).

- diffusers: what KolorsPipeline.save_lora_weights writes (diffusers' own training scripts:
  get_peft_model_state_dict + convert_state_dict_to_diffusers, keys prefixed `unet.`), with the
  adapter config in the safetensors metadata so load_lora_weights restores alpha.
- kohya/ComfyUI: `lora_unet_<module with _>.lora_down.weight`, `.lora_up.weight`, `.alpha`.
- DiffSynth (the baseline notebook): its Kolors UNet's names, `blocks.N.transformer_blocks.M.
  attn1.to_q.lora_A.default.weight`; the mapping is computed by DiffSynth's own
  SDXLUNetStateDictConverter, not a hand-written table. DiffSynth files carry no alpha.

`diffusers_modules` maps module names of any naming to diffusers module paths (what a shape
check against the base UNet needs). Unknown key names are never ignored: a conversion that does
not recognise every key raises HarnessError saying how many were recognised.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

from harness.errors import HarnessError

PEFT_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector")
META_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
HARNESS_META_KEY = "harness_lora"


def _jsonable(v):
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    return str(v)


@dataclass(frozen=True)
class LoraMeta:
    rank: int
    alpha: float
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    use_dora: bool = False

    def peft_config(self) -> dict:
        """The full peft LoraConfig dict diffusers stores beside the weights (sets sorted, JSON-safe)."""
        from peft import LoraConfig

        cfg = LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            target_modules=sorted(self.target_modules),
            init_lora_weights="gaussian",
            use_dora=self.use_dora,
        ).to_dict()
        return json.loads(json.dumps(cfg, sort_keys=True, default=_jsonable))

    def harness_metadata(self) -> str:
        return json.dumps(
            {
                "rank": self.rank,
                "alpha": self.alpha,
                "target_modules": sorted(self.target_modules),
                "use_dora": self.use_dora,
            },
            sort_keys=True,
        )


@dataclass
class Conversion:
    state_dict: dict
    recognised: int
    unknown: list[str] = field(default_factory=list)


def _fail_unknown(unknown: list[str], total: int, what: str) -> None:
    if unknown:
        shown = ", ".join(unknown[:3])
        raise HarnessError(
            f"{what}: recognised {total - len(unknown)} of {total} keys; unknown names such as {shown}"
        )


def split_key(key: str) -> tuple[str, str] | None:
    """'m.lora_A.weight' -> ('m', '.lora_A.weight'); None for a non-PEFT key."""
    for suffix in PEFT_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], suffix
    return None


def modules_of(peft_sd: dict) -> list[str]:
    """The module paths a canonical state dict adapts, sorted."""
    return sorted({split_key(k)[0] for k in peft_sd if split_key(k)})


# --- diffusers ------------------------------------------------------------------------------


def to_diffusers(peft_sd: dict, meta: LoraMeta) -> tuple[dict, dict]:
    """(state dict, adapter metadata) for KolorsPipeline.save_lora_weights."""
    from diffusers.utils import convert_state_dict_to_diffusers

    return convert_state_dict_to_diffusers(dict(peft_sd)), meta.peft_config()


def from_diffusers(sd: dict, what: str = "LoRA") -> dict:
    """Canonical form of a diffusers- or PEFT-naming UNet LoRA (prefix `unet.` optional)."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    stripped = {(k[len("unet.") :] if k.startswith("unet.") else k): v for k, v in sd.items()}
    peft = convert_unet_state_dict_to_peft(stripped)
    unknown = [k for k in peft if split_key(k) is None]
    _fail_unknown(unknown, len(sd), what)
    return peft


def meta_from_safetensors(metadata: dict[str, str]) -> dict:
    """The adapter config stored by diffusers or by this harness, or {} when none is stored."""
    from harness.safeio import loads_json

    for key in (META_KEY, HARNESS_META_KEY):
        if key in metadata:
            try:  # untrusted text: depth checked before parsing, so no RecursionError
                value = loads_json(metadata[key], source=key, max_depth=8)
            except HarnessError:
                continue
            if isinstance(value, dict):
                return {k.removeprefix("unet."): v for k, v in value.items()}
    return {}


# --- kohya / ComfyUI ------------------------------------------------------------------------


def kohya_name(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


def to_kohya(peft_sd: dict, meta: LoraMeta) -> dict:
    """kohya-ss / ComfyUI naming with a per-module alpha tensor."""
    import torch

    out = {}
    for key, value in peft_sd.items():
        module, suffix = split_key(key)
        base = kohya_name(module)
        if suffix == ".lora_A.weight":
            out[f"{base}.lora_down.weight"] = value
            out[f"{base}.alpha"] = torch.tensor(float(meta.alpha), dtype=torch.float32)
        elif suffix == ".lora_B.weight":
            out[f"{base}.lora_up.weight"] = value
        else:
            out[f"{base}.dora_scale"] = value
    return out


def kohya_table(known_modules: Iterable[str]) -> dict[str, str]:
    """kohya module name -> diffusers module path; '_' is ambiguous, so only `known_modules` count."""
    return {kohya_name(m): m for m in known_modules}


def from_kohya(sd: dict, known_modules: Iterable[str], what: str = "LoRA") -> tuple[dict, float | None]:
    """Canonical form and alpha of a kohya-naming file, matched against `known_modules`."""
    table = kohya_table(known_modules)
    out, alphas, unknown = {}, set(), []
    for key, value in sd.items():
        base, _, rest = key.partition(".")
        module = table.get(base)
        suffix = {
            "lora_down.weight": ".lora_A.weight",
            "lora_up.weight": ".lora_B.weight",
            "dora_scale": ".lora_magnitude_vector",
        }.get(rest)
        if module is None or (suffix is None and rest != "alpha"):
            unknown.append(key)
        elif rest == "alpha":
            alphas.add(float(value))
        else:
            out[module + suffix] = value
    _fail_unknown(unknown, len(sd), what)
    if len(alphas) > 1:
        raise HarnessError(f"{what}: modules use different alphas {sorted(alphas)}; not supported")
    return out, (alphas.pop() if alphas else None)


# --- DiffSynth ------------------------------------------------------------------------------


def diffsynth_module_map(param_names: Iterable[str]) -> dict[str, str]:
    """diffusers module path -> DiffSynth module path, from DiffSynth's own state-dict converter."""
    from diffsynth.models.sdxl_unet import SDXLUNetStateDictConverter

    table = _rename_table(SDXLUNetStateDictConverter(), list(param_names))
    return {k[: -len(".weight")]: v[: -len(".weight")] for k, v in table.items() if k.endswith(".weight")}


def _rename_table(converter, names: list[str]) -> dict[str, str]:
    """Run the converter with a distinct marker per name to learn where each name goes."""
    import torch

    markers = {n: torch.tensor([i]) for i, n in enumerate(names)}
    result = converter.from_diffusers(markers)
    renamed = result[0] if isinstance(result, tuple) else result
    inverse = {int(v.reshape(-1)[0]): k for k, v in renamed.items()}
    return {names[i]: new for i, new in inverse.items()}


@lru_cache(maxsize=1)
def kolors_diffsynth_map() -> dict[str, str]:
    """The mapping for the full-size Kolors UNet (built on the meta device once per process)."""
    from harness.lora.kolors_layout import kolors_param_names

    return diffsynth_module_map(kolors_param_names())


_DS_SUFFIX = {
    ".lora_A.weight": ".lora_A.default.weight",
    ".lora_B.weight": ".lora_B.default.weight",
    ".lora_magnitude_vector": ".lora_magnitude_vector.default.weight",
}


def to_diffsynth(peft_sd: dict, module_map: dict[str, str] | None = None) -> dict:
    """DiffSynth-naming state dict (what the baseline notebook's peft-injected UNet expects)."""
    module_map = module_map if module_map is not None else kolors_diffsynth_map()
    out, unknown = {}, []
    for key, value in peft_sd.items():
        module, suffix = split_key(key)
        if module not in module_map:
            unknown.append(key)
            continue
        out[module_map[module] + _DS_SUFFIX[suffix]] = value
    _fail_unknown(unknown, len(peft_sd), "DiffSynth export")
    return out


def from_diffsynth(sd: dict, module_map: dict[str, str] | None = None, what: str = "LoRA") -> dict:
    """Canonical (diffusers module) form of a DiffSynth-naming LoRA."""
    module_map = module_map if module_map is not None else kolors_diffsynth_map()
    inverse = {v: k for k, v in module_map.items()}
    back = {v: k for k, v in _DS_SUFFIX.items()}
    out, unknown = {}, []
    for key, value in sd.items():
        for ds_suffix, suffix in back.items():
            if key.endswith(ds_suffix) and key[: -len(ds_suffix)] in inverse:
                out[inverse[key[: -len(ds_suffix)]] + suffix] = value
                break
        else:
            unknown.append(key)
    _fail_unknown(unknown, len(sd), what)
    return out


# --- module names in any naming -------------------------------------------------------------


def diffusers_modules(
    fmt: str, modules: Iterable[str], known_modules: Iterable[str]
) -> dict[str, str | None]:
    """{module as named in a `fmt` file: its diffusers module path, or None when it names none}.

    kohya names are matched against `known_modules` (the base UNet's Linear layers); DiffSynth
    names go back through DiffSynth's own converter for the one Kolors UNet it hard-codes.
    """
    if fmt == "diffusers":
        return {m: m.removeprefix("unet.") for m in modules}
    if fmt == "kohya":
        table = kohya_table(known_modules)
    elif fmt == "diffsynth":
        table = {v: k for k, v in kolors_diffsynth_map().items()}
    else:
        raise ValueError(f"unknown LoRA naming {fmt!r}")
    return {m: table.get(m) for m in modules}


# --- detection ------------------------------------------------------------------------------

_DS_KEY = re.compile(r"^blocks\.\d+\..*\.lora_[AB]\.default\.weight$")


def detect_format(sd: dict) -> str:
    """'diffsynth', 'kohya', 'diffusers' (lora.down/up or PEFT lora_A/B) or 'unknown'."""
    keys = list(sd)
    if all(k.startswith("lora_unet_") for k in keys):
        return "kohya"
    if any(_DS_KEY.match(k) for k in keys):
        return "diffsynth"
    if any(".lora.down.weight" in k or ".lora_A.weight" in k or ".lora_A." in k for k in keys):
        return "diffusers"
    return "unknown"


def rank_of(peft_sd: dict) -> int:
    ranks = {int(v.shape[0]) for k, v in peft_sd.items() if k.endswith(".lora_A.weight")}
    if len(ranks) != 1:
        raise HarnessError(
            f"LoRA has {'no' if not ranks else 'mixed'} ranks {sorted(ranks)}; expected one rank"
        )
    return ranks.pop()
