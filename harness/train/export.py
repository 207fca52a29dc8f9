"""Moved: this name is kept while code moves to the layer rule in pyproject.toml."""

from harness.lora.export import *  # noqa: F401,F403
from harness.lora.export import DIFFUSERS_FILE, write_all  # noqa: F401
