"""Shared fixtures: one harness cache per test session, the tiny Kolors built once, story files."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

# Every Ray a test starts (the session cluster, the CLI's private one, `ray start`) binds its
# servers to 127.0.0.1 only: with this set before `import ray`, Ray takes the loopback address
# as the node's (harness.cluster.connection does the same for the judges' private Ray).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

ROOT = Path(__file__).resolve().parents[1]

DEMO_STORY = yaml.safe_load((ROOT / "stories" / "demo.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session", autouse=True)
def harness_cache(tmp_path_factory) -> Path:
    """Every test in the session shares one cache (so the tiny model is built once)."""
    cache = tmp_path_factory.mktemp("harness-cache")
    old = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("HARNESS_CACHE", None)
    else:
        os.environ["HARNESS_CACHE"] = old


@pytest.fixture(autouse=True)
def fresh_pipeline():
    """No test sees a Kolors pipeline or scoring models another test left behind (both are kept)."""
    yield
    from harness.render.pipelines import release_pipeline
    from harness.score.models import release_scoring_models

    release_pipeline()
    release_scoring_models()


@pytest.fixture(scope="session")
def tiny_model_dir(harness_cache) -> Path:
    from harness.models.tiny import ensure_tiny

    return ensure_tiny(harness_cache)


def small_story(**overrides) -> dict:
    """The demo story made cheaper for tests: 64x64, 4 steps. Overrides replace top-level keys."""
    data = copy.deepcopy(DEMO_STORY)
    data["sampling"] = {**data["sampling"], "width": 64, "height": 64, "steps": 4}
    data.update(overrides)
    return data


@pytest.fixture
def write_story(tmp_path):
    """write_story(data_or_text, name='story.yaml') -> path of a story file in tmp_path."""

    def _write(data, name: str = "story.yaml") -> Path:
        path = tmp_path / name
        text = data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return _write
