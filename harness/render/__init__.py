"""Rendering: story panels -> PNGs with embedded parameters, contact sheet and manifest.

engine.py denoises; pngmeta.py, contact.py and manifest.py write; run.py orchestrates.
Writers never call back into the engine.
"""
