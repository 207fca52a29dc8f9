"""`harness sweep`: search seeds and LoRA strength for the best story the rules allow.

Sits beside the orchestrator (`harness.pipeline`): it renders through `harness.render` and scores
through `harness.score`, and nothing below imports it.

plan.py says what will be rendered (candidates, derived seeds, ids) and checks the options;
run.py renders and scores what is missing (the one orchestration function); store.py owns the
sweep folder and which candidates are finished; scoring.py holds the judges' scorers for the
process; select.py chooses the story (coordinate ascent); outputs.py writes the table, sheets,
swept story and report; app.py is the pick page (`harness sweep serve DIR`); cli.py wires it.
"""
