"""Fusion of modalities: early (feature level), learned heads, late (result lists).

The method names live here, free of numpy and torch, so the CLI can offer them without loading either.
"""

EARLY_METHODS = ("concat", "mean", "weighted", "max")
HEAD_METHODS = ("attention", "gated", "mlp")
LATE_METHODS = ("rrf", "weighted", "max", "borda")
