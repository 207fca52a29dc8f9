"""Versions of the harness and the libraries that shape its outputs (recorded in manifests)."""

from __future__ import annotations

from importlib import metadata

from harness import __version__

LIBRARIES = ("torch", "diffusers", "transformers", "peft", "safetensors", "pillow")


def library_versions() -> dict[str, str]:
    out = {"harness": __version__}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
