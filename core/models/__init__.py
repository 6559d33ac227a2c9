"""Backbones and what they read: the registry and model factory, the preprocessing each one carries,
batched feature extraction with its cache, and the quick classifier fitted on those features (probe)."""
