"""Training code for the project's own models (needs the [train] extra: PyTorch)."""
