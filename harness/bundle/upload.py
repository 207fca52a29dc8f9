"""Upload a bundle to ModelScope as a model repository, through one small boundary.

Owns: the upload plan (model id, visibility, license, the files and bytes that would be sent),
`--dry-run`, and rerunnable uploads: the repository is created only when it does not exist yet,
and re-uploading the same folder replaces files instead of adding copies. The network is only
reached through a `HubClient`: `ModelScopeHub` wraps `modelscope.hub.api.HubApi`; tests pass their
own object with the same three methods.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.bundle import manifest as mf
from harness.config.naming import parse_model_id
from harness.errors import HarnessError, first_line

TOKEN_ENV = "MODELSCOPE_API_TOKEN"
VISIBILITY = {"private": 1, "internal": 3, "public": 5}  # ModelScope's wire values
IGNORE = [mf.VERDICT, ".*"]  # the judges' verdict and hidden files never leave the machine


class HubClient(Protocol):
    """The three HubApi calls an upload needs (legacy `modelscope.hub.api.HubApi` signatures)."""

    def repo_exists(self, repo_id: str, *, repo_type: str | None = None) -> bool: ...

    def create_model(self, model_id: str, **kwargs: Any) -> str: ...

    def upload_folder(self, *, repo_id: str, folder_path: str, **kwargs: Any) -> Any: ...


class ModelScopeHub:
    """`HubClient` over modelscope's HubApi; token from $MODELSCOPE_API_TOKEN, else a stored login."""

    def __init__(self, token: str | None = None):
        from modelscope.hub.api import HubApi

        self.api = HubApi(token=token or os.environ.get(TOKEN_ENV) or None)

    def repo_exists(self, repo_id: str, *, repo_type: str | None = None) -> bool:
        # re_raise: a network or auth failure must not look like "does not exist"
        return bool(self.api.repo_exists(repo_id, repo_type=repo_type or "model", re_raise=True))

    def create_model(self, model_id: str, **kwargs: Any) -> str:
        return self.api.create_model(model_id, **kwargs)

    def upload_folder(self, *, repo_id: str, folder_path: str, **kwargs: Any) -> Any:
        return self.api.upload_folder(repo_id=repo_id, folder_path=folder_path, **kwargs)


@dataclass
class UploadPlan:
    model_id: str
    folder: Path
    visibility: str
    license: str
    files: list[tuple[str, int]]  # (path in repo, bytes)
    commit_message: str

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def describe(self) -> str:
        lines = [
            f"model repo: {self.model_id} (visibility {self.visibility}, license {self.license}); "
            "created if it does not exist",
            f"upload {len(self.files)} files, {self.total_bytes} bytes, from {self.folder}:",
        ]
        lines += [f"  {path}  ({size} bytes)" for path, size in self.files]
        lines.append(f"commit message: {self.commit_message}")
        return "\n".join(lines)


def plan_upload(bundle: str | Path, *, visibility: str = "public", license: str = "apache-2.0") -> UploadPlan:
    """Check the bundle against its manifest and describe the upload; HarnessError if unfit."""
    bundle = Path(bundle)
    if visibility not in VISIBILITY:
        raise HarnessError(f"--visibility: {visibility!r} is not one of {', '.join(VISIBILITY)}")
    if not bundle.is_dir() or bundle.is_symlink():
        raise HarnessError(f"{bundle}: no such bundle folder")
    manifest, _ = mf.read(bundle)
    parse_model_id(manifest.model_id)
    problems, _, _ = mf.check_files(bundle, manifest)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise HarnessError(
            f"{bundle}: not uploaded, the bundle does not match its manifest: {problems[0]}{more}"
        )
    files = [(mf.MANIFEST, (bundle / mf.MANIFEST).stat().st_size)] + [
        (e.path, e.size) for e in manifest.files
    ]
    return UploadPlan(
        model_id=manifest.model_id,
        folder=bundle,
        visibility=visibility,
        license=license,
        files=sorted(files),
        commit_message=f"harness bundle {manifest.team}/{manifest.name} ({manifest.created})",
    )


@dataclass
class UploadResult:
    plan: UploadPlan
    created: bool  # False when the repository already existed (a rerun)
    dry_run: bool


def upload_bundle(
    plan: UploadPlan, client: HubClient | None = None, *, dry_run: bool = False
) -> UploadResult:
    """Create the repository if needed and upload the folder; with `dry_run` nothing is contacted."""
    if dry_run:
        return UploadResult(plan, created=False, dry_run=True)
    client = client or ModelScopeHub()
    try:
        exists = client.repo_exists(plan.model_id, repo_type="model")
        if not exists:
            client.create_model(plan.model_id, visibility=VISIBILITY[plan.visibility], license=plan.license)
        client.upload_folder(
            repo_id=plan.model_id,
            folder_path=str(plan.folder),
            commit_message=plan.commit_message,
            ignore_patterns=list(IGNORE),
        )
    except HarnessError:
        raise
    except Exception as e:  # network, auth, server refusal: one line; rerunning is safe
        raise HarnessError(
            f"upload of {plan.model_id} failed: {type(e).__name__}: {first_line(e)} (rerun `harness upload`; "
            "the repository is not created twice)"
        ) from None
    return UploadResult(plan, created=not exists, dry_run=False)
