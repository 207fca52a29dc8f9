"""Moved: this name is kept while code moves to the layer rule in pyproject.toml."""

from harness.models.tiny_scorers import *  # noqa: F401,F403
