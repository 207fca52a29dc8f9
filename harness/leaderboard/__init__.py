"""The leaderboard: a SQLite index of submission bundles, a Gradio app and a static HTML export.

Owns: what one bundle contributes to the board (`entry.py`: manifest, participant scores, the
judges' trusted verdict; `title.py`: the story title), the index (`db.py`: schema, migration,
transactional sync; `build.py` and `stats.py`: a rebuild reads only the bundles whose stats
changed), the ranking rule (`ranking.py`), safe file access inside the submissions root
(`files.py`), the Gradio app (`app.py`) and the static page (`export.py`). Data flows one
way: bundles -> index -> views. The views only read: the app opens the index read-only and
serves files only from inside the submissions root. Must not verify, score or render (that is
`harness verify`'s job; the board shows its verdicts). Nothing here imports torch.
"""
