"""`harness upload`: dry run lists what would be sent; real uploads stop at our HubClient boundary."""

from __future__ import annotations

import pytest

from harness.bundle import manifest as mf
from harness.bundle.upload import IGNORE, VISIBILITY, plan_upload, upload_bundle
from harness.errors import HarnessError
from tests.bundle_helpers import copy_bundle, run_cli

pytest_plugins = ["tests.bundle_fixtures"]  # demo_run, demo_bundle: rendered once per session


class RecordingHub:
    """Stands in for modelscope's HubApi at our boundary: records calls, keeps a set of repos."""

    def __init__(self, fail_uploads: int = 0):
        self.repos: set[str] = set()
        self.calls: list[tuple] = []
        self.fail_uploads = fail_uploads

    def repo_exists(self, repo_id, *, repo_type=None):
        self.calls.append(("repo_exists", repo_id, repo_type))
        return repo_id in self.repos

    def create_model(self, model_id, **kwargs):
        self.calls.append(("create_model", model_id, kwargs))
        if model_id in self.repos:
            raise RuntimeError("repo already exists")
        self.repos.add(model_id)
        return f"https://modelscope.cn/models/{model_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload_folder", repo_id, folder_path, kwargs))
        if self.fail_uploads:
            self.fail_uploads -= 1
            raise ConnectionError("connection reset by peer")
        return {"ok": True}


def test_dry_run_lists_the_files_and_contacts_nothing(demo_bundle, capsys, monkeypatch):
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    assert run_cli(["upload", str(demo_bundle), "--dry-run", "--visibility", "private"]) == 0
    out = capsys.readouterr().out
    manifest, _ = mf.read(demo_bundle)
    assert f"model repo: {manifest.model_id} (visibility private" in out
    for e in manifest.files:
        assert f"  {e.path}  ({e.size} bytes)" in out
    assert "  manifest.json  (" in out and "verdict.json" not in out


def test_upload_creates_once_and_a_failed_upload_can_be_rerun(demo_bundle):
    plan = plan_upload(demo_bundle, visibility="public")
    hub = RecordingHub(fail_uploads=1)
    with pytest.raises(HarnessError, match="connection reset by peer.*rerun"):
        upload_bundle(plan, hub)
    result = upload_bundle(plan, hub)  # the rerun
    assert result.created is False
    creates = [c for c in hub.calls if c[0] == "create_model"]
    uploads = [c for c in hub.calls if c[0] == "upload_folder"]
    assert len(creates) == 1 and creates[0][2] == {
        "visibility": VISIBILITY["public"],
        "license": "apache-2.0",
    }
    assert len(uploads) == 2
    assert uploads[-1][1] == plan.model_id and uploads[-1][2] == str(demo_bundle)
    assert uploads[-1][3]["ignore_patterns"] == IGNORE


def test_a_tampered_bundle_is_not_uploaded(tmp_path, demo_bundle):
    bundle = copy_bundle(demo_bundle, tmp_path)
    (bundle / "story.yaml").write_text("team: someone-else\n", encoding="utf-8")
    hub = RecordingHub()
    with pytest.raises(HarnessError, match="story.yaml: altered"):
        upload_bundle(plan_upload(bundle), hub)
    assert hub.calls == []


def test_the_modelscope_client_wraps_hubapi_without_network(monkeypatch):
    from harness.bundle.upload import ModelScopeHub

    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "test-token-not-real")
    hub = ModelScopeHub()
    for name in ("repo_exists", "create_model", "upload_folder"):
        assert callable(getattr(hub.api, name))
