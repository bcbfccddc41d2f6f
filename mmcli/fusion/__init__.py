"""Fusion of modalities: early (feature level), learned heads, late (result lists)."""
