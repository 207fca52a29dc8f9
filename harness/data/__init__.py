"""Training data: read image sources, filter them, and write a prepared folder with a report."""
