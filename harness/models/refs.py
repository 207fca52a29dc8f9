"""Moved: this name is kept while code moves to the layer rule in pyproject.toml."""

from harness.config.refs import *  # noqa: F401,F403
