"""LoRA training: cached encodings, a resumable deterministic loop, and the files it writes."""
