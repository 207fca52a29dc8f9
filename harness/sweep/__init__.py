"""`harness sweep`: search seeds and LoRA strength for the best story the rules allow.

Sits beside the orchestrator (`harness.pipeline`): it renders through `harness.render` and scores
through `harness.score`, and nothing below imports it.
"""
