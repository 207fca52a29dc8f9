"""Where the harness keeps state: one cache folder that an environment variable can move."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "HARNESS_CACHE"


def cache_dir() -> Path:
    """The cache root: $HARNESS_CACHE, else ~/.cache/harness. Created on first use by callers."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "harness"
