"""The bundle stage's public functions, for the CLI and for `harness run`'s last step."""

from harness.bundle.batch import summary_table, verify_all, write_verdict
from harness.bundle.upload import HubClient, ModelScopeHub, UploadPlan, plan_upload, upload_bundle
from harness.bundle.verify import Verdict, verify_bundle
from harness.bundle.writer import BundleResult, write_bundle
from harness.config.naming import ModelId, model_id, parse_model_id

__all__ = [
    "BundleResult",
    "HubClient",
    "ModelId",
    "ModelScopeHub",
    "UploadPlan",
    "Verdict",
    "model_id",
    "parse_model_id",
    "plan_upload",
    "summary_table",
    "upload_bundle",
    "verify_all",
    "verify_bundle",
    "write_bundle",
    "write_verdict",
]
