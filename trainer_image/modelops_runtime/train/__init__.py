"""Training: the per-worker loop, its Ray Train launch, search, warm start and checkpoints."""
