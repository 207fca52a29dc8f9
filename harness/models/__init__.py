"""Model references, the registry of weights, and loading Kolors (real or tiny).

Nothing in this package loads weights at import time.
"""
