"""Config models: one strict pydantic model per YAML kind, plus the YAML reader they share."""
