"""Decoding media into model-ready objects, shared by every command."""
