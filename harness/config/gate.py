"""The competition's aesthetic gate: a story is valid when its mean aesthetic score reaches it.

Owns the one number; every default (the scoring config, `harness score --threshold`, the
leaderboard's build and pages, the synthetic boards) imports it from here. Imports nothing.
"""

AESTHETIC_GATE = 6.0
