"""harness: train, render, score and bundle Kolors LoRA style stories.

Importing this package is cheap: nothing here imports torch or loads weights.
"""

__version__ = "0.1.0"
