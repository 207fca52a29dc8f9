"""Submission bundles: write them from a run folder, upload them to ModelScope, verify them.

Owns: the bundle layout (`submissions/<team>/<name>/`), its manifest (every file's size and
sha256), the ModelScope model id, the model card, the upload boundary (`HubClient`) and the
judges' verification of untrusted bundles. Must not render or score by itself: verification
calls the render and score packages through one seam (`harness.bundle.verify.rerun_checks`).
Nothing here imports torch at module level.
"""
