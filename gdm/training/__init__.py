"""Pieces of training: seeds, σ laws, the noise-prediction loss, EMA, atomic checkpoints, metric records."""
